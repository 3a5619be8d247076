"""Shared layout of every stage's HTML report: one self-contained file, no external resources.

A page is a header with provenance, a nav bar linking the sibling pages of the run folder, a warnings box,
a list of :class:`Section` cards and a footer. CSS and the few lines of table-sorting JS are inline; figures
are inline SVG (or base64 PNG). Rendering is deterministic: the same artifacts give the same bytes. The building
blocks (tables, figures, cards, formats) live in :mod:`alphaq.report.html_parts` and are re-exported here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alphaq._version import __version__
from alphaq.report.html_parts import SVG_HASHSALT as SVG_HASHSALT
from alphaq.report.html_parts import bullet_list as bullet_list
from alphaq.report.html_parts import chip as chip
from alphaq.report.html_parts import empty_note as empty_note
from alphaq.report.html_parts import figure_html as figure_html
from alphaq.report.html_parts import fmt_bytes as fmt_bytes
from alphaq.report.html_parts import fmt_count as fmt_count
from alphaq.report.html_parts import fmt_seconds as fmt_seconds
from alphaq.report.html_parts import stat_cards as stat_cards
from alphaq.report.html_parts import table_html as table_html
from alphaq.runfolder import (
    COMPARE_DIR,
    COMPARE_HTML,
    COMPARE_JSON,
    EVAL_HTML,
    EVAL_JSON,
    INDEX_HTML,
    INSPECT_HTML,
    INSPECT_JSON,
    PLAN_HTML,
    PLAN_JSON,
    QUANTIZE_HTML,
    QUANTIZE_JSON,
    QUANTIZED_DIR,
    display_paths,
)

#: Pages a run folder may hold, in nav order: (file name, nav label).
SIBLING_PAGES: tuple[tuple[str, str], ...] = (
    (INDEX_HTML, "Overview"),
    (INSPECT_HTML, "Inspect"),
    (PLAN_HTML, "Plan"),
    (QUANTIZE_HTML, "Quantize"),
    (EVAL_HTML, "Eval"),
    (COMPARE_HTML, "Compare"),
)
#: Provenance keys rendered first, with their labels; other keys follow in the order given.
_PROVENANCE_LABELS = {
    "model": "Model",
    "model_type": "Model type",
    "path": "Checkpoint path",
    "fingerprint": "Checkpoint fingerprint",
    "alphaq_version": "alphaq version",
    "created": "Created",
}
_MONO_KEYS = {"path", "fingerprint"}


@dataclass(frozen=True)
class Section:
    """One card of a page.

    Attributes:
        title: heading, also listed in the nav bar's table of contents.
        html: the body, trusted HTML (build it with :func:`table_html`, :func:`figure_html`, ...).
        note: a one-line plain-text explanation under the heading (escaped).
        anchor: the element id; derived from the title when empty.
    """

    title: str
    html: str
    note: str = ""
    anchor: str = field(default="")

    def __post_init__(self) -> None:
        if not self.anchor:
            slug = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"
            object.__setattr__(self, "anchor", slug)


def render_page(
    title: str,
    provenance: Mapping[str, Any],
    sections: Sequence[Section],
    *,
    warnings: Iterable[str] = (),
    run_dir: str | Path | None = None,
    current: str | None = None,
    subtitle: str = "",
) -> str:
    """Render a complete, self-contained HTML page.

    Args:
        title: page title (header and ``<title>``).
        provenance: header facts. Known keys (``model``, ``model_type``, ``path``, ``fingerprint``,
            ``alphaq_version``, ``created``) come first with fixed labels; a ``stage_fingerprints`` mapping
            is shown as one "<stage> fingerprint" entry per stage; any other key is shown as given.
            None/empty values are left out.
        sections: the cards, in order.
        warnings: lines for the warnings box at the top (no box when empty).
        run_dir: the run folder; the nav bar links the sibling pages that exist in it.
        current: file name of this page (e.g. ``"inspect.html"``), highlighted in the nav bar.
        subtitle: a line under the title.

    Returns:
        The HTML text.
    """
    anchors: set[str] = set()
    unique_sections = []
    for section in sections:
        anchor, n = section.anchor, 2
        while anchor in anchors:
            anchor, n = f"{section.anchor}-{n}", n + 1
        anchors.add(anchor)
        if anchor != section.anchor:
            section = Section(section.title, section.html, section.note, anchor)
        unique_sections.append(section)
    return (
        _environment()
        .get_template("base.html")
        .render(
            title=title,
            subtitle=subtitle,
            version=__version__,
            provenance=_provenance_items(provenance),
            nav=_nav_items(run_dir, current),
            sections=unique_sections,
            warnings=[str(w) for w in warnings if str(w).strip()],
            created=str(provenance.get("created") or ""),
        )
    )


def write_page(path: str | Path, html: str) -> Path:
    """Atomically write a rendered page; returns the path."""
    from alphaq.atomic import write_text

    return write_text(path, html)


def provenance_from_manifest(manifest: Mapping[str, Any], **stage_fingerprints: str) -> dict[str, Any]:
    """The ``provenance`` for :func:`render_page` from a stage manifest (``checkpoint`` block as inspect.json).

    Args:
        manifest: a stage's JSON manifest.
        stage_fingerprints: extra fingerprints to show, e.g. ``plan="ab12..."``.

    Returns:
        Provenance mapping with model, model_type, path, fingerprint, alphaq_version, created.
    """
    ckpt = manifest.get("checkpoint") or {}
    path = str(ckpt.get("path") or "")
    return {
        "model": Path(path).name if path else "",
        "model_type": ckpt.get("model_type", ""),
        "path": path,
        "fingerprint": ckpt.get("fingerprint", ""),
        "alphaq_version": manifest.get("alphaq_version", ""),
        "created": manifest.get("created", ""),
        "stage_fingerprints": dict(stage_fingerprints),
    }


# -- internals ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _provenance_items(provenance: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    items: list[tuple[str, str, bool]] = []
    for key, label in _PROVENANCE_LABELS.items():
        value = provenance.get(key)
        if value not in (None, ""):
            items.append((label, display_paths(str(value)), key in _MONO_KEYS))
    for stage, fingerprint in (provenance.get("stage_fingerprints") or {}).items():
        if fingerprint:
            items.append((f"{stage} fingerprint", str(fingerprint), True))
    for key, value in provenance.items():
        if key in _PROVENANCE_LABELS or key == "stage_fingerprints" or value in (None, ""):
            continue
        items.append((str(key).replace("_", " ").capitalize(), display_paths(str(value)), False))
    return items


def _nav_items(run_dir: str | Path | None, current: str | None) -> list[tuple[str, str, str]]:
    folder = Path(run_dir) if run_dir is not None else None
    items = []
    for name, label in SIBLING_PAGES:
        if name == current:
            items.append((label, name, "current"))
        elif folder is not None and (href := sibling_href(folder, name)) is not None:
            items.append((label, href, "link"))
    return items


#: The artifact from which ``alphaq report`` renders each stage page: links go to a page whose artifact
#: exists, so pages can be rendered in any order and still link each other.
PAGE_ARTIFACTS = {
    INSPECT_HTML: INSPECT_JSON,
    PLAN_HTML: PLAN_JSON,
    QUANTIZE_HTML: QUANTIZE_JSON,
    EVAL_HTML: EVAL_JSON,
    COMPARE_HTML: COMPARE_JSON,
}
#: Sub-folders of a run folder that hold a stage's own folder (``alphaq run`` and the gallery).
RUN_SUBFOLDERS = (QUANTIZED_DIR, COMPARE_DIR)
#: Files that mark a run folder (the parent of a stage sub-folder).
RUN_MARKERS = (INSPECT_JSON, PLAN_JSON, INDEX_HTML)


def sibling_href(folder: Path, name: str) -> str | None:
    """Relative link from a page in ``folder`` to the run's page ``name``, or None when the run has none.

    A page whose artifact exists counts as present (it is rendered from it). A run folder holds inspect/plan/eval pages and the sub-folders ``quantized/`` and ``compare/``; a page in a
    sub-folder links back to the run folder's pages.
    """
    candidates = [name, *(f"{sub}/{name}" for sub in RUN_SUBFOLDERS)]
    if folder.name in RUN_SUBFOLDERS and any((folder.parent / m).is_file() for m in RUN_MARKERS):
        candidates += [f"../{name}", *(f"../{sub}/{name}" for sub in RUN_SUBFOLDERS if sub != folder.name)]
    for href in candidates:
        target = folder / href
        artifact = PAGE_ARTIFACTS.get(name)
        if target.is_file() or (artifact is not None and (target.parent / artifact).is_file()):
            return href
    return None
