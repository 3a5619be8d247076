"""Shared layout of every stage's HTML report: one self-contained file, no external resources.

A page is a header with provenance, a nav bar linking the sibling pages of the run folder, a warnings box,
a list of :class:`Section` cards and a footer. CSS and the few lines of table-sorting JS are inline; figures
are inline SVG (or base64 PNG). Rendering is deterministic: the same artifacts give the same bytes.
"""

from __future__ import annotations

import base64
import functools
import html as _html
import io
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq._version import __version__
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

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: Pages a run folder may hold, in nav order: (file name, nav label).
SIBLING_PAGES: tuple[tuple[str, str], ...] = (
    (INDEX_HTML, "Overview"),
    (INSPECT_HTML, "Inspect"),
    (PLAN_HTML, "Plan"),
    (QUANTIZE_HTML, "Quantize"),
    (EVAL_HTML, "Eval"),
    (COMPARE_HTML, "Compare"),
)
#: Salt of the ids matplotlib writes into SVGs; fixed so that output is reproducible.
SVG_HASHSALT = "alphaq"
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
_SVG_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_SVG_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
_SVG_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


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


def table_html(
    df: pd.DataFrame,
    *,
    max_rows: int = 100,
    float_format: str | Callable[[float], str] = "{:.3f}",
    sortable: bool = True,
    index: bool = False,
    caption: str = "",
    cell_class: Mapping[str, Callable[[Any], str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """An HTML table from a DataFrame (values escaped; NaN/NA shown as an em dash).

    Args:
        df: the rows to show.
        max_rows: longer frames show their first and last ``max_rows // 2`` rows around a gap row.
        float_format: format string (``"{:.3f}"``) or callable for float cells.
        sortable: click a header to sort (inline JS; sorts the shown rows).
        index: include the index as the first column(s).
        caption: a line under the table (the "showing n of N" note is added when rows are cut).
        cell_class: column -> function(value) -> CSS class for that cell (e.g. ``q-ok``, ``q-bad``).
        headers: column -> header text to display.

    Returns:
        ``<div class="tablewrap"><table data-total-rows=N ...>...</table></div>``.
    """
    import pandas as pd

    frame = df.reset_index() if index else df
    fmt = float_format.format if isinstance(float_format, str) else float_format
    cell_class = cell_class or {}
    headers = headers or {}
    columns = list(frame.columns)
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in columns}
    total = len(frame)
    if total > max_rows:
        half = max(max_rows // 2, 1)
        parts = [(frame.iloc[:half], False), (None, True), (frame.iloc[total - half :], False)]
        shown = 2 * half
    else:
        parts, shown = [(frame, False)], total
    classes = "data sortable" if sortable else "data"
    out = [
        f'<div class="tablewrap"><table class="{classes}" data-total-rows="{total}" data-shown-rows="{shown}">',
        "<thead><tr>",
    ]
    for col in columns:
        cls = ' class="num"' if numeric[col] else ""
        out.append(f"<th{cls}>{_esc(headers.get(str(col), str(col)))}</th>")
    out.append("</tr></thead><tbody>")
    for part, is_gap in parts:
        if is_gap:
            out.append(
                f'<tr class="gap"><td colspan="{len(columns)}">&#8942; {total - shown} rows not shown &#8942;</td></tr>'
            )
            continue
        for row in part.itertuples(index=False, name=None):
            out.append("<tr>")
            for col, value in zip(columns, row):
                out.append(_cell(value, fmt, numeric[col], cell_class.get(str(col))))
            out.append("</tr>")
    out.append("</tbody></table></div>")
    if total == 0:
        out.append('<p class="empty">No rows.</p>')
    notes = [caption] if caption else []
    if shown < total:
        notes.append(f"Showing {shown} of {total} rows (first and last {shown // 2}).")
    if notes:
        out.append(f'<p class="tablecap">{_esc(" ".join(notes))}</p>')
    return "".join(out)


def figure_html(fig: Figure, *, fmt: str = "svg", caption: str = "", alt: str = "", dpi: int = 110) -> str:
    """Embed a matplotlib Figure: inline SVG (text as text, fixed ids, no metadata) or a base64 PNG.

    Args:
        fig: a ``matplotlib.figure.Figure`` (create it directly; no pyplot state is used).
        fmt: ``"svg"`` or ``"png"``.
        caption: plain-text caption under the figure.
        alt: accessible description (PNG alt text / SVG aria-label).
        dpi: resolution of PNGs and of rasterized artists inside SVGs.

    Returns:
        ``<figure class="fig">...</figure>``; identical figures give identical text.
    """
    import matplotlib

    if fmt not in ("svg", "png"):
        raise ValueError(f"figure format must be 'svg' or 'png', not {fmt!r}")
    rc = {
        "svg.hashsalt": SVG_HASHSALT,
        "svg.fonttype": "none",
        "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    }
    with matplotlib.rc_context(rc):
        if fmt == "svg":
            buf = io.StringIO()
            fig.savefig(buf, format="svg", dpi=dpi, metadata={"Date": None, "Creator": None})
            body = _clean_svg(buf.getvalue(), alt)
        else:
            raw = io.BytesIO()
            fig.savefig(raw, format="png", dpi=dpi, metadata={"Software": None})
            encoded = base64.b64encode(raw.getvalue()).decode("ascii")
            body = f'<img alt="{_esc(alt)}" src="data:image/png;base64,{encoded}">'
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="fig">{body}{cap}</figure>'


def stat_cards(items: Iterable[tuple[str, Any, str]]) -> str:
    """A grid of summary cards from (label, value, hint) triples (all escaped)."""
    out = ['<div class="cards">']
    for label, value, hint in items:
        out.append(f'<div class="stat"><div class="label">{_esc(label)}</div><div class="value">{_esc(value)}</div>')
        if hint:
            out.append(f'<div class="hint">{_esc(hint)}</div>')
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


def chip(text: Any, css_class: str = "") -> str:
    """A small escaped label, e.g. ``chip("3 outlier-high", "q-warn")``."""
    cls = f"chip {css_class}".strip()
    return f'<span class="{cls}">{_esc(text)}</span>'


def bullet_list(lines: Iterable[Any]) -> str:
    """An escaped ``<ul>``."""
    return "<ul>" + "".join(f"<li>{_esc(line)}</li>" for line in lines) + "</ul>"


def empty_note(text: str) -> str:
    """A muted italic line for a section with nothing to show."""
    return f'<p class="empty">{_esc(text)}</p>'


def fmt_count(value: Any) -> str:
    """An integer with thousands separators; an em dash for None/NaN (and for a non-number in a hand-edited file)."""
    if _is_missing(value) or not _is_number(value):
        return "\u2014"
    return f"{int(float(value)):,}"


def fmt_bytes(value: Any) -> str:
    """A byte size in decimal units: ``512 B``, ``76.8 kB``, ``12.35 GB``; an em dash for None/NaN/non-numbers."""
    if _is_missing(value) or not _is_number(value):
        return "\u2014"
    size = float(value)
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(size) >= scale:
            return f"{size / scale:.{2 if abs(size) < 100 * scale else 1}f} {unit}"
    return f"{size:.0f} B"


def fmt_seconds(value: Any) -> str:
    """A duration: ``12.3 s``, ``4 min 5 s`` or ``1.2 h``; an em dash for None/NaN/non-numbers."""
    if _is_missing(value) or not _is_number(value):
        return "\u2014"
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s" if minutes < 60 else f"{minutes / 60:.1f} h"


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


def _cell(value: Any, fmt: Callable[[float], str], numeric: bool, classify: Callable[[Any], str] | None) -> str:
    classes = ["num"] if numeric else []
    missing = _is_missing(value)
    if missing:
        text, sort_key = "\u2014", ""
        classes.append("na")
    elif isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        text, sort_key = (fmt(number) if math.isfinite(number) else str(number)), repr(number)
    else:
        text = str(value)
        sort_key = str(value) if numeric else None
    if classify is not None and not missing:
        extra = classify(value)
        if extra:
            classes.append(extra)
    cls = f' class="{" ".join(classes)}"' if classes else ""
    data = f' data-v="{_esc(sort_key)}"' if sort_key is not None else ""
    return f"<td{cls}{data}>{_esc(text)}</td>"


def _is_number(value: Any) -> bool:
    """Whether ``float(value)`` gives a finite number (not a list or a word from a hand-edited JSON file)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _clean_svg(svg: str, alt: str) -> str:
    """Inline-ready SVG: no XML prolog/DOCTYPE, no RDF metadata, no namespace URLs (HTML5 implies them)."""
    svg = _SVG_PROLOG.sub("", svg, count=1)
    svg = _SVG_METADATA.sub("", svg, count=1)
    head, sep, rest = svg.partition(">")
    head = _SVG_XMLNS.sub("", head)
    label = f' role="img" aria-label="{_esc(alt)}"' if alt else ' role="img"'
    return head + label + sep + rest.rstrip()


def _esc(value: Any) -> str:
    return _html.escape(str(value), quote=True)
