"""``alphaq eval``: measure a quantized checkpoint, a simulated plan or the original model, and verify the plan.

One run measures perplexity with the standard protocol (:mod:`alphaq.evaluation.perplexity`) and, for a quantized
checkpoint or a plan, the original model on the same windows (the baseline), so the cost of the plan is a
perplexity increase. It counts the routing of every window in the same forward passes, and sets each tensor's
and expert's measured error and bytes next to the plan's prediction (:mod:`alphaq.evaluation.verification`).

Written into ``out_dir``: ``eval.json`` (schema, provenance, results, memory, verification summary),
``eval_tensors.csv`` and ``eval_experts.csv``; ``eval.html`` is rendered from them by
:mod:`alphaq.report.eval_page`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError, ConfigError
from alphaq.evaluation.options import EvalOptions
from alphaq.provenance import text_record, versions
from alphaq.runfolder import EVAL_EXPERTS_CSV, EVAL_JSON, EVAL_SCHEMA_VERSION, EVAL_TENSORS_CSV

ProgressFn = Callable[[int, str, int], None]


def _model_bytes(model: Any) -> int:
    """Bytes of every parameter and buffer of a loaded model (what it holds in memory)."""
    tensors = [*model.parameters(), *model.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def _disk_bytes(folder: Path) -> int:
    return int(sum(p.stat().st_size for p in folder.glob("*.safetensors")))


def _checkpoint_record(original: Path, manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """Path, fingerprint and model type of the original checkpoint (from quantize.json when there is one)."""
    if manifest is not None and manifest.get("checkpoint"):
        return dict(manifest["checkpoint"])
    from alphaq.load import open_checkpoint

    ckpt = open_checkpoint(original)
    return {"path": str(ckpt.path), "fingerprint": ckpt.fingerprint, "model_type": ckpt.model_type}


def _measure(model: Any, ids: Any, window: int, options: EvalOptions, label: str,
             progress: ProgressFn | None, total: int) -> tuple[Any, dict[tuple[int, int], float]]:
    """Perplexity and routing shares of ``model`` in the same forward passes."""
    from alphaq.evaluation.perplexity import perplexity_and_routing

    def tick(done: int, _windows: int) -> None:
        if progress is not None:
            progress(done, label, total)

    result, routing = perplexity_and_routing(model, ids, window, max_windows=options.max_windows,
                                             stride=options.stride, batch_size=options.batch_size, progress=tick)
    return result, ({} if routing is None else routing.shares())


def run_eval(model: str | Path | None, out_dir: str | Path | None = None, *, quantized: str | Path | None = None,
             plan_file: str | Path | None = None, text_file: str | Path | None = None,
             options: EvalOptions | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Perplexity of the original model, a quantized checkpoint or a simulated plan, with plan verification.

    Args:
        model: the original checkpoint folder (None: the bundled demo; for ``quantized``, None means the
            checkpoint recorded in its ``quantize.json``).
        out_dir: write ``eval.json``, ``eval_tensors.csv`` and ``eval_experts.csv`` there when given.
        quantized: a quantized checkpoint folder (``alphaq quantize --out``).
        plan_file: a ``plan.json`` to apply to ``model`` by simulated quantization.
        text_file: evaluation text (None: WikiText-2 test from the data folder).
        options: :class:`EvalOptions` (None: defaults).
        progress: ``progress(windows, label, total_windows)`` after each forward pass.

    Returns:
        The record written to ``eval.json``.

    Raises:
        ConfigError: both ``quantized`` and ``plan_file``; AlphaQError: missing text or artifacts, a model
            that cannot be loaded.
    """
    import pandas as pd
    import torch

    from alphaq.evaluation import datasets
    from alphaq.atomic import json_safe, write_json, write_with
    from alphaq.audit.artifacts import expert_alphas
    from alphaq.evaluation.perplexity import model_context, window_starts
    from alphaq.evaluation.verification import (
        TENSOR_COLUMNS,
        expert_table,
        tensors_from_checks,
        tensors_from_quantize_manifest,
        verification_summary,
    )
    from alphaq.load.model import load_model, tokenize_text
    from alphaq.zoo.demo import demo_model_path

    opts = options or EvalOptions()
    dtype = getattr(torch, opts.dtype)
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {opts.device} requested but CUDA is not available; pass --device cpu")
    if quantized is not None and plan_file is not None:
        raise ConfigError("pass either --quantized or --plan, not both")
    eval_path = Path(text_file) if text_file is not None else datasets.wikitext2_test()
    if not eval_path.is_file():
        raise AlphaQError(f"{eval_path}: text file not found; pass an existing --text-file")

    plan_path: Path | None = Path(plan_file) if plan_file is not None else None
    manifest: dict[str, Any] | None = None
    if quantized is not None:
        from alphaq.quantization.manifest import read_manifest

        manifest = read_manifest(quantized)
        recorded = Path(manifest["checkpoint"]["path"])
        original_path = Path(model) if model is not None else recorded
        plan_record = manifest.get("plan") or {}
        if plan_record.get("path") and Path(plan_record["path"]).is_file():
            plan_path = Path(plan_record["path"])
    else:
        original_path = Path(model) if model is not None else demo_model_path()

    # the evaluated model first: for a quantized source it needs no original weights at all
    if quantized is not None:
        from alphaq.quantization.loading import load_quantized

        lm, tokenizer = load_quantized(quantized, device=opts.device, dtype=dtype)
        source: dict[str, Any] = {"kind": "quantized", "path": str(quantized), "original": str(original_path),
                                  "plan_fingerprint": (manifest or {}).get("plan", {}).get("fingerprint"),
                                  "method": (manifest or {}).get("options", {}).get("method")}
    else:
        lm, tokenizer = load_model(original_path, device=opts.device, dtype=dtype)
        source = {"kind": "original", "path": str(original_path)}
    window = opts.context or model_context(lm)
    ids = torch.tensor(tokenize_text(tokenizer, datasets.read_text(eval_path)), dtype=torch.long)
    windows = len(window_starts(int(ids.numel()), window, opts.stride or window))
    windows = min(windows, opts.max_windows) if opts.max_windows else windows
    with_baseline = opts.baseline and (quantized is not None or plan_file is not None)
    total = windows * (2 if with_baseline else 1)

    baseline = None
    shares_original: dict[tuple[int, int], float] = {}
    tensors = pd.DataFrame(columns=TENSOR_COLUMNS)
    memory: dict[str, Any] = {"model_bytes": _model_bytes(lm)}
    if plan_file is not None:
        from alphaq.evaluation.simulate import apply_plan
        from alphaq.planning.plan_file import load_plan

        plan = load_plan(plan_file)
        if with_baseline:
            baseline, shares_original = _measure(lm, ids, window, opts, "original", progress, total)
        sim = apply_plan(lm, plan)
        tensors = tensors_from_checks(sim.checks, plan)
        source = {"kind": "simulated", "path": str(original_path), "plan": str(plan_file),
                  "plan_fingerprint": plan.plan_fingerprint, "method": sim.method}
        memory.update({"plan_expert_bytes": plan.summary.get("expert_bytes"),
                       "plan_total_bytes": plan.summary.get("total_bytes"),
                       "note": "simulated: weights are quantized and dequantized in place, memory is the plan's"})
    result, shares = _measure(lm, ids, window, opts, source["kind"], progress, total)
    if quantized is not None:
        tensors = tensors_from_quantize_manifest(manifest or {})
        totals = (manifest or {}).get("totals", {})
        memory.update({"checkpoint_bytes": _disk_bytes(Path(quantized)),
                       "expert_bytes": totals.get("expert_quantized_bytes"),
                       "plan_expert_bytes": totals.get("expert_predicted_bytes"),
                       "plan_total_bytes": (manifest or {}).get("plan", {}).get("total_bytes"),
                       "bytes_match_plan": totals.get("bytes_match_plan")})
        del lm
        if with_baseline:
            if (original_path / "config.json").is_file():
                base_lm, _ = load_model(original_path, device=opts.device, dtype=dtype)
                baseline, shares_original = _measure(base_lm, ids, window, opts, "original", progress, total)
                memory["original_model_bytes"] = _model_bytes(base_lm)
                memory["original_checkpoint_bytes"] = _disk_bytes(original_path)
                del base_lm
            else:
                source["baseline_note"] = f"original checkpoint {original_path} not found; no baseline"
    elif plan_file is not None:
        memory["original_checkpoint_bytes"] = _disk_bytes(original_path)

    experts = expert_table(tensors, shares, shares_original,
                          expert_alphas(plan_path.parent) if plan_path is not None else {})
    record: dict[str, Any] = {
        "schema_version": EVAL_SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(), "source": source,
        "checkpoint": _checkpoint_record(original_path, manifest),
        "plan": {"path": str(plan_path) if plan_path else None},
        "eval_text": text_record(eval_path),
        "protocol": {"context": window, "stride": opts.stride or window, "max_windows": opts.max_windows,
                     "remainder": "dropped", "batch_size": opts.batch_size, "device": opts.device,
                     "dtype": opts.dtype},
        **asdict(result),
        "baseline": asdict(baseline) if baseline is not None else None,
        "ppl_increase": (result.ppl - baseline.ppl) if baseline is not None else None,
        "memory": memory,
        "verification": verification_summary(tensors, experts),
    }
    record = json_safe(record)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_with(out / EVAL_TENSORS_CSV, lambda p: tensors.to_csv(p, index=False))
        write_with(out / EVAL_EXPERTS_CSV, lambda p: experts.to_csv(p, index=False))
        write_json(out / EVAL_JSON, record)  # last: its presence marks a finished evaluation
    return record


__all__ = ["EvalOptions", "run_eval"]
