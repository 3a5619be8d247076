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
# plan options shared by `alphaq plan` and `alphaq run`
BudgetOpt = Annotated[str, typer.Option(help="Average payload bits per expert weight (3.5) or total expert bytes (12GB).")]
WidthsOpt = Annotated[str, typer.Option(help="Candidate widths, any subset of 1..8.")]
GroupSizeOpt = Annotated[int, typer.Option(help="Columns per scale/zero group (128, 64, 32).")]
GranularityOpt = Annotated[str, typer.Option(help="expert | matrix | layer (layer = one width per layer and projection).")]
GammaOpt = Annotated[float, typer.Option(help="Exponent of the alpha importance (median_alpha / alpha)^gamma.")]


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
