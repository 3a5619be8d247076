"""The ``alphaq`` Typer application: every command group registered in pipeline order.

Every command takes MODEL as an optional argument (default: the bundled demo MoE) and writes into a
run folder (``--out``, default ``./alphaq-run``) that later stages and ``alphaq report`` read. The command
functions live in one module per group and import their heavy dependencies lazily, so ``alphaq --help``
stays fast.

:data:`app` holds every command (``alphaq --help``, the tests, the generated CLI reference). The console entry
point :func:`main` builds, when the first argument names a command, an application holding that command only:
typer turns each command's signature into click parameters when the application runs (about 35 ms for all of
them), which is a tenth of a small ``alphaq inspect``. The command, its options, help and errors are the same.
"""

from __future__ import annotations

import importlib
import sys

import typer

#: Top-level commands in pipeline order: (name, module under alphaq.cli, attribute, a typer sub-application?).
COMMANDS = (
    ("inspect", "stages", "inspect", False),
    ("plan", "stages", "plan", False),
    ("quantize", "stages", "quantize", False),
    ("run", "stages", "run", False),
    ("report", "reports", "report", False),
    ("gallery", "reports", "gallery", False),
    ("export", "export", "export", False),
    ("llamacpp", "llamacpp", "app", True),
    ("lmeval", "lmeval", "lmeval", False),
    ("eval", "evaluate", "eval_command", False),
    ("compare", "evaluate", "compare", False),
)
_HELP = "Data-free HT-SR audit and alpha-guided mixed-precision quantization of MoE LLMs."


def build_app(only: str | None = None) -> typer.Typer:
    """The application: every command, or the command named ``only``.

    Args:
        only: a name of :data:`COMMANDS`, or None for all of them.

    Returns:
        The Typer application (still a command group when it holds one command, so ``alphaq inspect ...``
        parses as it does with every command present).

    Raises:
        ValueError: ``only`` names no command.
    """
    chosen = [entry for entry in COMMANDS if only is None or entry[0] == only]
    if not chosen:
        raise ValueError(f"no alphaq command {only!r}; see alphaq --help")
    application = typer.Typer(name="alphaq", help=_HELP, no_args_is_help=True, add_completion=False,
                              pretty_exceptions_enable=False)
    if only is not None:
        application.callback()(_group)  # a lone command would otherwise become the application itself
    for name, module, attribute, is_group in chosen:
        target = getattr(importlib.import_module(f"alphaq.cli.{module}"), attribute)
        if is_group:
            application.add_typer(target, name=name)
        else:
            application.command(name)(target)
    return application


def _group() -> None:
    """The callback that keeps a one-command application a group (its help text is the application's)."""


app = build_app()


def main() -> None:  # pragma: no cover - console entry point (tests/cli/test_app.py runs it as a process)
    """The ``alphaq`` console script: the named command's application, or the full one (``--help``, no args)."""
    name = sys.argv[1] if len(sys.argv) > 1 else None
    if name in {entry[0] for entry in COMMANDS}:
        build_app(only=name)()
    else:
        app()


__all__ = ["COMMANDS", "app", "build_app", "main"]
