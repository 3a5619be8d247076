"""alphaq: data-free HT-SR audit and alpha-guided mixed-precision quantization of MoE LLMs.

The public face, one function per stage, each ``(model, config, out)`` (``model=None`` is the bundled demo MoE):

- :func:`inspect` — per-matrix and per-expert HT-SR metrics (:class:`InspectConfig`);
- :func:`plan` — per-expert bit-widths under a budget (:class:`PlanConfig`);
- :func:`quantize` — the plan executed into a packed checkpoint (:class:`QuantizeConfig`);
- :func:`evaluate` — perplexity and plan verification (:class:`EvalConfig`);
- :func:`run` — all four into one run folder with every report page (:class:`RunConfig`);
- :func:`load_quantized` — ``(model, tokenizer)`` whose routed experts run from the packed weights.

Helpers: :func:`demo_model_path`, :func:`load_model`, :func:`open_checkpoint`, :func:`save_inspect`. Everything
is imported lazily so ``import alphaq`` (and ``alphaq --help``) stays fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from alphaq._version import __version__

if TYPE_CHECKING:
    from alphaq.audit.run import InspectConfig, InspectResult
    from alphaq.evaluation.options import EvalConfig
    from alphaq.pipeline.run import PipelineResult, RunConfig
    from alphaq.planning.planner import PlanConfig
    from alphaq.planning.run import PlanStageResult
    from alphaq.quantization.config import QuantizeConfig
    from alphaq.quantization.run import QuantizeResult

PathLike = str | os.PathLike[str]

_LAZY = {
    "InspectConfig": ("alphaq.audit.run", "InspectConfig"),
    "InspectResult": ("alphaq.audit.run", "InspectResult"),
    "save_inspect": ("alphaq.audit.run", "save_inspect"),
    "PlanConfig": ("alphaq.planning.planner", "PlanConfig"),
    "QuantizeConfig": ("alphaq.quantization.config", "QuantizeConfig"),
    "EvalConfig": ("alphaq.evaluation.options", "EvalConfig"),
    "EvalOptions": ("alphaq.evaluation.options", "EvalOptions"),
    "RunConfig": ("alphaq.pipeline.run", "RunConfig"),
    "demo_model_path": ("alphaq.zoo.demo", "demo_model_path"),
    "load_model": ("alphaq.load.model", "load_model"),
    "open_checkpoint": ("alphaq.load", "open_checkpoint"),
    "load_quantized": ("alphaq.quantization.loading", "load_quantized"),
}

__all__ = ["__version__", "evaluate", "inspect", "plan", "quantize", "run", *_LAZY]


def inspect(model: PathLike | None = None, config: InspectConfig | None = None, out: PathLike | None = None, *,
            pattern_file: PathLike | None = None, progress: Any = None) -> InspectResult:
    """HT-SR metrics of every matrix and a per-expert quality ranking, without data.

    Args:
        model: checkpoint folder (``None``: the bundled demo MoE).
        config: :class:`InspectConfig` (``None``: ww fit, float32, cpu, every matrix).
        out: run folder to save into (``details.csv``, ``experts.csv``, ``spectra.npz``, ``inspect.json``);
            ``None`` saves nothing.
        pattern_file: JSON tensor patterns for an architecture the table does not know.
        progress: ``progress(advance, item, total)``.

    Returns:
        The :class:`InspectResult` (row tables with ``details`` / ``experts`` DataFrame views, ``manifest``).
    """
    from alphaq.audit.run import inspect as inspect_checkpoint
    from alphaq.audit.run import save_inspect

    from alphaq.locking import output_lock

    if out is None:
        return inspect_checkpoint(model, config, pattern_file=pattern_file, progress=progress)
    with output_lock(out, "inspect"):
        result = inspect_checkpoint(model, config, pattern_file=pattern_file, progress=progress)
        save_inspect(result, out)
    return result


def plan(model: PathLike | None = None, config: PlanConfig | None = None, out: PathLike = "alphaq-run", *,
         progress: Any = None, **stage_options: Any) -> PlanStageResult:
    """Per-expert bit-widths under a budget, minimising the alpha-weighted quantization error.

    Args:
        model: checkpoint folder (``None``: the bundled demo MoE).
        config: :class:`PlanConfig` (``None``: 3.5 bits, widths 2/3/4/8, the alphaq allocator).
        out: run folder (``plan.json``, ``plan_comparison.json``, ``sweep.csv``); an inspect run of the same
            checkpoint there is reused.
        progress: ``progress(advance, item, total)``.
        **stage_options: the rest of :func:`alphaq.planning.run.run_plan` (``sweep_budgets``,
            ``calibration_text``, ``inspect_dir``, ``pattern_file``, ...).

    Returns:
        The :class:`~alphaq.planning.run.PlanStageResult` (plan, layer comparison, sweep, run folder).
    """
    from alphaq.planning.planner import PlanConfig
    from alphaq.planning.run import run_plan

    return run_plan(model, config or PlanConfig(), out, progress=progress, **stage_options)


def quantize(model: PathLike | None, config: QuantizeConfig, out: PathLike, *, progress: Any = None) -> QuantizeResult:
    """Execute a plan: a packed, resumable safetensors checkpoint and its ``quantize.json``.

    Args:
        model: the checkpoint the plan was made for (``None``: the bundled demo MoE).
        config: :class:`QuantizeConfig` (the plan file, quantizer, device).
        out: the quantized checkpoint folder (an unfinished run there is resumed).
        progress: ``progress(advance, item, total)``.

    Returns:
        The :class:`~alphaq.quantization.run.QuantizeResult`.
    """
    from alphaq.quantization.run import run_quantize

    return run_quantize(model, config.plan, out, method=config.method, device=config.device, progress=progress,
                        zero_points=config.zero_points)


def evaluate(model: PathLike | None = None, config: EvalConfig | None = None, out: PathLike | None = None, *,
             progress: Any = None) -> dict[str, Any]:
    """Standard-protocol perplexity of the original model, a quantized checkpoint or a simulated plan,
    with the plan verified tensor by tensor and the routing counted.

    Args:
        model: the original checkpoint folder (``None``: the bundled demo, or the checkpoint recorded in the
            quantized folder's ``quantize.json``).
        config: :class:`EvalConfig` (``None``: the original model on WikiText-2 test).
        out: run folder for ``eval.json``, ``eval_tensors.csv``, ``eval_experts.csv`` (``None``: nothing written).
        progress: ``progress(windows, label, total)``.

    Returns:
        The ``eval.json`` record.
    """
    from alphaq.evaluation.eval_run import run_eval
    from alphaq.evaluation.options import EvalConfig

    cfg = config or EvalConfig()
    return run_eval(model, out, quantized=cfg.quantized, plan_file=cfg.plan, text_file=cfg.text_file,
                    options=cfg.options, progress=progress)


def run(model: PathLike | None = None, config: RunConfig | None = None, out: PathLike = "alphaq-run", *,
        progress: Any = None) -> PipelineResult:
    """inspect -> plan -> quantize -> evaluate into one run folder, and every report page with ``index.html``.

    Args:
        model: checkpoint folder (``None``: the bundled demo MoE).
        config: :class:`RunConfig` (``None``: a 3.5-bit alphaq plan, rtn, evaluated on WikiText-2 test).
        out: the run folder.
        progress: ``progress(advance, "stage: item", total)``.

    Returns:
        The :class:`~alphaq.pipeline.run.PipelineResult`.
    """
    from alphaq.pipeline.run import RunConfig, run_pipeline
    from alphaq.planning.planner import PlanConfig

    return run_pipeline(model, config or RunConfig(plan=PlanConfig()), out, progress=progress)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'alphaq' has no attribute {name!r}")
