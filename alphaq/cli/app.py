"""The ``alphaq`` Typer application: every command group registered in pipeline order.

Every command takes MODEL as an optional argument (default: the bundled demo MoE) and writes into a
run folder (``--out``, default ``./alphaq-run``) that later stages and ``alphaq report`` read. The command
functions live in one module per group and import their heavy dependencies lazily, so ``alphaq --help``
stays fast. :data:`app` is the whole application: the console script (:func:`main`), the tests and the generated
CLI reference all run it. (A start-up shortcut that built only the invoked command was measured and removed: on a
real-size audit it saved nothing measurable, ``bench/results/cli_startup_ab.json``.)
"""

from __future__ import annotations

import typer

from alphaq.cli import evaluate, export, llamacpp, lmeval, reports, stages

_HELP = "Data-free HT-SR audit and alpha-guided mixed-precision quantization of MoE LLMs."

app = typer.Typer(name="alphaq", help=_HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command("inspect")(stages.inspect)
app.command("plan")(stages.plan)
app.command("quantize")(stages.quantize)
app.command("run")(stages.run)
app.command("report")(reports.report)
app.command("gallery")(reports.gallery)
app.command("report-gguf-presets")(reports.gguf_presets)
app.command("export")(export.export)
app.add_typer(llamacpp.app, name="llamacpp")
app.command("lmeval")(lmeval.lmeval)
app.command("eval")(evaluate.eval_command)
app.command("compare")(evaluate.compare)


def main() -> None:  # pragma: no cover - console entry point (tests/cli/test_app.py runs it as a process)
    """The ``alphaq`` console script (``[project.scripts]`` in pyproject.toml): runs :data:`app`."""
    app()


__all__ = ["app", "main"]
