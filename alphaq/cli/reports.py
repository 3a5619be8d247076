"""Report commands: ``report`` (rebuild a run folder's pages from its artifacts), ``gallery`` (the example
reports of the bundled model) and ``gguf_presets`` (the page of ``bench/gguf_presets.py``'s saved results)."""

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


def gguf_presets(
    files: Annotated[
        list[Path],
        typer.Argument(help="gguf_presets_<model>.json files of bench/gguf_presets.py, and gguf_study_<model>.json."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of gguf_presets.html.")],
) -> None:
    """Render gguf_presets.html: alphaq's GGUF plans against llama.cpp's presets, from the saved benchmark JSON."""
    from alphaq.report.gguf_page import render_gguf_presets

    with user_errors():
        page = render_gguf_presets(files, out)
    typer.echo(str(page))


__all__ = ["gallery", "gguf_presets", "report"]
