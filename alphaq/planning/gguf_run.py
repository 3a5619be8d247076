"""``alphaq plan --target gguf``: a whole-model GGUF plan, measured with llama.cpp, under the file's real size.

Steps (each cached in the run folder's ``gguf/`` for the checkpoint fingerprint and llama.cpp build):

1. convert the checkpoint with llama.cpp's converter to an F16 GGUF (``gguf/model-f16.gguf``);
2. the model's self-Fisher (:mod:`alphaq.planning.self_fisher`: text the model writes itself, no data) for the
   ``fisher`` importances (``gguf/self_fisher.npz``);
3. every quantizable tensor at Q2_K..Q6_K, Q8_0 and F16 with ``llama-quantize --pure``: bytes and errors
   (:mod:`alphaq.export.gguf_measure`, ``gguf/measurements.json``);
4. the budget in file bytes (a preset's size by running llama-quantize's preset, ``gguf/presets.json``);
5. the exact knapsack over types (:mod:`alphaq.planning.gguf_model`) and the plan: every checkpoint matrix with the
   width of its GGUF tensor's type, and ``provenance.gguf`` with every GGUF tensor's type and the file's size.
"""

from __future__ import annotations

import datetime as _dt
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.progress import ProgressFn

if TYPE_CHECKING:
    import pandas as pd

    from alphaq.export.gguf_measure import GgufMeasurements
    from alphaq.export.llamacpp_tools import LlamaCppTools
    from alphaq.load.checkpoint import Checkpoint
    from alphaq.planning.config import PlanConfig
    from alphaq.planning.plan_file import Plan

GGUF_DIR = "gguf"
F16_GGUF = "model-f16.gguf"
#: ggml type -> the plan's width (F16: 16, kept).
TYPE_WIDTH = {"Q2_K": 2, "Q3_K": 3, "Q4_K": 4, "Q5_K": 5, "Q6_K": 6, "Q8_0": 8, "F16": 16}
#: Group size recorded for GGUF widths (the k-quant super-block).
GGUF_GROUP = 256


def _cached_json(path: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if data.get("key") == json.loads(json.dumps(dict(key))) else None


def f16_gguf(tools: LlamaCppTools, ckpt: Checkpoint, folder: Path) -> Path:
    """The checkpoint as an F16 GGUF (converted once per fingerprint and llama.cpp build)."""
    from alphaq.atomic import write_json
    from alphaq.export.gguf_io import convert_checkpoint

    out, stamp = folder / F16_GGUF, folder / "model-f16.json"
    key = {"fingerprint": ckpt.fingerprint, "llama_cpp_python": tools.info.get("llama_cpp_python")}
    if out.is_file() and _cached_json(stamp, key) is not None:
        return out
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=folder) as tmp:
        staged = convert_checkpoint(tools, ckpt.path, Path(tmp) / F16_GGUF, outtype="f16")
        staged.replace(out)
    write_json(stamp, {"key": key})
    return out


def self_fisher_weights(
    ckpt: Checkpoint, folder: Path, sequences: int, progress: ProgressFn | None
) -> dict[str, np.ndarray]:
    """GGUF name -> ``1/2`` x the self-Fisher column (row) weights (cached in ``self_fisher.npz``)."""
    from alphaq.atomic import write_json
    from alphaq.planning.gguf_signals import fisher_weights
    from alphaq.planning.self_fisher import SelfFisherConfig, fisher_diagonal, sample_sequences

    config = SelfFisherConfig(sequences=sequences)
    key = {"fingerprint": ckpt.fingerprint, "config": dict(config.__dict__)}
    cache, stamp = folder / "self_fisher.npz", folder / "self_fisher.json"
    if cache.is_file() and _cached_json(stamp, key) is not None:
        with np.load(cache) as data:
            return {name: data[name] for name in data.files}
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.from_pretrained(str(ckpt.path))
    model = AutoModelForCausalLM.from_pretrained(str(ckpt.path), dtype=torch.float32)
    start = hf_config.bos_token_id if hf_config.bos_token_id is not None else hf_config.eos_token_id
    start = int(start[0] if isinstance(start, list) else (start or 0))
    with torch.random.fork_rng():
        ids = sample_sequences(model, config, start)  # [N, T]
        fisher, tokens = fisher_diagonal(model, ids, batch_size=config.batch_size, progress=progress)
    weights = {name: 0.5 * w for name, w in fisher_weights(fisher, hf_config.to_dict()).items()}
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, **weights)
    Path(tmp.name).replace(cache)
    write_json(stamp, {"key": key, "tokens": tokens})
    return weights


