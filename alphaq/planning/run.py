"""The plan stage with its I/O: checkpoint + inspect details -> plan.json, plan_comparison.json, sweep.csv.

The allocation itself is pure (:mod:`alphaq.planning`); this module opens the checkpoint, reuses or runs the
inspect stage, measures routing on a calibration text when the ``frequency`` baseline asks for it, and
writes the run folder that ``plan.html`` is rendered from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from alphaq.errors import AlphaQError
from alphaq.locking import locks_output
from alphaq.progress import ProgressFn
from alphaq.runfolder import INSPECT_JSON, PLAN_COMPARISON_JSON, PLAN_ERRORS_NPZ, PLAN_JSON, SWEEP_CSV

if TYPE_CHECKING:
    from alphaq.load.checkpoint import Checkpoint
    from alphaq.planning.costs import MatrixErrors
    from alphaq.planning.plan_file import Plan
    from alphaq.planning.planner import PlanConfig

#: Engines that serve one width per (layer, projection) for all experts of a layer.
LAYER_ENGINES = ("llama.cpp (GGUF)", "vLLM fused-MoE", "TensorRT-LLM")
PER_EXPERT_ENGINES = ("alphaq runtime (alphaq.load_quantized)",)


@dataclass(frozen=True)
class PlanStageResult:
    """What the plan stage produced (also written to the run folder).

    Attributes:
        plan: the :class:`~alphaq.planning.plan_file.Plan` (``plan.json``).
        comparison: the per-expert vs per-layer deployability view (``plan_comparison.json``).
        sweep: the predicted-error sweep (``sweep.csv``; None without ``sweep_budgets``).
        run_dir: the run folder.
    """

    plan: Plan
    comparison: dict[str, Any]
    sweep: pd.DataFrame | None
    run_dir: Path


def plan_details(
    ckpt: Checkpoint,
    run_dir: Path,
    *,
    inspect_dir: Path | None = None,
    fit: str = "ww",
    progress: ProgressFn | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-matrix details for the planner: a saved inspect run of the same checkpoint, or a fresh
    experts-only inspect (saved into ``run_dir``), completed with the identity of every other matrix.

    Returns:
        (details, inspect manifest).
    """
    from alphaq.audit.artifacts import load_inspect_run
    from alphaq.audit.run import InspectConfig, inspect, save_inspect

    source = inspect_dir or run_dir
    details = manifest = None
    if (source / INSPECT_JSON).is_file():
        run = load_inspect_run(source)
        if run.manifest["checkpoint"]["fingerprint"] != ckpt.fingerprint:
            if inspect_dir is not None:
                raise AlphaQError(
                    f"{source}: this inspect run is of another checkpoint (fingerprint "
                    f"{run.manifest['checkpoint']['fingerprint']} != {ckpt.fingerprint}); "
                    "run `alphaq inspect` on this model or drop --inspect-dir"
                )
        else:
            details, manifest = run.details, run.manifest
    if details is None:
        result = inspect(ckpt.path, InspectConfig(fit=fit, experts_only=True), progress=progress)  # type: ignore[arg-type]
        save_inspect(result, run_dir)
        details, manifest = result.details, result.manifest
    known = set(details["name"])
    extra = [
        {
            "name": m.name,
            "tensor": m.tensor,
            "layer": m.layer,
            "expert": m.expert,
            "proj": m.proj,
            "role": m.role.value,
            "rows": m.shape[0],
            "cols": m.shape[1],
            "params": m.params,
            "dtype": m.dtype,
            "status": "not_fitted",
        }
        for m in ckpt.matrices
        if m.name not in known
    ]
    if extra:
        details = pd.concat([details, pd.DataFrame(extra)], ignore_index=True)
    details["layer"] = details["layer"].astype("Int64")
    details["expert"] = details["expert"].astype("Int64")
    return details, manifest


def calibration_shares(model_path: Path, text_file: Path, *, max_windows: int = 64) -> dict[tuple[int, int], float]:
    """Routing share of each expert on a calibration text (input of the calibrated ``frequency`` baseline)."""
    import torch

    from alphaq.evaluation.routing import routing_stats
    from alphaq.load.model import load_model, tokenize_text

    if not text_file.is_file():
        raise AlphaQError(f"{text_file}: calibration text not found; pass an existing --calibration-text file")
    model, tokenizer = load_model(model_path)
    ids = torch.tensor(tokenize_text(tokenizer, text_file.read_text(encoding="utf-8")), dtype=torch.long)
    context = min(int(getattr(model.config, "max_position_embeddings", 2048) or 2048), 2048)
    return routing_stats(model, ids, context=context, max_windows=max_windows).shares()


