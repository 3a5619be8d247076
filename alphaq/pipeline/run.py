"""``alphaq run``: inspect -> plan -> quantize -> eval in one go, every page linked from an ``index.html``.

The run folder is laid out as every stage writes it alone, so ``alphaq report DIR`` rebuilds all pages:

* ``DIR/`` inspect (details, experts, spectra, inspect.json), plan (plan.json, plan_comparison.json,
  sweep.csv), eval (eval.json, eval_tensors.csv, eval_experts.csv) and their pages, plus ``index.html``;
* ``DIR/quantized/``: the quantized checkpoint, its quantize.json and quantize.html (and ``model_card.md``
  with ``--model-card``).

The eval stage loads the quantized checkpoint (:func:`alphaq.load_quantized`); for an architecture that loader
does not support yet it evaluates the plan by simulated quantization instead, and says so.

Re-running into the same folder redoes inspect and plan (deterministic, so the plan is identical), keeps a
finished quantized checkpoint of that same plan (and resumes an unfinished one), and refuses to overwrite the
checkpoint of another plan or quantizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.atomic import json_safe
from alphaq.errors import ConfigError
from alphaq.locking import locks_output
from alphaq.progress import ProgressFn
from alphaq.runfolder import PLAN_JSON, QUANTIZE_JSON, QUANTIZED_DIR

if TYPE_CHECKING:
    from alphaq.audit.run import InspectConfig
    from alphaq.evaluation.eval_run import EvalResult
    from alphaq.evaluation.options import EvalOptions
    from alphaq.planning.planner import PlanConfig

#: Budgets of the predicted-error sweep that plan.html shows for a run.
DEFAULT_SWEEP = ("2", "2.5", "3", "3.5", "4")
SWEEP_ALLOCATORS = ("alphaq", "uniform", "random")


@dataclass(frozen=True)
class RunConfig:
    """What ``alphaq run`` does besides the plan's own options.

    Attributes:
        plan: the :class:`alphaq.planning.planner.PlanConfig` (budget, widths, allocator, ...).
        inspect: the :class:`alphaq.audit.run.InspectConfig` (None: defaults).
        method: quantizer (None: the plan's error-model quantizer).
        device: where to quantize (``cpu`` or ``cuda``).
        evaluate: run the eval stage (needs the evaluation text).
        eval_options: :class:`alphaq.evaluation.options.EvalOptions` (None: defaults).
        text_file: evaluation text (None: WikiText-2 test from the data folder).
        calibration_text: text of the calibrated ``frequency`` allocator (the only one that needs data; None:
            the plan config's).
        sweep_budgets: budgets of plan.html's predicted-error sweep (empty: no sweep); they replace the plan
            config's, and the sweep compares :data:`SWEEP_ALLOCATORS`.
        model_card: write ``model_card.md`` next to the quantized checkpoint.
        render_pages: render every page and index.html at the end (off when a caller adds stages first).
    """

    plan: PlanConfig
    inspect: InspectConfig | None = None
    method: str | None = None
    device: str = "cpu"
    evaluate: bool = True
    eval_options: EvalOptions | None = None
    text_file: Path | None = None
    calibration_text: Path | None = None
    sweep_budgets: tuple[str, ...] = field(default=DEFAULT_SWEEP)
    model_card: bool = False
    render_pages: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")


@dataclass(frozen=True)
class PipelineResult:
    """What ``alphaq run`` wrote.

    Attributes:
        run_dir: the run folder.
        quantized_dir: the quantized checkpoint folder.
        pages: every page and file rendered (index.html last; empty without ``render_pages``).
        evaluation: the eval stage's :class:`~alphaq.evaluation.eval_run.EvalResult` (None when not evaluated).
        notes: what the run did differently from the plain pipeline, for the user.
    """

    run_dir: Path
    quantized_dir: Path
    pages: tuple[Path, ...]
    evaluation: EvalResult | None
    notes: tuple[str, ...] = ()

    @property
    def eval_record(self) -> Mapping[str, Any] | None:
        """The eval.json content (None when not evaluated)."""
        return self.evaluation.record if self.evaluation is not None else None


@locks_output("out_dir", "run")
def run_pipeline(
    model: str | Path | None, config: RunConfig, out_dir: str | Path, *, progress: ProgressFn | None = None
) -> PipelineResult:
    """Inspect, plan, quantize and evaluate a checkpoint into one run folder and render every page.

    Args:
        model: checkpoint folder (None: the bundled demo model).
        config: a :class:`RunConfig`.
        out_dir: the run folder (created).
        progress: ``progress(n, "stage: item", total)``; each stage restarts the total.

    Returns:
        A :class:`PipelineResult`.

    Raises:
        AlphaQError: any stage's error (missing data, bad checkpoint, infeasible budget, ...).
    """
    from alphaq.audit.run import InspectConfig, inspect, save_inspect
    from alphaq.planning.run import run_plan
    from alphaq.quantization.run import run_quantize
    from alphaq.report.run import render_run

    out = Path(out_dir)
    text = config.text_file
    if config.evaluate:  # fail before hours of work when the evaluation text is missing
        from alphaq.errors import AlphaQError
        from alphaq.evaluation import datasets

        text = Path(text) if text is not None else datasets.wikitext2_test()
        if not text.is_file():
            raise AlphaQError(f"{text}: text file not found; pass an existing --text-file or --no-eval")

    def stage(name: str) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda n, item, total: progress(n, f"{name}: {item}", total)

    _check_reuse(out, config)
    result = inspect(model, config.inspect or InspectConfig(), progress=stage("inspect"))
    save_inspect(result, out)
    plan_config = dataclasses.replace(
        config.plan,
        sweep_budgets=config.sweep_budgets,
        sweep_allocators=SWEEP_ALLOCATORS,
        calibration_text=config.calibration_text or config.plan.calibration_text,
    )
    run_plan(model, plan_config, out, progress=stage("plan"))
    quantized = out / QUANTIZED_DIR
    notes: list[str] = []
    if _finished_for_plan(quantized, out / PLAN_JSON, config.method):
        notes.append(f"{quantized} already holds the finished checkpoint of this plan; it was kept as it is")
    else:
        run_quantize(
            model, out / PLAN_JSON, quantized, method=config.method, device=config.device, progress=stage("quantize")
        )
    evaluation = None
    if config.evaluate:
        from alphaq.evaluation.eval_run import run_eval
        from alphaq.quantization.loading import EXPERT_LAYOUTS

        model_type = str(result.manifest["checkpoint"].get("model_type"))
        if model_type in EXPERT_LAYOUTS:
            evaluation = run_eval(
                model, out, quantized=quantized, text_file=text, options=config.eval_options, progress=stage("eval")
            )
        else:  # the packed loader does not know this architecture: measure the plan by simulation instead
            notes.append(
                f"load_quantized does not support model_type {model_type!r} yet, so the plan was evaluated "
                "by simulated quantization (the same weights, quantized and dequantized in place)"
            )
            evaluation = run_eval(
                model,
                out,
                plan_file=out / PLAN_JSON,
                text_file=text,
                options=config.eval_options,
                progress=stage("eval"),
            )
    pages = render_run(out, model_card=config.model_card) if config.render_pages else []
    return PipelineResult(
        run_dir=out, quantized_dir=quantized, pages=tuple(pages), evaluation=evaluation, notes=tuple(notes)
    )


def _check_reuse(out: Path, config: RunConfig) -> None:
    """Refuse, before any work, a re-run whose plan options differ from those of a finished checkpoint in ``out``.

    Raises:
        AlphaQError: ``out/quantized`` holds a finished checkpoint planned with other options or budget.
    """
    from alphaq.errors import AlphaQError
    from alphaq.planning.plan_file import load_plan
    from alphaq.planning.planner import options_record

    if not (out / QUANTIZED_DIR / QUANTIZE_JSON).is_file() or not (out / PLAN_JSON).is_file():
        return
    try:
        previous = load_plan(out / PLAN_JSON).provenance
        wanted = json_safe(options_record(config.plan))
        same = previous["options"] == wanted and previous["budget"]["given"] == config.plan.budget.text
    except (AlphaQError, KeyError, TypeError):
        same = False
    if not same:
        raise AlphaQError(
            f"{out} holds the quantized checkpoint of a run with another budget or plan options; "
            "choose another --out, or remove the folder to redo it"
        )


def _finished_for_plan(quantized: Path, plan_path: Path, method: str | None) -> bool:
    """Whether ``quantized`` holds a finished checkpoint of this very plan (a re-run then keeps it).

    Raises:
        AlphaQError: it holds the finished checkpoint of another plan or quantizer (never overwritten).
    """
    from alphaq.errors import AlphaQError
    from alphaq.planning.plan_file import load_plan
    from alphaq.quantization.manifest import read_manifest

    if not (quantized / QUANTIZE_JSON).is_file():
        return False
    done = read_manifest(quantized)
    try:
        fingerprint, done_method = done["plan"]["fingerprint"], done["options"]["method"]
    except (KeyError, TypeError) as error:
        raise AlphaQError(
            f"{quantized}/quantize.json lacks {error}; remove {quantized} or choose another --out"
        ) from error
    plan = load_plan(plan_path)
    wanted = method or (plan.provenance.get("options") or {}).get("quant_method") or "rtn"
    if fingerprint != plan.plan_fingerprint or done_method != wanted:
        raise AlphaQError(
            f"{quantized} holds the checkpoint of another plan or quantizer (plan {fingerprint[:12]}, "
            f"{done_method}); remove it or choose another --out"
        )
    return True


__all__ = ["DEFAULT_SWEEP", "PipelineResult", "RunConfig", "run_pipeline"]
