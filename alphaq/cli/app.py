"""The ``alphaq`` Typer application: every command group registered in pipeline order.

Every command takes MODEL as an optional argument (default: the bundled demo MoE) and writes into a
run folder (``--out``, default ``./alphaq-run``) that later stages and ``alphaq report`` read. The command
functions live in one module per group and import their heavy dependencies lazily, so ``alphaq --help``
stays fast.
"""

from __future__ import annotations

import typer

from alphaq.cli import evaluate, export, llamacpp, lmeval, reports, stages

app = typer.Typer(
    name="alphaq",
    help="Data-free HT-SR audit and alpha-guided mixed-precision quantization of MoE LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(stages.inspect)
app.command()(stages.plan)
app.command()(stages.quantize)
app.command("run")(stages.run)
app.command()(reports.report)
app.command()(reports.gallery)
app.command()(export.export)
app.add_typer(llamacpp.app, name="llamacpp")
app.command()(lmeval.lmeval)
app.command("eval")(evaluate.eval_command)
app.command()(evaluate.compare)


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main"]
