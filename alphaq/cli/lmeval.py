"""``alphaq lmeval``: lm-evaluation-harness tasks on the original model or a quantized checkpoint.

The lead registers it on the app: ``app.command()(lmeval)``. Needs the optional extra ``alphaq[lmeval]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alphaq.cli.common import DEFAULT_OUT, ModelArg, OutOpt
from alphaq.cli.common import user_errors as _user_errors

#: Same as :data:`alphaq.evaluation.lm_harness.DEFAULT_TASKS` (kept here so ``--help`` imports nothing heavy).
DEFAULT_TASKS = "arc_easy,arc_challenge,hellaswag,piqa,winogrande"


def lmeval(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    quantized: Annotated[
        Path | None, typer.Option(help="Evaluate this quantized checkpoint (alphaq quantize --out) instead of MODEL.")
    ] = None,
    tasks: Annotated[
        str,
        typer.Option(
            help="lm-eval tasks or groups, comma-separated; the default is the zero-shot suite of quantization papers."
        ),
    ] = DEFAULT_TASKS,
    num_fewshot: Annotated[int, typer.Option(help="Examples placed in context (0: zero-shot).")] = 0,
    limit: Annotated[
        int | None, typer.Option(help="At most N examples per task (quick checks only; default: all).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Requests per forward pass.")] = 1,
    device: Annotated[str, typer.Option(help="Where the model runs: cpu, cuda, cuda:1, ...")] = "cpu",
) -> None:
    """Task accuracy through lm-evaluation-harness (needs the lmeval extra of alphaq): lmeval.json."""
    from alphaq.evaluation.lm_harness import format_rows, run_lm_eval
    from alphaq.runfolder import LMEVAL_JSON

    with _user_errors():
        record = run_lm_eval(
            model,
            quantized=quantized,
            tasks=tasks.split(","),
            num_fewshot=num_fewshot,
            limit=limit,
            batch_size=batch_size,
            device=device,
            out_dir=out,
        )
    typer.echo(format_rows(record["rows"]))
    typer.echo(
        f"{record['source']['kind']} model, {record['options']['num_fewshot']}-shot"
        + (f", limit {limit}" if limit is not None else "")
        + f"; wrote {out / LMEVAL_JSON}"
    )


__all__ = ["DEFAULT_TASKS", "lmeval"]
