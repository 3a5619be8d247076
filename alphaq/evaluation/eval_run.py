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

import contextlib
import datetime as _dt
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError, ConfigError
from alphaq.evaluation.eval_result import EvalResult, divergence_record
from alphaq.evaluation.options import EvalOptions
from alphaq.locking import locks_output
from alphaq.progress import ProgressFn
from alphaq.provenance import text_record, versions
from alphaq.runfolder import EVAL_EXPERTS_CSV, EVAL_JSON, EVAL_SCHEMA_VERSION, EVAL_TENSORS_CSV


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


@dataclass
class _Measured:
    """What one evaluation mode measured (the pieces of eval.json and its two tables)."""

    source: dict[str, Any]
    result: Any
    shares: dict[tuple[int, int], float]
    tensors: Any
    memory: dict[str, Any]
    baseline: Any = None
    shares_original: dict[tuple[int, int], float] = field(default_factory=dict)
    divergence: Any = None


@dataclass(frozen=True)
class _Setup:
    """Everything a mode needs: the text's ids, the window, the options and the progress total."""

    ids: Any
    window: int
    options: EvalOptions
    progress: ProgressFn | None
    total: int
    windows: int = 0


def _prepare(
    lm: Any, tokenizer: Any, eval_path: Path, opts: EvalOptions, passes: int, progress: ProgressFn | None
) -> _Setup:
    import torch

    from alphaq.evaluation.datasets import read_text
    from alphaq.evaluation.perplexity import model_context, scored_windows
    from alphaq.load.model import check_token_ids, tokenize_text

    window = opts.context or model_context(lm)
    token_ids = tokenize_text(tokenizer, read_text(eval_path))
    check_token_ids(token_ids, lm, str(eval_path))
    ids = torch.tensor(token_ids, dtype=torch.long)
    windows = scored_windows(int(ids.numel()), window, opts.stride, opts.max_windows)
    return _Setup(ids=ids, window=window, options=opts, progress=progress, total=windows * passes, windows=windows)


def _evaluate_original(
    original: Path, eval_path: Path, opts: EvalOptions, progress: ProgressFn | None
) -> tuple[_Measured, _Setup]:
    """The original model alone (no baseline)."""
    import pandas as pd
    import torch

    from alphaq.evaluation.verification import TENSOR_COLUMNS
    from alphaq.load.model import load_model

    lm, tokenizer = load_model(original, device=opts.device, dtype=getattr(torch, opts.dtype))
    setup = _prepare(lm, tokenizer, eval_path, opts, 1, progress)
    result, shares = _measure(lm, setup, "original")
    return _Measured(
        source={"kind": "original", "path": str(original)},
        result=result,
        shares=shares,
        tensors=pd.DataFrame(columns=TENSOR_COLUMNS),
        memory={"model_bytes": _model_bytes(lm)},
    ), setup


def _evaluate_simulated(
    original: Path, plan_file: Path, eval_path: Path, opts: EvalOptions, progress: ProgressFn | None
) -> tuple[_Measured, _Setup]:
    """The plan applied to the original weights in place (quantize + dequantize), after the baseline."""
    import torch

    from alphaq.evaluation.simulate import apply_plan
    from alphaq.evaluation.verification import tensors_from_checks
    from alphaq.load.model import load_model
    from alphaq.planning.plan_file import load_plan

    plan = load_plan(plan_file)
    lm, tokenizer = load_model(original, device=opts.device, dtype=getattr(torch, opts.dtype))
    setup = _prepare(lm, tokenizer, eval_path, opts, 2 if opts.baseline else 1, progress)
    memory: dict[str, Any] = {"model_bytes": _model_bytes(lm)}
    with _divergence(setup) as (store, meter):
        baseline, shares_original = (
            _measure(lm, setup, "original", store.record if store else None) if opts.baseline else (None, {})
        )
        sim = apply_plan(lm, plan)
        result, shares = _measure(lm, setup, "simulated", meter.record if meter else None)
        divergence = meter.result() if meter and store.values is not None else None
    memory.update(
        {
            "plan_expert_bytes": plan.summary.get("expert_bytes"),
            "plan_total_bytes": plan.summary.get("total_bytes"),
            "note": "simulated: weights are quantized and dequantized in place, memory is the plan's",
            "original_checkpoint_bytes": _disk_bytes(original),
        }
    )
    source = {
        "kind": "simulated",
        "path": str(original),
        "plan": str(plan_file),
        "plan_fingerprint": plan.plan_fingerprint,
        "method": sim.method,
        "error_model": (plan.provenance.get("options") or {}).get("error_model"),
    }
    return _Measured(
        source=source,
        result=result,
        shares=shares,
        tensors=tensors_from_checks(sim.checks, plan),
        memory=memory,
        baseline=baseline,
        shares_original=shares_original,
        divergence=divergence,
    ), setup


