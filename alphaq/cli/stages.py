"""The pipeline's commands: ``inspect``, ``plan``, ``quantize`` and ``run`` (all of them at once).

Each parses its options, calls one library function and prints a summary; ``plan`` and ``run`` share every plan
option through the aliases of :mod:`alphaq.cli.common`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alphaq.cli.common import (
    DEFAULT_OUT,
    PLAN_DEFAULTS,
    AllocatorOpt,
    BackendOpt,
    BudgetOpt,
    CalibrationTextOpt,
    ErrorModelOpt,
    GammaOpt,
    GranularityOpt,
    GroupSizeOpt,
    KeepOpt,
    MaxBitsOpt,
    MethodOpt,
    MinBitsOpt,
    ModelArg,
    OutOpt,
    PatternFileOpt,
    RayAddressOpt,
    SeedOpt,
    SolverOpt,
    TargetOpt,
    WidthsOpt,
    fail,
    plan_config,
    progress_bar,
    split_list,
    user_errors,
)
from alphaq.errors import AlphaQError

D = PLAN_DEFAULTS


def parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    """``"0,1,4-7"`` -> ``(0, 1, 4, 5, 6, 7)``; ``None`` stays ``None`` (exits with one line on bad input)."""
    if text is None:
        return None
    try:
        values: list[int] = []
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                values.extend(range(int(lo), int(hi) + 1))
            elif part.strip():
                values.append(int(part))
    except ValueError:
        fail(AlphaQError(f"{option} {text!r} is not a list of integers; pass e.g. {option} 0,1,4-7"))
    return tuple(values)


def inspect(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    fit: Annotated[str, typer.Option(help="Power-law estimator: ww (weightwatcher's) or hill (AlphaQ paper).")] = "ww",
    layers: Annotated[str | None, typer.Option(help="Only these layers, e.g. 0,1,4-7.")] = None,
    experts_only: Annotated[bool, typer.Option("--experts-only", help="Analyse expert matrices only.")] = False,
    device: Annotated[str, typer.Option(help="Device for the SVDs: cpu or cuda.")] = "cpu",
    float64: Annotated[bool, typer.Option("--float64", help="Eigenvalues in float64 (exact; slower).")] = False,
    tail_test: Annotated[
        bool,
        typer.Option(
            help="Power law vs lognormal, exponential and truncated power-law tails, each matrix (powerlaw; 0.9 s "
            "for a 2048x4096 matrix): R_*, p_* columns."
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="alphaq (its own eigenvalues and fit) or weightwatcher (weightwatcher computes every matrix, float64 on "
            "the CPU, several times slower: a cross-check of alphaq's numbers)."
        ),
    ] = "alphaq",
    farms: Annotated[
        bool, typer.Option("--farms", help="Fit pooled ESDs of random 128x128 blocks (AlphaQ's FARMS).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the FARMS block draw.")] = 0,
    pattern_file: PatternFileOpt = None,
    html: Annotated[bool, typer.Option(help="Write inspect.html.")] = True,
    backend: BackendOpt = "local",
    ray_address: RayAddressOpt = None,
) -> None:
    """Per-matrix and per-expert HT-SR metrics, a data-free quality ranking, and an HTML report."""
    from alphaq.audit.run import InspectConfig, save_inspect
    from alphaq.audit.run import inspect as run_inspect
    from alphaq.cli.summaries import print_inspect_summary
    from alphaq.distributed import backend_session
    from alphaq.locking import output_lock

    with user_errors(), output_lock(out, "inspect"):
        config = InspectConfig(
            fit=fit,
            dtype="float64" if float64 else "float32",
            device=device,  # type: ignore[arg-type]
            layers=parse_ints(layers, "--layers"),
            experts_only=experts_only,
            tail_test=tail_test,
            farms=farms,
            seed=seed,
            engine=engine,
        )  # type: ignore[arg-type]
        with backend_session(backend, ray_address) as compute, progress_bar("inspect") as advance:
            result = run_inspect(model, config, pattern_file=pattern_file, progress=advance, backend=compute)
        save_inspect(result, out)
        if html:
            from alphaq.report.inspect_page import render_inspect

            render_inspect(out)
    print_inspect_summary(result, out)


def plan(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    budget: BudgetOpt = D["budget"],
    widths: WidthsOpt = D["widths"],
    group_size: GroupSizeOpt = D["group_size"],
    granularity: GranularityOpt = D["granularity"],
    allocator: AllocatorOpt = D["allocator"],
    gamma: GammaOpt = D["gamma"],
    error_model: ErrorModelOpt = D["error_model"],
    quant_method: MethodOpt = D["method"],
    min_bits: MinBitsOpt = None,
    max_bits: MaxBitsOpt = None,
    keep: KeepOpt = D["keep"],
    solver: SolverOpt = D["solver"],
    seed: SeedOpt = D["seed"],
    target: TargetOpt = "alphaq",
    sweep: Annotated[str | None, typer.Option(help="Budgets of a predicted-error sweep, e.g. 2,2.5,3,3.5,4.")] = None,
    sweep_allocators: Annotated[
        str, typer.Option(help="Allocators compared in the sweep.")
    ] = "alphaq,uniform,random,alpha_ratio,weight_norm",
    calibration_text: CalibrationTextOpt = None,
    inspect_dir: Annotated[
        Path | None, typer.Option(help="Reuse this inspect run (default: the run folder's, if of the same model).")
    ] = None,
    pattern_file: PatternFileOpt = None,
    importance: Annotated[
        str,
        typer.Option(
            help="--target gguf: error weighting: fisher (default: the model's self-Fisher, no data), alpha (AlphaQ), "
            "fisher_alpha, kurtosis, absolute, uniform, relative."
        ),
    ] = "fisher",
    fisher_sequences: Annotated[
        int, typer.Option(help="--target gguf: sequences the model writes for its self-Fisher.")
    ] = 64,
    html: Annotated[bool, typer.Option(help="Write plan.html.")] = True,
) -> None:
    """Optimal per-expert bit-widths for a memory budget: plan.json, preview of memory and predicted error."""
    import dataclasses

    from alphaq.cli.summaries import print_plan_summary
    from alphaq.planning.run import run_plan

    with user_errors():
        config = dataclasses.replace(
            plan_config(
                budget=budget,
                widths=widths,
                group_size=group_size,
                granularity=granularity,
                allocator=allocator,
                gamma=gamma,
                method=quant_method,
                error_model=error_model,
                min_bits=min_bits,
                max_bits=max_bits,
                keep=keep,
                solver=solver,
                seed=seed,
                target=target,
            ),
            sweep_budgets=split_list(sweep),
            sweep_allocators=split_list(sweep_allocators),
            calibration_text=calibration_text,
            inspect_dir=inspect_dir,
            pattern_file=pattern_file,
            importance=importance,
            fisher_sequences=fisher_sequences,
        )
        with progress_bar("plan") as advance:
            result = run_plan(model, config, out, progress=advance)
        if html:
            from alphaq.report.plan_page import render_plan

            render_plan(out)
    print_plan_summary(result)


def quantize(
    plan: Annotated[Path, typer.Option("--plan", help="plan.json written by alphaq plan for this model.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="New folder for the quantized checkpoint (an unfinished run there is resumed)."
        ),
    ],
    model: ModelArg = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="rtn | rtn_clip | hqq | gptq (calibrated: needs --calibration-text; default: the plan's quantizer, else rtn)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="Where to quantize: cpu or cuda.")] = "cpu",
    zero_points: Annotated[
        str,
        typer.Option(
            "--zero-points",
            help="float (the quantizer's own) or integer (rounded: the values a compressed-tensors export of the plan holds).",
        ),
    ] = "float",
    html: Annotated[bool, typer.Option(help="Write quantize.html.")] = True,
    backend: BackendOpt = "local",
    ray_address: RayAddressOpt = None,
    calibration_text: Annotated[
        Path | None, typer.Option("--calibration-text", help="--method gptq: text its Hessians are measured on.")
    ] = None,
    calibration_windows: Annotated[
        int,
        typer.Option(
            "--calibration-windows", help="--method gptq: windows of the model's context taken from the text."
        ),
    ] = 128,
) -> None:
    """Execute a plan: a quantized safetensors checkpoint (streamed shard by shard, resumable) and quantize.json."""
    import time

    from alphaq.cli.summaries import print_quantize_summary
    from alphaq.quantization.config import QuantizeConfig
    from alphaq.quantization.run import quantize_with_config

    with user_errors():
        config = QuantizeConfig(
            plan=plan,
            method=method,
            device=device,
            zero_points=zero_points,
            calibration_text=calibration_text,
            calibration_windows=calibration_windows,
            backend=backend,
            ray_address=ray_address,
        )
        with progress_bar("quantize") as advance:
            start, done = time.perf_counter(), [0]

            def count(nbytes: int) -> None:
                done[0] += nbytes

            def tick(n: int, item: str, total: int) -> None:
                rate = done[0] / max(time.perf_counter() - start, 1e-9) / 1e6
                advance(n, f"{item} | {rate:,.1f} MB/s", total)

            try:
                result = quantize_with_config(model, config, out, progress=tick, on_bytes=count)
            except KeyboardInterrupt:
                typer.echo(
                    f"interrupted: the shards finished in {out} are kept; rerun the same command to resume", err=True
                )
                raise typer.Exit(code=130) from None
        if html:
            from alphaq.report.quantize_page import render_quantize

            render_quantize(out)
    print_quantize_summary(result)


def run(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    budget: BudgetOpt = D["budget"],
    widths: WidthsOpt = D["widths"],
    group_size: GroupSizeOpt = D["group_size"],
    granularity: GranularityOpt = D["granularity"],
    allocator: AllocatorOpt = D["allocator"],
    gamma: GammaOpt = D["gamma"],
    error_model: ErrorModelOpt = D["error_model"],
    method: MethodOpt = D["method"],
    min_bits: MinBitsOpt = None,
    max_bits: MaxBitsOpt = None,
    keep: KeepOpt = D["keep"],
    solver: SolverOpt = D["solver"],
    seed: SeedOpt = D["seed"],
    calibration_text: CalibrationTextOpt = None,
    device: Annotated[str, typer.Option(help="Where to quantize and evaluate: cpu or cuda.")] = "cpu",
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate perplexity (needs the text).")] = True,
    text_file: Annotated[
        Path | None, typer.Option(help="Evaluation text (default: WikiText-2 test from $ALPHAQ_DATA_DIR).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Fetch the evaluation text through the datasets package: wikitext2.")
    ] = None,
    max_windows: Annotated[int | None, typer.Option(help="Evaluate only the first N windows (default: all).")] = None,
    dtype: Annotated[
        str, typer.Option(help="Eval: dense weights and activations, float32 | bfloat16 | float16.")
    ] = "float32",
    model_card: Annotated[
        bool,
        typer.Option(
            "--model-card",
            help="Write model_card.md (Hugging Face model-card section) next to the quantized checkpoint.",
        ),
    ] = False,
) -> None:
    """inspect -> plan -> quantize -> eval in one run folder, with every page linked from index.html."""
    from alphaq.evaluation.options import EvalOptions
    from alphaq.pipeline.run import RunConfig, run_pipeline
    from alphaq.runfolder import INDEX_HTML

    with user_errors():
        config_plan = plan_config(
            budget=budget,
            widths=widths,
            group_size=group_size,
            granularity=granularity,
            allocator=allocator,
            gamma=gamma,
            method=method,
            error_model=error_model,
            min_bits=min_bits,
            max_bits=max_bits,
            keep=keep,
            solver=solver,
            seed=seed,
        )
        text = text_file
        if dataset is not None:
            from alphaq.evaluation.datasets import resolve_eval_text

            text = resolve_eval_text(text_file, dataset)
        config = RunConfig(
            plan=config_plan,
            method=method,
            device=device,
            evaluate=evaluate,
            eval_options=EvalOptions(max_windows=max_windows, device=device, dtype=dtype),
            text_file=text,
            calibration_text=calibration_text,
            model_card=model_card,
        )
        with progress_bar("run") as advance:
            result = run_pipeline(model, config, out, progress=advance)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    record = result.eval_record
    if record is not None:
        from alphaq.cli.evaluate import print_eval_summary

        print_eval_summary(record, out, True)
    typer.echo(f"wrote {result.run_dir / INDEX_HTML}")


__all__ = ["inspect", "parse_ints", "plan", "quantize", "run"]
