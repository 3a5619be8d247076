"""Report commands: ``report`` (rebuild a run folder's pages from its artifacts) and ``gallery`` (the example
reports of the bundled model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alphaq.cli.common import DEFAULT_OUT, progress_bar, user_errors


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by alphaq run or any stage.")] = DEFAULT_OUT,
    model_card: Annotated[
        bool, typer.Option("--model-card", help="Also write model_card.md (Hugging Face model-card section).")
    ] = False,
) -> None:
    """Rebuild every HTML page of a run folder (and index.html) from its saved artifacts; nothing is recomputed."""
    from alphaq.report.run import render_run

    with user_errors():
        pages = render_run(run_dir, model_card=model_card)
    for page in pages:
        typer.echo(str(page))


def gallery(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the example reports.")] = Path("reports"),
) -> None:
    """Regenerate the example reports of the bundled model (the committed reports/ folder)."""
    from alphaq.pipeline.gallery import build_gallery

    with user_errors(), progress_bar("gallery") as advance:
        pages = build_gallery(out, progress=advance)
    for page in pages:
        typer.echo(str(page))


__all__ = ["gallery", "report"]