def _evaluate_quantized(
    quantized: Path,
    original: Path,
    manifest: dict[str, Any],
    eval_path: Path,
    opts: EvalOptions,
    progress: ProgressFn | None,
) -> tuple[_Measured, _Setup]:
    """The original model as the baseline (its log-probabilities the KL divergence's reference), then the packed
    checkpoint through :func:`alphaq.load_quantized`: one model in memory at a time."""
    import torch

    from alphaq.evaluation.verification import tensors_from_quantize_manifest
    from alphaq.load.model import load_model
    from alphaq.quantization.loading import load_quantized

    dtype = getattr(torch, opts.dtype)
    source: dict[str, Any] = {
        "kind": "quantized",
        "path": str(quantized),
        "original": str(original),
        "plan_fingerprint": manifest.get("plan", {}).get("fingerprint"),
        "error_model": manifest.get("plan", {}).get("error_model"),
        "method": manifest.get("options", {}).get("method"),
    }
    totals = manifest.get("totals", {})
    memory: dict[str, Any] = {
        "checkpoint_bytes": _disk_bytes(quantized),
        "expert_bytes": totals.get("expert_quantized_bytes"),
        "plan_expert_bytes": totals.get("expert_predicted_bytes"),
        "plan_total_bytes": manifest.get("plan", {}).get("total_bytes"),
        "bytes_match_plan": totals.get("bytes_match_plan"),
    }
    measured = _Measured(
        source=source, result=None, shares={}, memory=memory, tensors=tensors_from_quantize_manifest(manifest)
    )
    with_baseline = opts.baseline and (original / "config.json").is_file()
    if opts.baseline and not with_baseline:
        source["baseline_note"] = f"original checkpoint {original} not found; no baseline"
    if with_baseline:
        lm, tokenizer = load_model(original, device=opts.device, dtype=dtype)
    else:
        lm, tokenizer = load_quantized(quantized, device=opts.device, dtype=dtype)
    setup = _prepare(
        lm, tokenizer, eval_path, replace(opts, baseline=with_baseline), 2 if with_baseline else 1, progress
    )
    with _divergence(setup) as (store, meter):
        if with_baseline:
            measured.baseline, measured.shares_original = _measure(
                lm, setup, "original", store.record if store else None
            )
            memory["original_model_bytes"] = _model_bytes(lm)
            memory["original_checkpoint_bytes"] = _disk_bytes(original)
            del lm
            lm, _ = load_quantized(quantized, device=opts.device, dtype=dtype)
        memory["model_bytes"] = _model_bytes(lm)
        measured.result, measured.shares = _measure(lm, setup, "quantized", meter.record if meter else None)
        if meter is not None:
            measured.divergence = meter.result()
    return measured, setup