@locks_output("run_dir", "plan")
def run_plan(
    model: str | Path | None, config: PlanConfig, run_dir: str | Path, *, progress: ProgressFn | None = None
) -> PlanStageResult:
    """Plan a checkpoint and write plan.json (+ plan_comparison.json, sweep.csv) into ``run_dir``.

    Args:
        model: checkpoint folder (None: the bundled demo model).
        config: :class:`alphaq.planning.planner.PlanConfig`: the allocation options and the stage's inputs
            (``sweep_budgets``, ``sweep_allocators``, ``calibration_text``, ``inspect_dir``, ``pattern_file``).
        run_dir: run folder (created); an inspect run of the same checkpoint there is reused.
        progress: ``progress(1, item, total)``.

    Returns:
        The :class:`PlanStageResult`.
    """
    from alphaq.atomic import staged_files
    from alphaq.load import open_checkpoint
    from alphaq.planning.planner import make_plan, sweep
    from alphaq.zoo.demo import demo_model_path

    out = Path(run_dir)
    inspect_dir, calibration_text = config.inspect_dir, config.calibration_text
    sweep_budgets, sweep_allocators = config.sweep_budgets, config.sweep_allocators
    ckpt = open_checkpoint(model if model is not None else demo_model_path(), pattern_file=config.pattern_file)
    needs_shares = config.allocator == "frequency" or (sweep_budgets and "frequency" in sweep_allocators)
    if needs_shares and calibration_text is None:
        raise AlphaQError(
            "the frequency allocator is calibrated on text; pass --calibration-text FILE "
            "(it is the only allocator that needs data)"
        )
    shares = calibration_shares(ckpt.path, Path(calibration_text)) if needs_shares else None
    out.mkdir(parents=True, exist_ok=True)
    details, inspect_manifest = plan_details(
        ckpt, out, inspect_dir=Path(inspect_dir) if inspect_dir else None, progress=progress
    )
    from alphaq.runfolder import record_path  # paths relative to the run folder, the bundled model by name

    if config.target == "gguf":  # a whole-model GGUF plan, measured with llama.cpp
        return _run_gguf(ckpt, details, inspect_manifest, config, out, progress)
    errors = _plan_errors(ckpt, details, config, out / PLAN_ERRORS_NPZ, progress)

    provenance = plan_provenance(ckpt, details, inspect_manifest, out, inspect_dir)
    provenance["calibration_text"] = record_path(calibration_text, base=out) if needs_shares else None
    plan = make_plan(details, None, config, provenance=provenance, routing_shares=shares, errors=errors)
    comparison = layer_comparison(plan, details, config, errors, provenance, shares)
    table = None
    if sweep_budgets:
        table = sweep(details, None, config, sweep_budgets, sweep_allocators, routing_shares=shares, errors=errors)
    with staged_files(out) as files:  # all three or none (a full disk), plan.json renamed last
        if table is not None:
            files.write_with(SWEEP_CSV, lambda p: table.to_csv(p, index=False))
        files.write_json(PLAN_COMPARISON_JSON, comparison)
        files.write_json(PLAN_JSON, plan.to_dict())
    return PlanStageResult(plan=plan, comparison=comparison, sweep=table, run_dir=out)


def _plan_errors(
    ckpt: Any, details: pd.DataFrame, config: PlanConfig, path: Path, progress: ProgressFn | None
) -> MatrixErrors:
    """The measured errors: loaded from ``path`` when an earlier plan saved them for the same key, else measured
    (and saved there for the next plan; :mod:`alphaq.planning.error_cache`)."""
    from alphaq.planning.error_cache import errors_key, load_errors, save_errors
    from alphaq.planning.planner import measure_errors
    from alphaq.planning.units import expert_rows

    key = errors_key(ckpt.fingerprint, [str(n) for n in expert_rows(details)["name"]], config)
    errors = load_errors(path, key)
    if errors is None:
        refs = {m.name: m for m in ckpt.matrices}
        errors = measure_errors(details, lambda name: ckpt.read_matrix(refs[name]), config, progress=progress)
        save_errors(path, errors, key)
    return errors


def _run_gguf(
    ckpt: Checkpoint,
    details: pd.DataFrame,
    inspect_manifest: dict[str, Any],
    config: PlanConfig,
    out: Path,
    progress: ProgressFn | None,
) -> PlanStageResult:
    from alphaq.atomic import staged_files
    from alphaq.planning.gguf_run import run_gguf_plan

    if config.sweep_budgets:
        raise AlphaQError("--sweep is not available with --target gguf; plan each file size with its own --budget")
    provenance = plan_provenance(ckpt, details, inspect_manifest, out, config.inspect_dir)
    provenance["calibration_text"] = None
    plan = run_gguf_plan(ckpt, details, config, out, provenance, progress=progress)
    comparison = {"target": "gguf", "note": "a whole-model GGUF plan has one type per GGUF tensor by construction"}
    with staged_files(out) as files:
        files.write_json(PLAN_COMPARISON_JSON, comparison)
        files.write_json(PLAN_JSON, plan.to_dict())
    return PlanStageResult(plan=plan, comparison=comparison, sweep=None, run_dir=out)


