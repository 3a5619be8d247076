"""``alphaq eval`` and ``alphaq compare``: command functions in the style of :mod:`alphaq.cli`.

The lead registers them on the app: ``app.command("eval")(eval_command)`` and ``app.command()(compare)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from alphaq.cli.common import DEFAULT_OUT, ModelArg, OutOpt
from alphaq.cli.common import progress_bar as _progress
from alphaq.cli.common import user_errors as _user_errors
from alphaq.planning.defaults import DEFAULT_GAMMA
from alphaq.runfolder import EVAL_JSON

TextOpt = Annotated[
    Path | None,
    typer.Option(help="Evaluation text (default: WikiText-2 test from $ALPHAQ_DATA_DIR or ../shared/data)."),
]
WindowsOpt = Annotated[int | None, typer.Option(help="Evaluate only the first N windows (default: all).")]
DatasetOpt = Annotated[
    str | None, typer.Option(help="Fetch the evaluation text through the datasets package (needs network): wikitext2.")
]
ContextOpt = Annotated[int | None, typer.Option(help="Window length (default: the model's context, at most 2048).")]


def eval_command(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    quantized: Annotated[
        Path | None, typer.Option(help="Evaluate this quantized checkpoint (alphaq quantize --out).")
    ] = None,
    plan: Annotated[Path | None, typer.Option(help="Apply this plan.json by simulated quantization first.")] = None,
    text_file: TextOpt = None,
    dataset: DatasetOpt = None,
    max_windows: WindowsOpt = None,
    context: ContextOpt = None,
    stride: Annotated[
        int | None, typer.Option(help="Sliding-window step (default: the context, non-overlapping).")
    ] = None,
    baseline: Annotated[bool, typer.Option(help="Also evaluate the original model on the same windows.")] = True,
    device: Annotated[str, typer.Option(help="Where the models run: cpu or cuda[:N].")] = "cpu",
    dtype: Annotated[
        str, typer.Option(help="Dense weights and activations: float32 | bfloat16 | float16.")
    ] = "float32",
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    kld_windows: Annotated[
        int | None,
        typer.Option(
            help="KL divergence from the original on the first N windows (the original's log-probabilities are kept "
            "for them, float16)."
        ),
    ] = 128,
    html: Annotated[bool, typer.Option(help="Write eval.html.")] = True,
) -> None:
    """Perplexity and KL divergence from the original of a quantized checkpoint or a plan (or the original's
    perplexity), checked against the plan: eval.json."""
    from alphaq.evaluation.eval_run import run_eval
    from alphaq.evaluation.options import EvalOptions

    with _user_errors():
        options = EvalOptions(
            max_windows=max_windows,
            context=context,
            stride=stride,
            baseline=baseline,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            kld_windows=kld_windows,
        )
        text = _eval_text(text_file, dataset)
        with _progress("eval") as advance:
            result = run_eval(
                model, out, quantized=quantized, plan_file=plan, text_file=text, options=options, progress=advance
            )
        if html:
            from alphaq.report.eval_page import render_eval

            render_eval(out)
    print_eval_summary(result.record, out, html)


def _eval_text(text_file: Path | None, dataset: str | None) -> Path | None:
    """--text-file or --dataset (fetched and cached through the datasets package) or None for the default."""
    if dataset is None:
        return text_file
    from alphaq.evaluation.datasets import resolve_eval_text

    return resolve_eval_text(text_file, dataset)


def print_eval_summary(record: Mapping[str, Any], out: Path, html: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"alphaq eval: {record['source']['kind']} ({Path(record['source']['path']).name})")
    table.add_column("what")
    table.add_column("value")
    table.add_row("perplexity", f"{record['ppl']:.4f} (nll {record['nll']:.4f})")
    base = record.get("baseline")
    if base:
        table.add_row("original perplexity", f"{base['ppl']:.4f}  (increase {record['ppl_increase']:+.4f})")
    kld = record.get("kld")
    if kld:
        ci = kld.get("mean_kld_interval") or {}
        bounds = f" [{ci['low']:.5f}, {ci['high']:.5f}]" if ci else ""
        table.add_row(
            "KL divergence from original",
            f"mean {kld['mean_kld']:.5f}{bounds}, median {kld['median_kld']:.5f}, p99 {kld['p99_kld']:.4f} "
            f"({kld['windows']} windows)",
        )
        table.add_row("same top token", f"{kld['same_top']:.2%}")
    table.add_row("windows x tokens", f"{record['windows']} x {record['context']} ({record['tokens']:,} scored)")
    check = record["verification"]
    if check["tensors"]:
        from alphaq.planning.costs import prediction_units

        label, number, _ = prediction_units((record.get("source") or {}).get("error_model"))
        table.add_row(
            "reconstruction error (param-weighted)",
            f"{check['mean_rel_error']:.5f} (plan {label} {number.format(check['mean_predicted_error'])})",
        )
        shares = check.get("routing_share_by_bits") or {}
        if shares:
            table.add_row("routed selections by width", ", ".join(f"{k}b: {v:.0%}" for k, v in shares.items()))
    memory = record["memory"]
    if memory.get("expert_bytes") is not None:
        table.add_row("expert bytes vs plan", f"{memory['expert_bytes']:,} vs {memory['plan_expert_bytes']:,}")
    table.add_row("written to", str(out / EVAL_JSON) + (" and eval.html" if html else ""))
    Console().print(table)


def compare(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    budgets: Annotated[str, typer.Option(help="Budgets, comma-separated (average bits or sizes).")] = "2.5,3,3.5",
    allocators: Annotated[
        str, typer.Option(help="Allocators; frequency = frequency-in (WikiText-2 valid) + frequency-out (Shakespeare).")
    ] = "alphaq,uniform,frequency,random",
    text_file: TextOpt = None,
    dataset: DatasetOpt = None,
    calib_in: Annotated[
        Path | None, typer.Option(help="In-domain calibration text (default: WikiText-2 valid).")
    ] = None,
    calib_out: Annotated[
        Path | None, typer.Option(help="Out-of-domain calibration text (default: Tiny Shakespeare).")
    ] = None,
    max_windows: WindowsOpt = None,
    context: ContextOpt = None,
    widths: Annotated[str, typer.Option(help="Candidate widths, any subset of 1..8.")] = "2,3,4,8",
    group_size: Annotated[int, typer.Option(help="Columns per scale/zero group.")] = 128,
    granularity: Annotated[str, typer.Option(help="expert | matrix | layer.")] = "expert",
    seeds: Annotated[
        str, typer.Option(help="Seeds of the random allocator, comma-separated (its spread is reported).")
    ] = "0,1,2",
    gamma: Annotated[
        float, typer.Option(help="Exponent of the alpha importance (median_alpha / alpha) ** gamma.")
    ] = DEFAULT_GAMMA,
    resamples: Annotated[int, typer.Option(help="Paired-bootstrap resamples of the confidence intervals.")] = 2000,
    inspect_dir: Annotated[Path | None, typer.Option(help="Reuse this inspect run of the same model.")] = None,
    device: Annotated[str, typer.Option(help="Where the model runs: cpu or cuda[:N].")] = "cpu",
    dtype: Annotated[
        str, typer.Option(help="Dense weights and activations: float32 | bfloat16 | float16.")
    ] = "float32",
    kld_windows: Annotated[
        int | None, typer.Option(help="KL divergence from the original on the first N windows.")
    ] = 128,
    html: Annotated[bool, typer.Option(help="Write compare.html.")] = True,
) -> None:
    """Plan every (budget, allocator), measure each plan's perplexity and KL divergence from the original:
    compare.csv/json and compare.html."""
    from alphaq.evaluation.compare import run_compare
    from alphaq.evaluation.options import CompareConfig
    from alphaq.planning.planner import PlanConfig

    with _user_errors():
        base = PlanConfig(widths=widths, group_size=group_size, granularity=granularity, gamma=gamma)  # type: ignore[arg-type]
        config = CompareConfig(
            budgets=budgets,
            allocators=allocators,
            plan=base,
            text_file=_eval_text(text_file, dataset),
            calib_in=calib_in,
            calib_out=calib_out,
            seeds=seeds,
            max_windows=max_windows,
            context=context,
            device=device,
            dtype=dtype,
            resamples=resamples,
            inspect_dir=inspect_dir,
            kld_windows=kld_windows,
        )
        with _progress("compare") as advance:
            table = run_compare(model, config, out, progress=advance)
        if html:
            from alphaq.report.compare_page import render_compare

            render_compare(out)
    shown = table[["entry", "budget", "average_payload_bits", "ppl", "mean_kld", "p99_kld", "same_top"]]
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    typer.echo(f"wrote {out / 'compare.csv'}" + (f" and {out / 'compare.html'}" if html else ""))


__all__ = ["compare", "eval_command", "print_eval_summary"]