@locks_output("out_dir", "eval")
def run_eval(
    model: str | Path | None,
    out_dir: str | Path | None = None,
    *,
    quantized: str | Path | None = None,
    plan_file: str | Path | None = None,
    text_file: str | Path | None = None,
    options: EvalOptions | None = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
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
        The :class:`EvalResult` (its ``record`` is what ``eval.json`` holds).

    Raises:
        ConfigError: both ``quantized`` and ``plan_file``; AlphaQError: missing text or artifacts, a model
            that cannot be loaded.
    """
    import torch

    from alphaq.audit.artifacts import expert_alphas
    from alphaq.evaluation import datasets
    from alphaq.evaluation.verification import expert_table
    from alphaq.zoo.demo import demo_model_path

    opts = options or EvalOptions()
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
        from alphaq.runfolder import resolve_recorded_path  # quantize.json records paths relative to its folder

        original = (
            Path(model) if model is not None else resolve_recorded_path(manifest["checkpoint"]["path"], base=quantized)
        )
        recorded_plan = (manifest.get("plan") or {}).get("path")
        if recorded_plan and resolve_recorded_path(recorded_plan, base=quantized).is_file():
            plan_path = resolve_recorded_path(recorded_plan, base=quantized)
        measured, setup = _evaluate_quantized(Path(quantized), original, manifest, eval_path, opts, progress)
    else:
        original = Path(model) if model is not None else demo_model_path()
        if plan_path is not None:
            measured, setup = _evaluate_simulated(original, plan_path, eval_path, opts, progress)
        else:
            measured, setup = _evaluate_original(original, eval_path, opts, progress)

    experts = expert_table(
        measured.tensors,
        measured.shares,
        measured.shares_original,
        expert_alphas(plan_path.parent) if plan_path is not None else {},
    )
    record = _record(measured, setup, experts, original, manifest, plan_path, eval_path, base=out_dir)
    if out_dir is not None:
        _write(Path(out_dir), record, measured.tensors, experts)
    return EvalResult(record=record, out_dir=Path(out_dir) if out_dir is not None else None)


@contextlib.contextmanager
def _divergence(setup: _Setup) -> Iterator[tuple[Any, Any]]:
    """``(store, meter)`` for the KL divergence from the original, or ``(None, None)`` when it is not measured
    (no baseline, or a sliding-window stride whose windows overlap); the store's spill file is removed on exit."""
    opts = setup.options
    if not opts.baseline or (opts.stride is not None and opts.stride != setup.window) or setup.windows < 1:
        yield None, None
        return
    from alphaq.evaluation.divergence import DivergenceMeter, ReferenceLogprobs

    with tempfile.TemporaryDirectory(prefix="alphaq-kld-") as spill:
        store = ReferenceLogprobs(min(setup.windows, opts.kld_windows or setup.windows), spill_dir=spill)
        try:
            yield store, DivergenceMeter(store)
        finally:
            store.close()


def _measure(
    model: Any, setup: _Setup, label: str, on_logits: Callable[..., None] | None = None
) -> tuple[Any, dict[tuple[int, int], float]]:
    """Perplexity and routing shares of ``model`` in the same forward passes (``on_logits``: the KLD hooks)."""
    from alphaq.evaluation.perplexity import perplexity_and_routing

    def tick(done: int, _windows: int) -> None:
        if setup.progress is not None:
            setup.progress(done, label, setup.total)

    opts = setup.options
    result, routing = perplexity_and_routing(
        model,
        setup.ids,
        setup.window,
        max_windows=opts.max_windows,
        stride=opts.stride,
        batch_size=opts.batch_size,
        progress=tick,
        on_logits=on_logits,
    )
    return result, ({} if routing is None else routing.shares())


def _record(
    measured: _Measured,
    setup: _Setup,
    experts: Any,
    original: Path,
    manifest: dict[str, Any] | None,
    plan_path: Path | None,
    eval_path: Path,
    *,
    base: str | Path | None = None,
) -> dict[str, Any]:
    """The eval.json content (paths as :func:`alphaq.runfolder.record_path` records them relative to ``base``)."""
    from alphaq.runfolder import record_path

    source = {
        key: record_path(value, base=base) if key in ("path", "original", "plan") and value else value
        for key, value in measured.source.items()
    }
    from alphaq.atomic import json_safe
    from alphaq.evaluation.verification import verification_summary

    opts, baseline, result = setup.options, measured.baseline, measured.result
    return json_safe(
        {
            "schema_version": EVAL_SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
            "source": source,
            "checkpoint": {**_checkpoint_record(original, manifest), "path": record_path(original, base=base)},
            "plan": {"path": record_path(plan_path, base=base) if plan_path else None},
            "eval_text": text_record(eval_path, base=base),
            "protocol": {
                "context": setup.window,
                "stride": opts.stride or setup.window,
                "max_windows": opts.max_windows,
                "remainder": "dropped",
                "batch_size": opts.batch_size,
                "device": opts.device,
                "dtype": opts.dtype,
            },
            **result.record(),
            "baseline": baseline.record() if baseline is not None else None,
            "ppl_increase": (result.ppl - baseline.ppl) if baseline is not None else None,
            "kld": divergence_record(measured.divergence),
            "memory": measured.memory,
            "verification": verification_summary(measured.tensors, experts),
        }
    )


def _write(out: Path, record: dict[str, Any], tensors: Any, experts: Any) -> None:
    """eval_tensors.csv, eval_experts.csv, then eval.json (last: its presence marks a finished evaluation)."""
    from alphaq.atomic import write_json, write_with

    out.mkdir(parents=True, exist_ok=True)
    write_with(out / EVAL_TENSORS_CSV, lambda p: tensors.to_csv(p, index=False))
    write_with(out / EVAL_EXPERTS_CSV, lambda p: experts.to_csv(p, index=False))
    write_json(out / EVAL_JSON, record)


__all__ = ["EvalOptions", "EvalResult", "divergence_record", "run_eval"]