def measurements(
    tools: LlamaCppTools, ckpt: Checkpoint, folder: Path, config: PlanConfig, progress: ProgressFn | None
) -> GgufMeasurements:
    """Bytes and errors of every tensor at every type (cached in ``measurements.json``)."""
    from alphaq.export.gguf_measure import load_measurements, measure_gguf_model, save_measurements

    fisher_needed = str(config.importance).startswith("fisher")
    key = {
        "fingerprint": ckpt.fingerprint,
        "llama_cpp_python": tools.info.get("llama_cpp_python"),
        "fisher_sequences": config.fisher_sequences if fisher_needed else None,
    }
    cache = folder / "measurements.json"
    cached = load_measurements(cache, key)
    if cached is not None:
        return cached
    source = f16_gguf(tools, ckpt, folder)
    weights = {"fisher": self_fisher_weights(ckpt, folder, config.fisher_sequences, progress)} if fisher_needed else {}
    with tempfile.TemporaryDirectory(prefix=".measure-", dir=folder) as tmp:
        m = measure_gguf_model(tools, source, tmp, column_weights=weights, progress=progress, key=key)
    save_measurements(cache, m)
    return m


def preset_bytes(tools: LlamaCppTools, ckpt: Checkpoint, folder: Path, preset: str) -> int:
    """File bytes llama-quantize's ``preset`` (no importance matrix) gives this checkpoint (cached)."""
    from alphaq.atomic import write_json
    from alphaq.export.llamacpp_runs import preset_size

    key = {"fingerprint": ckpt.fingerprint, "llama_cpp_python": tools.info.get("llama_cpp_python")}
    path = folder / "presets.json"
    cached = _cached_json(path, key) or {"key": key, "bytes": {}}
    if preset in cached["bytes"]:
        return int(cached["bytes"][preset])
    source = f16_gguf(tools, ckpt, folder)
    with tempfile.TemporaryDirectory(prefix=".preset-", dir=folder) as tmp:
        size = preset_size(tools, source, preset, work_dir=tmp).file_bytes  # the file is deleted after reading
    cached["bytes"][preset] = size
    write_json(path, cached)
    return size


def plan_tensors_for(
    details: pd.DataFrame, m: GgufMeasurements, types: Mapping[str, str], costs: np.ndarray
) -> list[Any]:
    """Every checkpoint matrix with the width of its GGUF tensor's type (routers and unmapped ones kept at 16).

    A matrix the converter splits over two GGUF tensors (DeepSeek's ``kv_b``) takes the wider of their types.
    """
    import dataclasses

    from alphaq.export.ggml_types import gguf_matrix_nbytes
    from alphaq.export.llamacpp import gguf_names
    from alphaq.planning.gguf_signals import _plan_tensor
    from alphaq.planning.units import KEEP_BF16, matrix_nbytes

    index = {w.name: i for i, w in enumerate(m.weights)}
    col = {t: k for k, t in enumerate(m.types)}
    out = []
    for row in details.itertuples(index=False):
        rows, cols = int(row.rows), int(row.cols)
        base = _plan_tensor(row.name, row.role, row.layer, row.expert, row.proj, rows, cols)
        base = dataclasses.replace(base, tensor=str(row.tensor), bytes=matrix_nbytes(rows, cols, KEEP_BF16, 8))
        names = [names[0] + ".weight" for names, _ in gguf_names(base) or []]
        planned = [n for n in names if n in types]
        if not planned:
            out.append(dataclasses.replace(base, error=None))
            continue
        gguf = max(planned, key=lambda n: TYPE_WIDTH[types[n]])
        bits = TYPE_WIDTH[types[gguf]]
        share = (rows * cols) / m.weights[index[gguf]].params
        error = sum(float(costs[index[n], col[types[n]]]) for n in planned) * share
        if bits == KEEP_BF16:
            out.append(dataclasses.replace(base, error=error))
            continue
        out.append(
            dataclasses.replace(
                base,
                bits=bits,
                group_size=GGUF_GROUP,
                bytes=gguf_matrix_nbytes(rows, cols, bits),
                error=error,
                unit=gguf if base.role == "expert" else None,
            )
        )
    return out


