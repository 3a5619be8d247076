"""Rebuild every page of a run folder from its saved artifacts (no recomputation)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alphaq.errors import AlphaQError
from alphaq.locking import locks_output
from alphaq.report.page import RUN_SUBFOLDERS
from alphaq.runfolder import COMPARE_JSON, EVAL_JSON, INSPECT_JSON, PLAN_JSON, QUANTIZE_JSON

#: (artifact that marks a stage, "module:function" that renders its page), in pipeline order.
STAGE_PAGES: tuple[tuple[str, str], ...] = (
    (INSPECT_JSON, "alphaq.report.inspect_page:render_inspect"),
    (PLAN_JSON, "alphaq.report.plan_page:render_plan"),
    (QUANTIZE_JSON, "alphaq.report.quantize_page:render_quantize"),
    (EVAL_JSON, "alphaq.report.eval_page:render_eval"),
    (COMPARE_JSON, "alphaq.report.compare_page:render_compare"),
)


def _stage_pages(folder: Path) -> list[Path]:
    import importlib

    pages = []
    for marker, target in STAGE_PAGES:
        if (folder / marker).is_file():
            module, function = target.split(":")
            render: Callable[[Path], Path] = getattr(importlib.import_module(module), function)
            pages.append(render(folder))
    return pages


@locks_output("run_dir", "report")
def render_run(run_dir: str | Path, *, model_card: bool = False) -> list[Path]:
    """Render the page of each stage whose artifacts ``run_dir`` (or its ``quantized/``, ``compare/``) holds.

    With more than one stage (an ``alphaq run`` folder, the gallery) an ``index.html`` links them.

    Args:
        run_dir: a run folder (``--out`` of any stage, or of ``alphaq run``).
        model_card: also write the Hugging Face model-card section ``model_card.md``.

    Returns:
        The files written, in pipeline order (index and model card last).

    Raises:
        AlphaQError: the folder does not exist or holds no stage artifact.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise AlphaQError(f"{folder}: no such run folder; pass the --out folder of an alphaq stage")
    subfolders = [folder / sub for sub in RUN_SUBFOLDERS if (folder / sub).is_dir()]
    stages = [f for f in (folder, *subfolders) for marker, _ in STAGE_PAGES if (f / marker).is_file()]
    if not stages:
        raise AlphaQError(
            f"{folder}: no stage artifacts ({', '.join(m for m, _ in STAGE_PAGES)}); "
            "run an alphaq stage with --out pointing here first"
        )
    written = []
    if model_card:
        from alphaq.report.hf_card import write_model_card

        written.append(write_model_card(folder))
    index = []
    if len(stages) > 1:  # first, so that every stage page's nav links the overview
        from alphaq.report.index_page import render_index

        index.append(render_index(folder))
    pages = _stage_pages(folder) + [page for sub in subfolders for page in _stage_pages(sub)]
    return pages + written + index