def plan_provenance(
    ckpt: Checkpoint, details: pd.DataFrame, inspect_manifest: dict[str, Any], out: Path, inspect_dir: Any
) -> dict[str, Any]:
    """The checkpoint and diagnostics a plan records (paths relative to the run folder)."""
    from alphaq.runfolder import record_path

    return {
        "checkpoint": {
            "path": record_path(ckpt.path, base=out),
            "fingerprint": ckpt.fingerprint,
            "model_type": ckpt.model_type,
            "dtype": source_dtype(details),
        },
        "diagnostics": {
            "fit": inspect_manifest["options"]["fit"],
            "inspect_created": inspect_manifest["created"],
            "inspect_dir": record_path(Path(inspect_dir) if inspect_dir else out, base=out),
        },
    }


def source_dtype(details: pd.DataFrame) -> str | None:
    """The checkpoint's storage type of most weight parameters (``BF16``, ``F16``, ``F32``), from the details."""
    if "dtype" not in details.columns or details.empty:
        return None
    counts = details.groupby("dtype")["params"].sum()
    return str(counts.idxmax()) if len(counts) else None


def layer_comparison(
    plan: Plan,
    details: pd.DataFrame,
    config: PlanConfig,
    errors: MatrixErrors | None,
    provenance: dict[str, Any],
    shares: dict[tuple[int, int], float] | None,
) -> dict[str, Any]:
    """The deployability view: the best layer-granularity plan at the same budget, and what rounding the
    plan up to one width per (layer, projection) would cost."""
    from alphaq.planning.planner import make_plan

    def brief(p: Plan) -> dict[str, Any]:
        return {
            "objective": expert_alpha_objective(p, details, config.gamma),
            "solver_objective": p.provenance["solver"]["objective"],
            "status": p.provenance["solver"]["status"],
            "average_payload_bits": p.summary.get("average_payload_bits"),
            "expert_bytes": p.summary.get("expert_bytes"),
            "total_bytes": p.summary.get("total_bytes"),
            "predicted_error": p.summary.get("predicted_error"),
        }

    result: dict[str, Any] = {
        "granularity": config.granularity,
        "expert_plan": brief(plan),
        "engines": {"per_expert": list(PER_EXPERT_ENGINES), "layer": list(LAYER_ENGINES)},
        "deployable_on": list(LAYER_ENGINES if config.granularity == "layer" else PER_EXPERT_ENGINES),
    }
    if config.granularity != "layer":
        layer_config = dataclasses.replace(config, granularity="layer")
        try:
            layer_plan = make_plan(
                details, None, layer_config, provenance=provenance, routing_shares=shares, errors=errors
            )
            result["layer_plan"] = brief(layer_plan)
        except AlphaQError as error:
            result["layer_plan"] = {"status": "infeasible", "message": str(error)}
    result["rounded_up_per_layer_bytes"] = rounded_up_bytes(plan)
    return result


def expert_alpha_objective(plan: Plan, details: pd.DataFrame, gamma: float) -> float:
    """A plan's alpha-weighted predicted error with importance taken per expert, whatever the plan's
    granularity: sum_m s_e(m) params_m err_m / sum params, s_e = (median expert alpha / alpha_e)^gamma.

    Plans of different granularities are compared on this one scale (their own solver objectives weight
    units differently).
    """
    import numpy as np

    experts = details[details["role"] == "expert"]
    fitted = experts[experts["status"] == "success"]
    expert_alpha = fitted.groupby(["layer", "expert"])["alpha"].mean()
    median = float(expert_alpha.median()) if len(expert_alpha) else float("nan")
    total = weighted = 0.0
    for t in plan.tensors:
        if t.role != "expert" or t.error is None:
            continue
        alpha = expert_alpha.get((t.layer, t.expert), float("nan"))
        importance = (median / alpha) ** gamma if np.isfinite(alpha) and alpha > 0 and np.isfinite(median) else 1.0
        weighted += importance * t.params * t.error
        total += t.params
    return weighted / total if total else float("nan")


def rounded_up_bytes(plan: Plan) -> int:
    """Expert bytes if every expert of a (layer, projection) took the widest width planned in that group
    (what a GGUF/vLLM deployment of a per-expert plan costs)."""
    from alphaq.planning.units import matrix_nbytes

    experts = [t for t in plan.tensors if t.role == "expert"]
    widest: dict[tuple[Any, str], int] = {}
    for t in experts:
        key = (t.layer, t.proj)
        widest[key] = max(widest.get(key, 0), t.bits)
    if (plan.provenance.get("options") or {}).get("target") == "gguf":  # the plan's own format: ggml types
        from alphaq.export.ggml_types import gguf_matrix_nbytes

        return int(sum(gguf_matrix_nbytes(t.rows, t.cols, widest[(t.layer, t.proj)]) for t in experts))
    return int(sum(matrix_nbytes(t.rows, t.cols, widest[(t.layer, t.proj)], t.group_size) for t in experts))
