"""Zero-/few-shot task accuracy through lm-evaluation-harness (optional extra ``alphaq[lmeval]``).

The original checkpoint (:func:`alphaq.load.model.load_model`) or a quantized one
(:func:`alphaq.quantization.loading.load_quantized`) is loaded by alphaq, wrapped in lm-eval's Hugging Face model
class ``HFLM`` and run with ``lm_eval.simple_evaluate``. The task data sets are fetched by lm-eval itself
(network on first use, then its cache). Written into ``out_dir``: ``lmeval.json`` (one row per task and
metric with its stderr, plus provenance).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError, ConfigError
from alphaq.runfolder import LMEVAL_JSON

#: The zero-shot suite of the GPTQ/AWQ/AlphaQ papers; ``alphaq lmeval --tasks`` defaults to it.
DEFAULT_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande")
#: Metrics listed first, in this order, when a task reports them; any other numeric metric follows.
PREFERRED_METRICS = ("acc", "acc_norm")
_MISSING = "lm-evaluation-harness is not installed; pip install 'alphaq[lmeval]'"


@dataclass(frozen=True)
class LMEvalConfig:
    """Options of one lm-eval run.

    Attributes:
        tasks: lm-eval task or group names.
        num_fewshot: examples placed in context (0: zero-shot).
        limit: evaluate at most this many examples per task (None: all; for quick checks only).
        batch_size: requests per forward pass.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    """

    tasks: tuple[str, ...]
    num_fewshot: int = 0
    limit: int | None = None
    batch_size: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.tasks or any(not t for t in self.tasks):
            raise ConfigError("no lm-eval task given; pass --tasks arc_easy,hellaswag,...")
        if self.num_fewshot < 0:
            raise ConfigError(f"num_fewshot must be >= 0, got {self.num_fewshot}; pass --num-fewshot 0 or more")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}; pass a positive --limit or leave it out")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}; pass --batch-size 1 or more")


def parse_tasks(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """Task names from a comma-separated string or a sequence: stripped, empty ones and repeats dropped.

    Args:
        tasks: ``"arc_easy, hellaswag"`` or ``["arc_easy", "hellaswag"]``.

    Returns:
        The names in order.
    """
    items = tasks.split(",") if isinstance(tasks, str) else [p for t in tasks for p in str(t).split(",")]
    return tuple(dict.fromkeys(t.strip() for t in items if t.strip()))


def _number(value: Any) -> float:
    """A metric value as a float; NaN for lm-eval's ``"N/A"`` and anything not numeric."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def metric_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, metric, filter) of an lm-eval 0.4 results dict.

    lm-eval reports ``results[task]`` as ``{"alias": ..., "acc,none": 0.5, "acc_stderr,none": 0.05, ...}``.

    Args:
        results: the ``"results"`` entry of ``simple_evaluate``'s output.

    Returns:
        Rows ``{"task", "metric", "filter", "value", "stderr"}``; :data:`PREFERRED_METRICS` first, stderr NaN
        where lm-eval gives none.
    """
    rows: list[dict[str, Any]] = []
    for task, metrics in results.items():
        if not isinstance(metrics, Mapping):
            continue
        found: list[tuple[str, str, float, float]] = []
        for key, value in metrics.items():
            metric, comma, filt = str(key).partition(",")
            if not comma:  # lm-eval's metric keys are "metric,filter"; "alias", "name", "sample_len" are not
                continue
            value_f = _number(value)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if metric.endswith("_stderr") or (not numeric and math.isnan(value_f)):
                continue
            stderr = _number(metrics.get(f"{metric}_stderr,{filt}"))
            found.append((metric, filt, value_f, stderr))
        order = {m: i for i, m in enumerate(PREFERRED_METRICS)}
        found.sort(key=lambda f: order.get(f[0], len(order)))  # stable: lm-eval's order after the preferred ones
        rows.extend({"task": str(task), "metric": m, "filter": f, "value": v, "stderr": s} for m, f, v, s in found)
    return rows


def _import_lm_eval() -> tuple[Any, Any]:
    """``(lm_eval, HFLM)``, or a one-line AlphaQError naming the fix."""
    import importlib

    try:
        lm_eval = importlib.import_module("lm_eval")
        hflm = importlib.import_module("lm_eval.models.huggingface").HFLM
    except ImportError as exc:
        if (exc.name or "lm_eval").split(".")[0] == "lm_eval":
            raise AlphaQError(_MISSING) from exc
        raise AlphaQError(
            f"lm-evaluation-harness cannot be imported (missing module {exc.name}); pip install 'alphaq[lmeval]'"
        ) from exc
    return lm_eval, hflm


def _lm_eval_version(lm_eval: Any) -> str:
    version = getattr(lm_eval, "__version__", None)
    if version:
        return str(version)
    from importlib import metadata

    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return "unknown"


def run_lm_eval(
    model: str | os.PathLike[str] | None,
    *,
    quantized: str | os.PathLike[str] | None = None,
    tasks: Sequence[str],
    num_fewshot: int = 0,
    limit: int | None = None,
    batch_size: int = 1,
    device: str = "cpu",
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run lm-eval tasks on the original model or a quantized checkpoint; write ``lmeval.json``.

    Args:
        model: checkpoint folder (None: the bundled demo model); ignored with ``quantized``.
        quantized: a quantized checkpoint folder (``alphaq quantize --out``).
        tasks: lm-eval task or group names (``["arc_easy", "hellaswag"]``; comma-separated items are split).
        num_fewshot: examples placed in context (0: zero-shot).
        limit: at most this many examples per task (None: all).
        batch_size: requests per forward pass.
        device: where the model runs.
        out_dir: write ``lmeval.json`` there when given.

    Returns:
        The record written to ``lmeval.json``: ``rows`` (task, metric, filter, value, stderr), ``source``,
        ``options``, ``versions``, ``n_samples``, ``task_versions``.

    Raises:
        AlphaQError: lm-eval is not installed, a checkpoint cannot be loaded, or lm-eval fails (an unknown task,
            a task data set it cannot download); ConfigError: bad options.
    """
    import datetime as _dt

    from alphaq._version import __version__
    from alphaq.atomic import write_json

    config = LMEvalConfig(
        parse_tasks(tasks), num_fewshot=num_fewshot, limit=limit, batch_size=batch_size, device=device
    )
    lm_eval, hflm = _import_lm_eval()
    from alphaq.runfolder import record_path  # relative to the run folder, the bundled model by name

    if quantized is not None:
        from alphaq.quantization.loading import load_quantized

        lm, tokenizer = load_quantized(quantized, device=config.device)
        source = {"kind": "quantized", "model": None, "quantized": record_path(quantized, base=out_dir)}
    else:
        from alphaq.load.model import load_model
        from alphaq.zoo.demo import demo_model_path

        path = Path(model) if model is not None else demo_model_path()
        lm, tokenizer = load_model(path, device=config.device)
        source = {"kind": "original", "model": record_path(path, base=out_dir), "quantized": None}

    wrapped = hflm(pretrained=lm, tokenizer=tokenizer, batch_size=config.batch_size)
    try:
        output = lm_eval.simple_evaluate(
            model=wrapped, tasks=list(config.tasks), num_fewshot=config.num_fewshot, limit=config.limit
        )
    except (ValueError, KeyError, OSError) as exc:  # unknown task, task data that cannot be fetched
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AlphaQError(
            f"lm-eval failed on tasks {','.join(config.tasks)} ({detail}); check the task names "
            "(lm-eval ls tasks) and that their data sets can be downloaded"
        ) from exc
    if not isinstance(output, Mapping) or not isinstance(output.get("results"), Mapping):
        raise AlphaQError("lm-eval returned no results; run it in a single process (no accelerate launch)")

    n_samples = {
        str(task): dict(counts)
        for task, counts in (output.get("n-samples") or {}).items()
        if isinstance(counts, Mapping)
    }
    record: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"alphaq": __version__, "lm_eval": _lm_eval_version(lm_eval)},
        "source": source,
        "options": {
            "tasks": list(config.tasks),
            "num_fewshot": config.num_fewshot,
            "limit": config.limit,
            "batch_size": config.batch_size,
            "device": config.device,
        },
        "rows": metric_rows(output["results"]),
        "n_samples": n_samples,
        "task_versions": {str(k): v for k, v in (output.get("versions") or {}).items()},
    }
    if out_dir is not None:
        write_json(Path(out_dir) / LMEVAL_JSON, record)
    return record


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`metric_rows` rows (``task  metric  value  ± stderr``).

    Args:
        rows: the rows.

    Returns:
        The table, one line per row after a header.
    """

    def cell(v: Any) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.4f}"

    lines = [("task", "metric", "value", "stderr")]
    lines += [
        (
            str(r["task"]),
            str(r["metric"]) + ("" if r.get("filter") in (None, "none") else f" ({r['filter']})"),
            cell(r["value"]),
            cell(r["stderr"]),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}".rstrip() for a, b, c, d in lines
    )


__all__ = ["DEFAULT_TASKS", "LMEvalConfig", "format_rows", "metric_rows", "parse_tasks", "run_lm_eval"]
