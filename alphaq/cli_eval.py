"""``alphaq eval`` and ``alphaq compare``: command functions in the style of :mod:`alphaq.cli`.

The lead registers them on the app: ``app.command("eval")(eval_command)`` and ``app.command()(compare)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from alphaq.cli_common import DEFAULT_OUT, ModelArg, OutOpt
from alphaq.cli_common import progress_bar as _progress
from alphaq.cli_common import user_errors as _user_errors

TextOpt = Annotated[Optional[Path], typer.Option(
    help="Evaluation text (default: WikiText-2 test from $ALPHAQ_DATA_DIR or ../shared/data).")]
WindowsOpt = Annotated[Optional[int], typer.Option(help="Evaluate only the first N windows (default: all).")]
ContextOpt = Annotated[Optional[int], typer.Option(help="Window length (default: the model's context, at most 2048).")]


def eval_command(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    quantized: Annotated[Optional[Path], typer.Option(help="Evaluate this quantized checkpoint (alphaq quantize --out).")] = None,
    plan: Annotated[Optional[Path], typer.Option(help="Apply this plan.json by simulated quantization first.")] = None,
    text_file: TextOpt = None,
    max_windows: WindowsOpt = None,
    context: ContextOpt = None,
) -> None:
    """Perplexity (standard protocol) of the original model, a quantized checkpoint or a plan: eval.json."""
    from alphaq.evaluation.compare import run_eval

    with _user_errors():
        record = run_eval(model, out, quantized=quantized, plan_file=plan, text_file=text_file,
                          max_windows=max_windows, context=context)
    typer.echo(f"{record['source']['kind']}: ppl {record['ppl']:.4f} (nll {record['nll']:.4f}) over "
               f"{record['windows']} windows of {record['context']} tokens; wrote {out / 'eval.json'}")


def compare(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    budgets: Annotated[str, typer.Option(help="Budgets, comma-separated (average bits or sizes).")] = "2.5,3,3.5",
    allocators: Annotated[str, typer.Option(
        help="Allocators; frequency = frequency-in (WikiText-2 valid) + frequency-out (Shakespeare).")]
        = "alphaq,uniform,frequency,random",
    text_file: TextOpt = None,
    calib_in: Annotated[Optional[Path], typer.Option(help="In-domain calibration text (default: WikiText-2 valid).")] = None,
    calib_out: Annotated[Optional[Path], typer.Option(help="Out-of-domain calibration text (default: Tiny Shakespeare).")] = None,
    max_windows: WindowsOpt = None,
    context: ContextOpt = None,
    widths: Annotated[str, typer.Option(help="Candidate widths, any subset of 1..8.")] = "2,3,4,8",
    group_size: Annotated[int, typer.Option(help="Columns per scale/zero group.")] = 128,
    granularity: Annotated[str, typer.Option(help="expert | matrix | layer.")] = "expert",
    seed: Annotated[int, typer.Option(help="Seed of the random allocator.")] = 0,
    html: Annotated[bool, typer.Option(help="Write compare.html.")] = True,
) -> None:
    """Plan every (budget, allocator), measure each plan's perplexity: compare.csv/json and compare.html."""
    from alphaq.evaluation.compare import run_compare
    from alphaq.plan.planner import PlanConfig

    budget_list = [b.strip() for b in budgets.split(",") if b.strip()]
    with _user_errors():
        config = PlanConfig(budget=budget_list[0] if budget_list else "3", widths=widths, group_size=group_size,
                            granularity=granularity, seed=seed)  # type: ignore[arg-type]
        with _progress("compare") as advance:
            table = run_compare(model, budget_list, allocators.split(","), out, text_file=text_file,
                                calib_out=calib_out, calib_in=calib_in, max_windows=max_windows, context=context,
                                config=config, progress=advance)
        if html:
            from alphaq.report.compare_page import render_compare

            render_compare(out)
    shown = table[["entry", "budget", "average_payload_bits", "ppl"]]
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"wrote {out / 'compare.csv'}" + (f" and {out / 'compare.html'}" if html else ""))


__all__ = ["compare", "eval_command"]
