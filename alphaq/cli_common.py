"""Pieces shared by the command modules: argument types, one-line user errors, the progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from alphaq.errors import AlphaQError

ModelArg = Annotated[Optional[Path], typer.Argument(help="Checkpoint folder (default: the bundled demo MoE).",
                                                    show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder to write into.")]
DEFAULT_OUT = Path("alphaq-run")


def fail(error: AlphaQError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn AlphaQError into a one-line message and exit status 2."""
    try:
        yield
    except AlphaQError as error:
        fail(error)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, str, int], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[item]}", style="dim"))
    with Progress(*columns, transient=not sys.stderr.isatty(), disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(description, total=None, item="")

        def advance(n: int, item: str, total: int) -> None:
            bar.update(task, advance=n, total=total, item=item[-60:])

        yield advance
