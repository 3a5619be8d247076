"""The ``alphaq`` command line: thin wrappers that parse options, call one library function, write.

Every command takes MODEL as an optional argument (default: the bundled demo MoE) and writes into a
run folder (``--out``, default ``./alphaq-run``) that later stages and ``alphaq report`` read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from alphaq.cli.common import (
    DEFAULT_OUT,
    BudgetOpt,
    GammaOpt,
    GranularityOpt,
    GroupSizeOpt,
    ModelArg,
    OutOpt,
    WidthsOpt,
)
from alphaq.cli.common import fail as _fail
from alphaq.cli.common import progress_bar as _progress
from alphaq.cli.common import user_errors as _user_errors
from alphaq.errors import AlphaQError

app = typer.Typer(
    name="alphaq",
    help="Data-free HT-SR audit and alpha-guided mixed-precision quantization of MoE LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _parse_ints(text: Optional[str], option: str) -> Optional[tuple[int, ...]]:
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
        _fail(AlphaQError(f"{option} {text!r} is not a list of integers; pass e.g. {option} 0,1,4-7"))
    return tuple(values)


@app.command()
def inspect(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    fit: Annotated[str, typer.Option(help="Power-law estimator: ww (weightwatcher's) or hill (AlphaQ paper).")] = "ww",
    layers: Annotated[Optional[str], typer.Option(help="Only these layers, e.g. 0,1,4-7.")] = None,
    experts_only: Annotated[bool, typer.Option("--experts-only", help="Analyse expert matrices only.")] = False,
    device: Annotated[str, typer.Option(help="Device for the SVDs: cpu or cuda.")] = "cpu",
    float64: Annotated[bool, typer.Option("--float64", help="Eigenvalues in float64 (exact; slower).")] = False,
    tail_test: Annotated[bool, typer.Option(help="Power law vs lognormal test of each tail (powerlaw; ~1 s a matrix).")] = False,
    farms: Annotated[bool, typer.Option("--farms", help="Fit pooled ESDs of random 128x128 blocks (AlphaQ's FARMS).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the FARMS block draw.")] = 0,
    pattern_file: Annotated[Optional[Path], typer.Option(help="JSON tensor patterns for unknown architectures.")] = None,
    html: Annotated[bool, typer.Option(help="Write inspect.html.")] = True,
) -> None:
    """Per-matrix and per-expert HT-SR metrics, a data-free quality ranking, and an HTML report."""
    from alphaq.audit.run import InspectConfig, save_inspect
    from alphaq.audit.run import inspect as run_inspect

    with _user_errors():
        config = InspectConfig(fit=fit, dtype="float64" if float64 else "float32", device=device,  # type: ignore[arg-type]
                               layers=_parse_ints(layers, "--layers"), experts_only=experts_only, tail_test=tail_test,
                               farms=farms, seed=seed)
        with _progress("inspect") as advance:
            result = run_inspect(model, config, pattern_file=pattern_file, progress=advance)
        save_inspect(result, out)
        if html:
            from alphaq.report.inspect_page import render_inspect

            render_inspect(out)
    _print_inspect_summary(result, out)


@app.command()
def plan(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    budget: BudgetOpt = "3.5",
    widths: WidthsOpt = "2,3,4,8",
    group_size: GroupSizeOpt = 128,
    granularity: GranularityOpt = "expert",
    allocator: Annotated[str, typer.Option(help="alphaq | uniform | random | alpha_ratio | weight_norm | frequency.")] = "alphaq",
    gamma: GammaOpt = 1.0,
    error_model: Annotated[str, typer.Option(help="measured (quantize the weights) or analytic (Var(W) 2^-2b).")] = "measured",
    quant_method: Annotated[str, typer.Option(help="Quantizer of the measured error model: rtn | rtn_clip | hqq.")] = "rtn",
    min_bits: Annotated[Optional[str], typer.Option(help="Lower bounds: global and per layer, e.g. '2,0:4'.")] = None,
    max_bits: Annotated[Optional[str], typer.Option(help="Upper bounds, same form.")] = None,
    keep: Annotated[str, typer.Option(help="Widths of matrices outside the budget, e.g. attention=16,shared=8.")] = "",
    solver: Annotated[str, typer.Option(help="exact | lagrangian | auto.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the random allocator.")] = 0,
    sweep: Annotated[Optional[str], typer.Option(help="Budgets of a predicted-error sweep, e.g. 2,2.5,3,3.5,4.")] = None,
    sweep_allocators: Annotated[str, typer.Option(help="Allocators compared in the sweep.")] = "alphaq,uniform,random,alpha_ratio,weight_norm",
    calibration_text: Annotated[Optional[Path], typer.Option(help="Text for the frequency allocator (the only one that needs data).")] = None,
    inspect_dir: Annotated[Optional[Path], typer.Option(help="Reuse this inspect run (default: the run folder's, if of the same model).")] = None,
    pattern_file: Annotated[Optional[Path], typer.Option(help="JSON tensor patterns for unknown architectures.")] = None,
    html: Annotated[bool, typer.Option(help="Write plan.html.")] = True,
) -> None:
    """Optimal per-expert bit-widths for a memory budget: plan.json, preview of memory and predicted error."""
    from alphaq.planning.planner import PlanConfig
    from alphaq.planning.run import run_plan

    with _user_errors():
        config = PlanConfig(budget=budget, widths=widths, group_size=group_size, granularity=granularity,  # type: ignore[arg-type]
                            allocator=allocator, gamma=gamma, error_model=error_model, quant_method=quant_method,  # type: ignore[arg-type]
                            min_bits=min_bits, max_bits=max_bits, keep=keep or None, solver=solver, seed=seed)  # type: ignore[arg-type]
        budgets = [b.strip() for b in sweep.split(",") if b.strip()] if sweep else []
        with _progress("plan") as advance:
            result = run_plan(model, config, out, inspect_dir=inspect_dir, sweep_budgets=budgets,
                              sweep_allocators=[a.strip() for a in sweep_allocators.split(",") if a.strip()],
                              calibration_text=calibration_text, pattern_file=pattern_file, progress=advance)
        if html:
            from alphaq.report.plan_page import render_plan

            render_plan(out)
    _print_plan_summary(result)


@app.command()
def quantize(
    plan: Annotated[Path, typer.Option("--plan", help="plan.json written by alphaq plan for this model.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the quantized checkpoint "
                                                          "(an unfinished run there is resumed).")],
    model: ModelArg = None,
    method: Annotated[Optional[str], typer.Option(help="rtn | rtn_clip | hqq (default: the plan's quantizer, else rtn).")] = None,
    device: Annotated[str, typer.Option(help="Where to quantize: cpu or cuda.")] = "cpu",
    html: Annotated[bool, typer.Option(help="Write quantize.html.")] = True,
) -> None:
    """Execute a plan: a quantized safetensors checkpoint (streamed shard by shard, resumable) and quantize.json."""
    import time

    from alphaq.quantization.run import run_quantize

    with _user_errors():
        with _progress("quantize") as advance:
            start, done = time.perf_counter(), [0]

            def count(nbytes: int) -> None:
                done[0] += nbytes

            def tick(n: int, item: str, total: int) -> None:
                rate = done[0] / max(time.perf_counter() - start, 1e-9) / 1e6
                advance(n, f"{item} | {rate:,.1f} MB/s", total)

            result = run_quantize(model, plan, out, method=method, device=device, progress=tick, on_bytes=count)
        if html:
            from alphaq.report.quantize_page import render_quantize

            render_quantize(out)
    _print_quantize_summary(result)


@app.command("run")
def run_all(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    budget: BudgetOpt = "3.5",
    widths: WidthsOpt = "2,3,4,8",
    group_size: GroupSizeOpt = 128,
    granularity: GranularityOpt = "expert",
    allocator: Annotated[str, typer.Option(help="alphaq | uniform | random | alpha_ratio | weight_norm.")] = "alphaq",
    gamma: GammaOpt = 1.0,
    method: Annotated[str, typer.Option(help="Quantizer (plan error model and checkpoint): rtn | rtn_clip | hqq.")] = "rtn",
    device: Annotated[str, typer.Option(help="Where to quantize and evaluate: cpu or cuda.")] = "cpu",
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate perplexity (needs the text).")] = True,
    text_file: Annotated[Optional[Path], typer.Option(help="Evaluation text (default: WikiText-2 test from $ALPHAQ_DATA_DIR).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Fetch the evaluation text through the datasets package: wikitext2.")] = None,
    max_windows: Annotated[Optional[int], typer.Option(help="Evaluate only the first N windows (default: all).")] = None,
    dtype: Annotated[str, typer.Option(help="Eval: dense weights and activations, float32 | bfloat16 | float16.")] = "float32",
    model_card: Annotated[bool, typer.Option("--model-card", help="Write model_card.md (Hugging Face model-card section) next to the quantized checkpoint.")] = False,
) -> None:
    """inspect -> plan -> quantize -> eval in one run folder, with every page linked from index.html."""
    from alphaq.evaluation.eval_run import EvalOptions
    from alphaq.pipeline.run import RunConfig, run_pipeline
    from alphaq.planning.planner import PlanConfig

    with _user_errors():
        plan_config = PlanConfig(budget=budget, widths=widths, group_size=group_size, granularity=granularity,  # type: ignore[arg-type]
                                 allocator=allocator, gamma=gamma, quant_method=method)  # type: ignore[arg-type]
        text = text_file
        if dataset is not None:
            from alphaq.evaluation.datasets import resolve_eval_text

            text = resolve_eval_text(text_file, dataset)
        config = RunConfig(plan=plan_config, method=method, device=device, evaluate=evaluate,
                           eval_options=EvalOptions(max_windows=max_windows, device=device, dtype=dtype), text_file=text,
                           model_card=model_card)
        with _progress("run") as advance:
            result = run_pipeline(model, config, out, progress=advance)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    record = result.eval_record
    if record is not None:
        from alphaq.cli.evaluate import print_eval_summary

        print_eval_summary(record, out, True)
    typer.echo(f"wrote {result.run_dir / 'index.html'}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by alphaq run or any stage.")] = DEFAULT_OUT,
    model_card: Annotated[bool, typer.Option("--model-card", help="Also write model_card.md (Hugging Face model-card section).")] = False,
) -> None:
    """Rebuild every HTML page of a run folder (and index.html) from its saved artifacts; nothing is recomputed."""
    from alphaq.report.run import render_run

    with _user_errors():
        pages = render_run(run_dir, model_card=model_card)
    for page in pages:
        typer.echo(str(page))


@app.command()
def gallery(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the example reports.")] = Path("reports"),
) -> None:
    """Regenerate the example reports of the bundled model (the committed reports/ folder)."""
    from alphaq.pipeline.gallery import build_gallery

    with _user_errors(), _progress("gallery") as advance:
        pages = build_gallery(out, progress=advance)
    for page in pages:
        typer.echo(str(page))


def _print_plan_summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    summary, prov = result.plan.summary, result.plan.provenance
    console = Console()
    table = Table(title=f"alphaq plan: budget {prov['budget']['given']} ({prov['options']['allocator']}, "
                        f"{prov['options']['granularity']})")
    table.add_column("what")
    table.add_column("value")
    table.add_row("average payload bits", f"{summary['average_payload_bits']:.3f}")
    table.add_row("effective bits (incl. scales/zeros)", f"{summary['effective_bits']:.3f}")
    table.add_row("bits histogram (share of expert weights)",
                  ", ".join(f"{k}b: {v:.0%}" for k, v in summary["param_share_by_width"].items()))
    table.add_row("expert memory bf16 -> plan", f"{_mb(summary['expert_bytes_bf16'])} -> {_mb(summary['expert_bytes'])}")
    table.add_row("total memory bf16 -> plan", f"{_mb(summary['total_bytes_bf16'])} -> {_mb(summary['total_bytes'])}")
    table.add_row("compression (experts / total)",
                  f"{summary['expert_compression_ratio']:.2f}x / {summary['compression_ratio']:.2f}x")
    table.add_row("predicted error", f"{summary['predicted_error']:.5f}")
    solver = prov["solver"]
    table.add_row("solver", f"{solver['method']} {solver['status']}, gap {solver['gap']:.2g}, {solver['seconds']:.2f} s")
    layer = result.comparison.get("layer_plan")
    if layer and layer.get("status") != "infeasible":
        table.add_row("best layer-granularity plan (GGUF/vLLM)", f"objective {layer['objective']:.5f} "
                      f"vs {result.comparison['expert_plan']['objective']:.5f}")
    table.add_row("written to", str(result.run_dir / "plan.json"))
    console.print(table)


def _print_quantize_summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    manifest = result.manifest
    totals, timing, options = manifest["totals"], manifest["timing"], manifest["options"]
    console = Console()
    table = Table(title=f"alphaq quantize: {Path(manifest['checkpoint']['path']).name} ({options['method']}, "
                        f"{options['backend']} on {options['device']})")
    table.add_column("what")
    table.add_column("value")
    table.add_row("tensors quantized / copied", f"{totals['quantized_tensors']} / {totals['copied_tensors']}"
                  + (f" (+{totals['dense_tensors']} split experts at 16 bits)" if totals["dense_tensors"] else ""))
    table.add_row("quantized bytes vs plan", f"{totals['quantized_bytes']:,} vs {totals['predicted_bytes']:,} "
                  + ("(equal)" if totals["bytes_match_plan"] else "(DIFFERENT)"))
    table.add_row("checkpoint source -> quantized", f"{_mb(totals['source_bytes'])} -> {_mb(totals['output_bytes'])}")
    if totals["mean_rel_error"] is not None:
        predicted = totals["mean_predicted_error"]
        table.add_row("reconstruction error (param-weighted)", f"{totals['mean_rel_error']:.5f}"
                      + (f" (plan predicted {predicted:.5f})" if predicted is not None else ""))
    resumed = sum(1 for s in manifest["shards"] if s["resumed"])
    table.add_row("shards", f"{len(manifest['shards'])}" + (f" ({resumed} resumed)" if resumed else ""))
    rate = timing["throughput_mb_s"]
    table.add_row("time", f"{timing['wall_seconds']:.1f} s" + (f", {rate:,.1f} MB/s of source weights" if rate else ""))
    table.add_row("written to", str(result.out_dir))
    console.print(table)
    for warning in manifest["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _mb(nbytes: Any) -> str:
    return f"{nbytes / 1e6:,.2f} MB"


def _print_inspect_summary(result: Any, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    details, experts, manifest = result.details, result.experts, result.manifest
    ckpt = manifest["checkpoint"]
    table = Table(title=f"alphaq inspect: {Path(ckpt['path']).name} ({ckpt['model_type']})", show_header=True)
    for col in ("what", "value"):
        table.add_column(col)
    fitted = details[details["status"] == "success"]
    table.add_row("matrices", f"{len(details)} ({len(fitted)} fitted)")
    routed = experts[experts["role"] == "expert"] if not experts.empty else experts
    if not routed.empty:
        alphas = routed["alpha_mean"].dropna()
        table.add_row("experts", str(len(routed)))
        table.add_row("expert alpha min / median / max", f"{alphas.min():.2f} / {alphas.median():.2f} / {alphas.max():.2f}")
        table.add_row("quality flags", ", ".join(f"{k}: {v}" for k, v in routed["quality"].value_counts().items()))
    table.add_row("time", f"{manifest['timing']['seconds']:.1f} s")
    table.add_row("written to", str(out))
    console.print(table)
    for warning in manifest["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _register_external_commands() -> None:
    """Commands that live in their own modules (each imports its heavy dependencies lazily)."""
    from alphaq.cli.evaluate import compare, eval_command
    from alphaq.cli.export import export
    from alphaq.cli.lmeval import lmeval

    app.command()(export)
    app.command()(lmeval)
    app.command("eval")(eval_command)
    app.command()(compare)


_register_external_commands()


def main() -> None:  # pragma: no cover - console entry point
    app()
