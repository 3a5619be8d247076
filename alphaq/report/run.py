"""Rebuild every page of a run folder from its saved artifacts (no recomputation)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alphaq.errors import AlphaQError

#: (artifact that marks a stage, "module:function" that renders its page), in pipeline order.
STAGE_PAGES: tuple[tuple[str, str], ...] = (
    ("inspect.json", "alphaq.report.inspect_page:render_inspect"),
    ("plan.json", "alphaq.report.plan_page:render_plan"),
    ("quantize.json", "alphaq.report.quantize_page:render_quantize"),
)


def render_run(run_dir: str | Path) -> list[Path]:
    """Render the page of each stage whose artifacts ``run_dir`` holds.

    Args:
        run_dir: a run folder written by ``alphaq inspect`` / ``alphaq plan``.

    Returns:
        The pages written, in pipeline order.

    Raises:
        AlphaQError: the folder does not exist or holds no stage artifact.
    """
    import importlib

    folder = Path(run_dir)
    if not folder.is_dir():
        raise AlphaQError(f"{folder}: no such run folder; pass the --out folder of alphaq inspect/plan")
    pages = []
    for marker, target in STAGE_PAGES:
        if (folder / marker).is_file():
            module, function = target.split(":")
            render: Callable[[Path], Path] = getattr(importlib.import_module(module), function)
            pages.append(render(folder))
    if not pages:
        raise AlphaQError(f"{folder}: no stage artifacts ({', '.join(m for m, _ in STAGE_PAGES)}); "
                          "run alphaq inspect or alphaq plan with --out pointing here first")
    return pages
