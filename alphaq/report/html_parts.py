"""HTML building blocks of the report pages: sortable tables, embedded figures, stat cards, chips, lists,
and the number formats the pages print (counts, bytes, durations).

Pure string builders: values in, escaped HTML out; deterministic (the same input gives the same bytes).
:mod:`alphaq.report.page` assembles them into a page and re-exports them.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: Salt of the ids matplotlib writes into SVGs; fixed so that output is reproducible.
SVG_HASHSALT = "alphaq"
_SVG_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_SVG_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
_SVG_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


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