def run_gguf_plan(
    ckpt: Checkpoint,
    details: pd.DataFrame,
    config: PlanConfig,
    out: Path,
    provenance: Mapping[str, Any],
    *,
    tools: LlamaCppTools | None = None,
    progress: ProgressFn | None = None,
) -> Plan:
    """The whole-model GGUF plan of ``ckpt`` under ``config.budget`` (a :class:`GgufBudget`).

    Args:
        ckpt: the checkpoint.
        details: its inspect details.
        config: plan options (``target="gguf"``, ``importance``, ``fisher_sequences``, ``gamma``).
        out: the run folder (``gguf/`` caches the conversion, measurements and preset sizes).
        provenance: checkpoint and diagnostics facts merged into the plan's provenance.
        tools: llama.cpp tools (default :func:`find_tools`).
        progress: ``progress(1, item, total)``.

    Returns:
        The :class:`Plan`.

    Raises:
        PlanError: the budget is below the smallest file the types can make; LlamaCppMissing: no tools.
    """
    from alphaq._version import __version__
    from alphaq.export.llamacpp_tools import find_tools
    from alphaq.planning import gguf_model
    from alphaq.planning.gguf_signals import alpha_by_tensor
    from alphaq.planning.plan_file import Plan, tensor_totals

    budget = config.budget
    tools = tools or find_tools()
    folder = out / GGUF_DIR
    m = measurements(tools, ckpt, folder, config, progress)
    capacity = gguf_model.resolve_budget(budget, m, lambda p: preset_bytes(tools, ckpt, folder, p))
    signals = gguf_model.Signals(
        fisher_error=m.weighted_error.get("fisher"),
        fisher_expert_error=m.expert_weighted_error.get("fisher", {}),
        alpha=alpha_by_tensor(details),
        kurtosis=m.kurtosis,
        gamma=config.gamma,
    )
    costs = gguf_model.importance_costs(m, config.importance, signals)
    mask = gguf_model.allowed_types(m, tuple(_allowed(config)))
    assignment = gguf_model.solve_gguf(m, costs, capacity, mask)
    tensors = plan_tensors_for(details, m, assignment.types, costs)
    totals = tensor_totals(tensors)
    by_type: dict[str, int] = {}
    for w in m.weights:
        by_type[assignment.types[w.name]] = by_type.get(assignment.types[w.name], 0) + w.params
    planned_params = sum(w.params for w in m.weights)
    summary = {
        **totals,
        "gguf_file_bytes": assignment.file_bytes,
        "gguf_bits_per_weight": 8 * assignment.file_bytes / m.total_params,
        "gguf_param_share_by_type": {t: by_type[t] / planned_params for t in m.types if t in by_type},
        "predicted_kld": float(assignment.objective) if config.importance == "fisher" else None,
        "units": len(m.weights),
    }
    computed = {
        "alphaq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": {
            "target": "gguf",
            "importance": config.importance,
            "gamma": config.gamma,
            "fisher_sequences": config.fisher_sequences,
            "widths": list(config.widths),
            "granularity": "layer",
        },
        "budget": {
            "given": budget.text,
            "kind": budget.kind,
            "value": budget.value,
            "resolved": {"counts": "gguf file bytes", "capacity": capacity, "description": f"{capacity:,} bytes"},
        },
        "solver": {
            "method": "exact",
            "status": assignment.status,
            "objective": assignment.objective,
            "bound": assignment.bound,
        },
        "gguf": {
            "types": dict(assignment.types),
            "file_bytes": assignment.file_bytes,
            "capacity": capacity,
            "fixed_bytes": m.fixed_bytes,
            "total_params": m.total_params,
            "f16_file_bytes": m.f16_file_bytes,
            "llama_cpp": tools.describe(),
        },
        "failed_fits": [],
        "notes": [],
        "warnings": [],
    }
    return Plan(provenance={**computed, **dict(provenance)}, summary=summary, tensors=tuple(tensors))


def _allowed(config: PlanConfig) -> list[str]:
    """Candidate types from the plan's widths (F16 is always a candidate: it 'pays' only where nothing else fits)."""
    width_type = {v: k for k, v in TYPE_WIDTH.items()}
    return [width_type[w] for w in config.widths if w in width_type] + ["F16"]


def is_whole_model(plan: Plan) -> bool:
    """True for a plan made by :func:`run_gguf_plan` (its provenance lists every GGUF tensor's type)."""
    gguf = plan.provenance.get("gguf")
    return isinstance(gguf, Mapping) and isinstance(gguf.get("types"), Mapping)
