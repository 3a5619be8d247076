"""The pure part of gguf_presets.html: number formats, verdicts, tables and the size-vs-KLD figure.

Values in (rows of a ``bench/gguf_presets.py`` file, as saved), DataFrames, strings and Figures out; no I/O and
no metric recomputed: a verdict only reads the saved paired interval. :mod:`alphaq.report.gguf_page` loads the
files and lays out the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from alphaq.report.figure_style import new_figure, style_axes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The method name of llama.cpp's data-free preset: the reference of every verdict.
PRESET = "preset"
#: The importance form alphaq uses by default (chosen on the study's held-out text).
DEFAULT_FORM = "fisher"
#: Display order of the presets and of the results' methods; others follow in file order.
PRESET_ORDER = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M")
METHOD_ORDER = (
    PRESET,
    "imatrix preset (calibrated)",
    "alphaq default (fisher)",
    "alphaq alpha (AlphaQ, gamma 16)",
    "uniform (every weight alike)",
    "calibrated plan (imatrix-weighted)",
)
#: CSS class of a verdict cell.
VERDICT_CLASS = {"win": "q-ok", "loss": "q-bad"}
DASH = "\u2014"


def finite(value: Any) -> bool:
    try:
        return value is not None and not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_value(value: float) -> str:
    """A table cell's number with decimals by magnitude.

    Args:
        value: the number (anything else gives an em dash).

    Returns:
        ``1234.6``, ``15.432``, ``1.2346``, ``0.01234``, ``0.000833`` or ``3.210e-06``.
    """
    if not finite(value):
        return DASH
    v = float(value)
    size = abs(v)
    if size >= 100:
        return f"{v:.1f}"
    if size >= 10:
        return f"{v:.3f}"
    if size >= 1:
        return f"{v:.4f}"
    if size >= 1e-3 or size == 0:
        return f"{v:.5f}"
    if size >= 1e-5:
        return f"{v:.6f}"
    return f"{v:.3e}"


def _signed(value: float, scale: float) -> str:
    v = float(value)
    if scale >= 1e-3 or scale == 0:
        return f"{v:+.5f}"
    return f"{v:+.6f}" if scale >= 1e-5 else f"{v:+.2e}"


def verdict(vs_preset: Any) -> str:
    """Win / tie / loss from a row's paired 95 % interval of mean KLD minus the preset's.

    Args:
        vs_preset: the row's ``{"diff", "low", "high"}`` (None for the preset itself).

    Returns:
        ``"win"`` (interval entirely below 0), ``"loss"`` (entirely above), ``"tie"``, or an em dash without one.
    """
    if not isinstance(vs_preset, Mapping) or not (finite(vs_preset.get("low")) and finite(vs_preset.get("high"))):
        return DASH
    if float(vs_preset["high"]) < 0:
        return "win"
    if float(vs_preset["low"]) > 0:
        return "loss"
    return "tie"


def interval_text(vs_preset: Any) -> str:
    """The paired difference to the preset and its 95 % interval as one cell.

    Args:
        vs_preset: the row's ``{"diff", "low", "high"}``.

    Returns:
        ``+0.00123 [-0.00040, +0.00310]`` (six decimals below 0.001, scientific notation below 1e-5), or an em dash without one.
    """
    if not isinstance(vs_preset, Mapping) or not all(finite(vs_preset.get(k)) for k in ("diff", "low", "high")):
        return DASH
    values = [float(vs_preset[k]) for k in ("diff", "low", "high")]
    scale = max(abs(v) for v in values)
    diff, low, high = (_signed(v, scale) for v in values)
    return f"{diff} [{low}, {high}]"


def _order(values: Sequence[str], first: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in first if v in seen] + [v for v in seen if v not in first]


def sorted_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows in display order.

    Args:
        rows: saved rows (``text``, ``preset``, ``method``).

    Returns:
        The rows by text (file order), preset (:data:`PRESET_ORDER`, others after) and method
        (:data:`METHOD_ORDER`, others after).
    """
    texts = _order([str(r["text"]) for r in rows], ())
    presets = _order([str(r["preset"]) for r in rows], PRESET_ORDER)
    methods = _order([str(r["method"]) for r in rows], METHOD_ORDER)
    return sorted(
        rows,
        key=lambda r: (texts.index(str(r["text"])), presets.index(str(r["preset"])), methods.index(str(r["method"]))),
    )


def _number(value: Any, scale: float = 1.0) -> float:
    return float(value) * scale if finite(value) else math.nan


