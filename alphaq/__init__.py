"""alphaq: data-free HT-SR audit and alpha-guided mixed-precision quantization of MoE LLMs.

The public face, one function per stage, each ``(model, config, out)`` (``model=None`` is the bundled demo MoE):

- :func:`inspect` — per-matrix and per-expert HT-SR metrics (:class:`InspectConfig`);
- :func:`plan` — per-expert bit-widths under a budget (:class:`PlanConfig`);
- :func:`quantize` — the plan executed into a packed checkpoint (:class:`QuantizeConfig`);
- :func:`evaluate` — perplexity and plan verification (:class:`EvalConfig`);
- :func:`compare` — plans per (budget, allocator), each one's perplexity (:class:`CompareConfig`);
- :func:`run` — all four into one run folder with every report page (:class:`RunConfig`);
- :func:`load_quantized` — ``(model, tokenizer)`` whose routed experts run from the packed weights.

Each returns a result object (:class:`InspectResult`, :class:`PlanStageResult`, :class:`QuantizeResult`,
:class:`EvalResult`, the compare table, :class:`PipelineResult`) and takes ``progress(advance, item, total)``
(:data:`alphaq.progress.ProgressFn`).

Helpers: :func:`demo_model_path`, :func:`load_model`, :func:`open_checkpoint`, :func:`save_inspect`. Everything
is imported lazily so ``import alphaq`` (and ``alphaq --help``) stays fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from alphaq._version import __version__

if TYPE_CHECKING:
    import pandas as pd

    from alphaq.audit.run import InspectConfig, InspectResult
    from alphaq.evaluation.eval_run import EvalResult
    from alphaq.evaluation.options import CompareConfig, EvalConfig
    from alphaq.pipeline.run import PipelineResult, RunConfig
    from alphaq.planning.planner import PlanConfig
    from alphaq.planning.run import PlanStageResult
    from alphaq.progress import ProgressFn
    from alphaq.quantization.config import QuantizeConfig
    from alphaq.quantization.run import QuantizeResult

PathLike = str | os.PathLike[str]

_LAZY = {
    "InspectConfig": ("alphaq.audit.run", "InspectConfig"),
    "InspectResult": ("alphaq.audit.run", "InspectResult"),
    "save_inspect": ("alphaq.audit.run", "save_inspect"),
    "PlanConfig": ("alphaq.planning.planner", "PlanConfig"),
    "PlanStageResult": ("alphaq.planning.run", "PlanStageResult"),
    "QuantizeConfig": ("alphaq.quantization.config", "QuantizeConfig"),
    "QuantizeResult": ("alphaq.quantization.run", "QuantizeResult"),
    "GptqOptions": ("alphaq.quantization.gptq", "GptqOptions"),
    "EvalConfig": ("alphaq.evaluation.options", "EvalConfig"),
    "EvalOptions": ("alphaq.evaluation.options", "EvalOptions"),
    "EvalResult": ("alphaq.evaluation.eval_run", "EvalResult"),
    "CompareConfig": ("alphaq.evaluation.options", "CompareConfig"),
    "RunConfig": ("alphaq.pipeline.run", "RunConfig"),
    "PipelineResult": ("alphaq.pipeline.run", "PipelineResult"),
    "demo_model_path": ("alphaq.zoo.demo", "demo_model_path"),
    "load_model": ("alphaq.load.model", "load_model"),
    "open_checkpoint": ("alphaq.load", "open_checkpoint"),
    "load_quantized": ("alphaq.quantization.loading", "load_quantized"),
}

__all__ = ["__version__", "compare", "evaluate", "inspect", "plan", "quantize", "run", *_LAZY]


def inspect(
    model: PathLike | Any | None = None,
    config: InspectConfig | None = None,
    out: PathLike | None = None,
    *,
    pattern_file: PathLike | None = None,
    progress: ProgressFn | None = None,
    model_config: Any = None,
) -> InspectResult:
    """HT-SR metrics of every matrix and a per-expert quality ranking, without data.

    Args:
        model: checkpoint folder or Hub model id (``None``: the bundled demo MoE); or a loaded
            ``transformers.PreTrainedModel``, or a state dict (name -> ``torch.Tensor``), read in memory: the same
            metrics as its saved folder, tensors named as in memory (transformers 5 fuses the experts:
            ``mlp.experts.gate_up_proj[3].gate``).
        config: :class:`InspectConfig` (``None``: ww fit, float32, cpu, every matrix).
        out: run folder to save into (``details.csv``, ``experts.csv``, ``spectra.npz``, ``inspect.json``);
            ``None`` saves nothing.
        pattern_file: JSON tensor patterns for an architecture the table does not know.
        progress: ``progress(advance, item, total)``.
        model_config: for a state dict, its model config (dict or ``PretrainedConfig``; its ``model_type`` picks
            the tensor patterns). Without it the names alone must tell the architecture, else a ConfigError.

    Returns:
        The :class:`InspectResult` (row tables with ``details`` / ``experts`` DataFrame views, ``manifest``).
    """
    from alphaq.audit.run import inspect as inspect_checkpoint
    from alphaq.audit.run import save_inspect
    from alphaq.locking import output_lock

    options = dict(pattern_file=pattern_file, progress=progress, model_config=model_config)
    if out is None:
        return inspect_checkpoint(model, config, **options)
    with output_lock(out, "inspect"):
        result = inspect_checkpoint(model, config, **options)
        save_inspect(result, out)
    return result


def plan(
    model: PathLike | None = None,
    config: PlanConfig | None = None,
    out: PathLike = "alphaq-run",
    *,
    progress: ProgressFn | None = None,
) -> PlanStageResult:
    """Per-expert bit-widths under a budget, minimising the alpha-weighted quantization error.

    Args:
        model: checkpoint folder (``None``: the bundled demo MoE).
        config: :class:`PlanConfig` (``None``: 3.5 bits, widths 2/3/4/8, the alphaq allocator): the allocation
            and the stage's inputs (``sweep_budgets``, ``calibration_text``, ``inspect_dir``, ``pattern_file``).
        out: run folder (``plan.json``, ``plan_comparison.json``, ``sweep.csv``); an inspect run of the same
            checkpoint there is reused.
        progress: ``progress(advance, item, total)``.

    Returns:
        The :class:`~alphaq.planning.run.PlanStageResult` (plan, layer comparison, sweep, run folder).
    """
    from alphaq.planning.planner import PlanConfig
    from alphaq.planning.run import run_plan

    return run_plan(model, config or PlanConfig(), out, progress=progress)


def quantize(
    model: PathLike | None, config: QuantizeConfig, out: PathLike, *, progress: ProgressFn | None = None
) -> QuantizeResult:
    """Execute a plan: a packed, resumable safetensors checkpoint and its ``quantize.json``.

    Args:
        model: the checkpoint the plan was made for (``None``: the bundled demo MoE).
        config: :class:`QuantizeConfig`: the plan file, quantizer (``gptq`` with its ``calibration_text`` and
            :class:`GptqOptions`), device, zero points and backend (``local`` or ``ray`` with ``ray_address``).
        out: the quantized checkpoint folder (an unfinished run there is resumed).
        progress: ``progress(advance, item, total)``.

    Returns:
        The :class:`~alphaq.quantization.run.QuantizeResult`.
    """
    from alphaq.quantization.run import quantize_with_config

    return quantize_with_config(model, config, out, progress=progress)


def evaluate(
    model: PathLike | None = None,
    config: EvalConfig | None = None,
    out: PathLike | None = None,
    *,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Standard-protocol perplexity of the original model, a quantized checkpoint or a simulated plan,
    with the plan verified tensor by tensor and the routing counted.

    Args:
        model: the original checkpoint folder (``None``: the bundled demo, or the checkpoint recorded in the
            quantized folder's ``quantize.json``).
        config: :class:`EvalConfig` (``None``: the original model on WikiText-2 test).
        out: run folder for ``eval.json``, ``eval_tensors.csv``, ``eval_experts.csv`` (``None``: nothing written).
        progress: ``progress(windows, label, total)``.

    Returns:
        The :class:`~alphaq.evaluation.eval_run.EvalResult` (``ppl``, ``baseline_ppl``, ``ppl_increase``, ...;
        ``record`` is the ``eval.json`` content).
    """
    from alphaq.evaluation.eval_run import run_eval
    from alphaq.evaluation.options import EvalConfig

    cfg = config or EvalConfig()
    return run_eval(
        model,
        out,
        quantized=cfg.quantized,
        plan_file=cfg.plan,
        text_file=cfg.text_file,
        options=cfg.options,
        progress=progress,
    )


def compare(
    model: PathLike | None = None,
    config: CompareConfig | None = None,
    out: PathLike = "alphaq-run",
    *,
    progress: ProgressFn | None = None,
) -> pd.DataFrame:
    """Plan the checkpoint for every (budget, allocator), apply each plan by simulated quantization and measure
    its perplexity on the same windows, with paired-bootstrap intervals.

    Args:
        model: checkpoint folder (``None``: the bundled demo MoE).
        config: :class:`CompareConfig` (``None``: budgets 2.5/3/3.5; alphaq, uniform, frequency, random).
        out: folder for ``compare.csv``, ``compare.json``, ``expert_verification.csv`` and ``plans/``.
        progress: ``progress(1, item, total)`` per plan evaluated.

    Returns:
        The results table (``compare.csv``), first row the original model.
    """
    from alphaq.evaluation.compare import run_compare
    from alphaq.evaluation.options import CompareConfig

    return run_compare(model, config or CompareConfig(), out, progress=progress)


def run(
    model: PathLike | None = None,
    config: RunConfig | None = None,
    out: PathLike = "alphaq-run",
    *,
    progress: ProgressFn | None = None,
) -> PipelineResult:
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
