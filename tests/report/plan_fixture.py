"""A synthetic plan run folder (plan.json, comparison, sweep over an inspect run): the plan page's tests."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from alphaq.planning.plan_file import Plan, PlanTensor, save_plan, tensor_totals
from alphaq.planning.planner import PlanConfig, make_plan, sweep
from alphaq.planning.units import matrix_nbytes
from tests.report.inspect_fixture import write_inspect_run

SECTION_IDS = (
    "summary",
    "bit-width-map",
    "alpha-vs-bits",
    "bit-width-histogram",
    "memory",
    "deployability",
    "budget-sweep",
    "failed-fits-and-notes",
    "per-tensor-plan",
)
BUDGETS = ("2.5", "3", "3.5", "4", "5")
ALLOCATORS = ("alphaq", "uniform", "random", "alpha_ratio")
ENGINES = {"per_expert": ["alphaq runtime"], "layer": ["llama.cpp (GGUF)", "vLLM fused-MoE", "TensorRT-LLM"]}
CHECKPOINT = {"path": "/models/synthetic-moe-3x8", "fingerprint": "0123456789abcdef", "model_type": "mixtral"}


# -- fixture builder: a plan run folder as `alphaq plan` writes it, next to the inspect artifacts ---------


def write_plan_run(
    folder: Path,
    *,
    layers: int = 3,
    experts: int = 8,
    granularity: str = "expert",
    sweep_csv: bool = True,
    comparison: bool = True,
    inspect: bool = True,
) -> Path:
    """Inspect artifacts (synthetic), then a real plan via the planner API (analytic error model, no weights)."""
    from alphaq.audit.artifacts import load_inspect_run

    write_inspect_run(folder, layers=layers, experts=experts, hidden=64, spectra=False)
    details = load_inspect_run(folder).details
    details["var"] = 4e-4 * (1.0 + 0.2 * details["layer"].fillna(0).astype(float))
    config = PlanConfig(budget="3.5", error_model="analytic", keep="attention=8", granularity=granularity)
    provenance = {
        "checkpoint": CHECKPOINT,
        "diagnostics": {"fit": "ww", "inspect_fingerprint": "feedface"},
        "created": "2025-02-03T04:05:06+00:00",
    }
    plan = make_plan(details, None, config, provenance=provenance)
    save_plan(plan, folder / "plan.json")
    if sweep_csv:
        sweep(details, None, config, BUDGETS, ALLOCATORS).to_csv(folder / "sweep.csv", index=False)
    if comparison:
        layer = make_plan(details, None, replace(config, granularity="layer"), provenance={})
        entry = {
            name: {
                "objective": p.summary["alpha_objective"],
                "status": p.provenance["solver"]["status"],
                "average_payload_bits": p.summary["average_payload_bits"],
                "total_bytes": p.summary["total_bytes"],
            }
            for name, p in (("layer_plan", layer), ("expert_plan", plan))
        }
        entry["rounded_up_per_layer_bytes"] = rounded_up_per_layer(plan)
        entry["engines"] = ENGINES
        (folder / "plan_comparison.json").write_text(json.dumps(entry), encoding="utf-8")
    if not inspect:
        for name in ("inspect.json", "details.csv", "experts.csv"):
            (folder / name).unlink()
    return folder


def rounded_up_per_layer(plan: Plan) -> int:
    """Total bytes with every expert of a (layer, proj) at that group's widest width."""
    widest: dict[tuple, int] = {}
    for t in plan.tensors:
        if t.unit is not None:
            widest[(t.layer, t.proj)] = max(widest.get((t.layer, t.proj), 0), t.bits)
    return sum(
        matrix_nbytes(t.rows, t.cols, widest[(t.layer, t.proj)], t.group_size) if t.unit is not None else t.bytes
        for t in plan.tensors
    )


def big_plan_run(folder: Path, layers: int, experts: int) -> Path:
    """A hand-built plan (PlanTensor API) of layers x experts x 3 matrices, with inspect tables and a sweep."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    alpha = rng.normal(3.2, 0.5, (layers, experts))  # [L, E]
    cut = np.quantile(alpha, [0.25, 0.75])
    tensors, details = [], []
    for layer in range(layers):
        for expert in range(experts):
            bits = 4 if alpha[layer, expert] < cut[0] else 2 if alpha[layer, expert] > cut[1] else 3
            for proj, (rows, cols) in (("gate_proj", (64, 128)), ("up_proj", (64, 128)), ("down_proj", (128, 64))):
                name = f"model.layers.{layer}.mlp.experts.{expert}.{proj}"
                tensors.append(
                    PlanTensor(
                        name,
                        name + ".weight",
                        layer,
                        expert,
                        proj,
                        "expert",
                        rows,
                        cols,
                        rows * cols,
                        bits,
                        128,
                        matrix_nbytes(rows, cols, bits, 128),
                        1e-3 * 4.0**-bits,
                        f"L{layer}.E{expert}",
                    )
                )
                details.append((name, layer, expert, proj, "expert", float(alpha[layer, expert]), "success"))
        name = f"model.layers.{layer}.self_attn.q_proj"
        tensors.append(
            PlanTensor(
                name,
                name + ".weight",
                layer,
                None,
                "q_proj",
                "attention",
                64,
                64,
                4096,
                16,
                None,
                matrix_nbytes(64, 64, 16, 128),
                0.0,
            )
        )
    summary = {**tensor_totals(tensors), "units": layers * experts}
    provenance = {
        "checkpoint": {"path": "/models/big"},
        "options": {"granularity": "expert", "allocator": "alphaq", "widths": [2, 3, 4, 8]},
    }
    save_plan(Plan(provenance, summary, tuple(tensors)), folder / "plan.json")
    table = pd.DataFrame(details, columns=["name", "layer", "expert", "proj", "role", "alpha", "status"])
    table.to_csv(folder / "details.csv", index=False)
    experts_csv = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(layers), experts),
            "expert": np.tile(np.arange(experts), layers),
            "role": "expert",
            "alpha_mean": alpha.ravel(),
            "quality": "ok",
        }
    )
    experts_csv.to_csv(folder / "experts.csv", index=False)
    (folder / "inspect.json").write_text(json.dumps({"schema_version": 1, "stage": "inspect", "checkpoint": {}}))
    rows = [
        {
            "allocator": a,
            "budget": str(b),
            "budget_kind": "bits",
            "status": "optimal",
            "average_payload_bits": b,
            "predicted_error": 1e-3 * 4.0**-b * (1 + i / 4),
        }
        for b in (2, 2.5, 3, 3.5, 4, 5, 6)
        for i, a in enumerate(("alphaq", "uniform", "random", "alpha_ratio", "weight_norm", "frequency"))
    ]
    pd.DataFrame(rows).to_csv(folder / "sweep.csv", index=False)
    return folder


# -- fixtures -----------------------------------------------------------------------------------------