def results_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The results table.

    Args:
        rows: a results file's rows.

    Returns:
        One line per (text, preset, method): file MB, mean KLD, paired interval to the preset, p99 KLD, same top
        token %, perplexity and verdict; the text column is left out when all rows share one text.
    """
    ordered = sorted_rows(rows)
    frame = pd.DataFrame(
        {
            "text": [str(r["text"]) for r in ordered],
            "preset": [str(r["preset"]) for r in ordered],
            "method": [str(r["method"]) for r in ordered],
            "file MB": [_number(r.get("file_bytes"), 1e-6) for r in ordered],
            "mean KLD": [_number(r.get("mean_kld")) for r in ordered],
            "\u0394 vs preset [95 % CI]": [
                "reference" if r["method"] == PRESET else interval_text(r.get("vs_preset")) for r in ordered
            ],
            "p99 KLD": [_number(r.get("p99_kld")) for r in ordered],
            "same top %": [_number(r.get("same_top"), 100.0) for r in ordered],
            "perplexity": [_number(r.get("ppl")) for r in ordered],
            "verdict": ["reference" if r["method"] == PRESET else verdict(r.get("vs_preset")) for r in ordered],
        }
    )
    return frame.drop(columns="text") if frame["text"].nunique() <= 1 else frame


def verdict_tally(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """How often each method beats the preset.

    Args:
        rows: a results file's rows.

    Returns:
        Per method (the preset left out): the number of (text, preset) it wins, ties and loses.
    """
    ordered = [r for r in sorted_rows(rows) if r["method"] != PRESET]
    methods = list(dict.fromkeys(str(r["method"]) for r in ordered))
    counts = {m: {"win": 0, "tie": 0, "loss": 0} for m in methods}
    for r in ordered:
        outcome = verdict(r.get("vs_preset"))
        if outcome in counts[str(r["method"])]:
            counts[str(r["method"])][outcome] += 1
    return pd.DataFrame([{"method": m, **c} for m, c in counts.items()], columns=["method", "win", "tie", "loss"])


def study_table(rows: Sequence[Mapping[str, Any]], scores: Mapping[str, Any], text: str | None = None) -> pd.DataFrame:
    """The study's grid.

    Args:
        rows: a study file's rows.
        scores: its ``form_scores`` (may be empty: a partial run).
        text: keep only this text's rows, with one column per preset (default: every text, "text · preset").

    Returns:
        Importance form x preset (or "text · preset") mean KLD; the preset first, then the forms best score first.
    """
    ordered = [r for r in sorted_rows(rows) if text is None or str(r["text"]) == text]

    def column(r: Mapping[str, Any]) -> str:
        return str(r["preset"]) if text is not None else f"{r['text']} \u00b7 {r['preset']}"

    columns = list(dict.fromkeys(column(r) for r in ordered))
    ranked = [f for f, _ in sorted_scores(scores)]
    forms = _order([str(r["method"]) for r in ordered], [PRESET, *ranked])
    grid = {f: dict.fromkeys(columns, math.nan) for f in forms}
    for r in ordered:
        grid[str(r["method"])][column(r)] = _number(r.get("mean_kld"))
    return pd.DataFrame([{"form": f, **grid[f]} for f in forms], columns=["form", *columns])


def sorted_scores(scores: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The saved form scores in rank order.

    Args:
        scores: form -> mean over (text, preset) of its mean KLD / the preset's (lower is better).

    Returns:
        (form, score) pairs, best first; non-numbers (NaN) last.
    """
    items = [(str(k), _number(v)) for k, v in scores.items()]
    return sorted(items, key=lambda kv: (not math.isfinite(kv[1]), kv[1] if math.isfinite(kv[1]) else 0.0))


def scores_table(scores: Mapping[str, Any]) -> pd.DataFrame:
    """The form scores as a table.

    Args:
        scores: the study file's ``form_scores``.

    Returns:
        Rank, form, score and a note marking :data:`DEFAULT_FORM`, best first.
    """
    return pd.DataFrame(
        [
            {"rank": i, "form": form, "mean KLD / preset's": value, "note": "default" if form == DEFAULT_FORM else ""}
            for i, (form, value) in enumerate(sorted_scores(scores), start=1)
        ],
        columns=["rank", "form", "mean KLD / preset's", "note"],
    )


def size_kld_figure(rows: Sequence[Mapping[str, Any]]) -> Figure | None:
    """File size (MB) against mean KLD (log scale) on the first text, one line per method, presets labelled.

    Args:
        rows: a results file's rows.

    Returns:
        The figure, or None when no row has a positive mean KLD and a size.
    """
    ordered = sorted_rows(rows)
    text = ordered[0]["text"]
    usable = [
        r for r in ordered if r["text"] == text and finite(r.get("file_bytes")) and _number(r.get("mean_kld")) > 0
    ]
    if not usable:
        return None
    fig = new_figure(7.2, 4.4)
    ax = fig.add_subplot()
    markers = "osD^vP*X"
    for i, method in enumerate(dict.fromkeys(str(r["method"]) for r in usable)):
        points = sorted((float(r["file_bytes"]) / 1e6, float(r["mean_kld"])) for r in usable if r["method"] == method)
        style = {"color": "black", "linestyle": "--", "linewidth": 1.4} if method == PRESET else {"linewidth": 1.2}
        ax.plot(*zip(*points), marker=markers[i % len(markers)], markersize=4, label=method, **style)
    for r in usable:
        if r["method"] == PRESET:
            ax.annotate(
                str(r["preset"]),
                (float(r["file_bytes"]) / 1e6, float(r["mean_kld"])),
                textcoords="offset points",
                xytext=(4, 5),
                fontsize=7,
                color="#4a5262",
            )
    ax.set_yscale("log")
    ax.set_xlabel("GGUF file size (MB)")
    ax.set_ylabel(f"mean KL divergence from F16 ({text})")
    ax.grid(alpha=0.3, which="both")
    style_axes(ax)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


__all__ = [
    "DEFAULT_FORM",
    "METHOD_ORDER",
    "PRESET",
    "PRESET_ORDER",
    "VERDICT_CLASS",
    "finite",
    "fmt_value",
    "interval_text",
    "results_table",
    "scores_table",
    "size_kld_figure",
    "sorted_rows",
    "sorted_scores",
    "study_table",
    "verdict",
    "verdict_tally",
]
