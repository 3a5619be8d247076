"""Report figures built on ``matplotlib.figure.Figure`` directly (no pyplot state, no global style).

Each function takes saved tables/arrays and returns a Figure (or None when there is nothing to draw);
embed it with :func:`alphaq.report.page.figure_html`. matplotlib and seaborn are imported inside the
functions so importing this module is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: weightwatcher's bounds: alpha below is over-trained, above is under-trained.
ALPHA_BOUNDS = (2.0, 6.0)
#: ``alphaq.audit.analysis.compress_spectrum`` keeps this many top eigenvalues exactly, the rest as quantiles.
COMPRESSED_TAIL = 256
#: Points drawn per ESD curve (log-spaced in rank, dense in the tail) to keep pages small.
ESD_POINTS = 160
#: Heatmaps with at most this many cells (and <= 16 experts) print the value in each cell.
ANNOTATE_MAX_CELLS = 256
#: Rug marks are drawn when a distribution panel has at most this many values.
RUG_MAX_POINTS = 600
_NAN_COLOR = "#c9cdd4"
_FLAG_COLOR = "#e4572e"
_STYLE = {
    "axes.edgecolor": "#9aa3b0",
    "grid.color": "#e6e9ee",
    "axes.labelcolor": "#2b3240",
    "xtick.color": "#4a5262",
    "ytick.color": "#4a5262",
    "font.family": "sans-serif",
}


@dataclass(frozen=True)
class EsdCurve:
    """One matrix's spectrum for an ESD panel.

    Attributes:
        label: legend text (e.g. the projection name).
        evals: eigenvalues, ascending; possibly compressed (see :func:`spectrum_ccdf`).  # [K]
        xmin: start of the fitted power-law tail (NaN when not fitted).
        alpha: fitted exponent (NaN when not fitted).
        num_evals: eigenvalues of the full spectrum (details.csv ``num_evals``); NaN when unknown.
    """

    label: str
    evals: np.ndarray
    xmin: float = math.nan
    alpha: float = math.nan
    num_evals: float = math.nan


@dataclass(frozen=True)
class EsdPanel:
    """One subplot: a title and its curves (no curves: the panel says the spectra were not saved)."""

    title: str
    curves: tuple[EsdCurve, ...]


def alpha_heatmap(experts: pd.DataFrame) -> Figure | None:
    """Layer x expert heatmap of each routed expert's mean alpha; NaN (failed) cells grey, flagged cells outlined.

    Args:
        experts: experts.csv rows (layer, expert, role, alpha_mean, quality).

    Returns:
        The Figure, or None when there is no routed expert.
    """
    import seaborn as sns
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    routed = experts[(experts["role"] == "expert") & experts["layer"].notna() & experts["expert"].notna()]
    if routed.empty:
        return None
    grid = routed.groupby(["layer", "expert"])["alpha_mean"].mean().unstack("expert")  # [L, E]
    grid = grid.sort_index().sort_index(axis=1).astype(float)
    grid.index = [int(v) for v in grid.index]
    grid.columns = [int(v) for v in grid.columns]
    n_layers, n_experts = grid.shape
    values = grid.to_numpy()
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        vmin, vmax = ALPHA_BOUNDS
    else:
        vmin, vmax = (float(v) for v in np.percentile(finite, [2, 98]))
        if vmax - vmin < 1e-6:
            vmin, vmax = vmin - 0.5, vmax + 0.5
    annotate = values.size <= ANNOTATE_MAX_CELLS and n_experts <= 16
    width = min(max(3.2 + 0.5 * n_experts, 6.5), 13.0)
    height = min(max(1.5 + (0.42 if annotate else 0.22) * n_layers, 2.6), 12.0)
    extend = _colorbar_extend(finite, vmin, vmax)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.set_facecolor(_NAN_COLOR)
    sns.heatmap(
        grid,
        ax=ax,
        cmap="viridis",
        vmin=vmin,
        vmax=vmax,
        annot=annotate,
        fmt=".2f",
        annot_kws={"fontsize": 8},
        linewidths=0.4 if annotate else 0.0,
        linecolor="white",
        cbar_kws={
            "label": "mean \u03b1 (lower = heavier tail)",
            "pad": 0.015,
            "fraction": 0.035,
            "aspect": 45,
            "extend": extend,
        },
        xticklabels="auto",
        yticklabels="auto",
    )
    ax.collections[0].set_rasterized(True)
    if annotate:
        for row, col in zip(*np.where(~np.isfinite(values))):
            ax.text(col + 0.5, row + 0.5, "failed", ha="center", va="center", fontsize=7.5, color="#3b4250")
    flagged = routed[~routed["quality"].isin(["ok", "failed"])]
    if not flagged.empty:
        row_of = {layer: i for i, layer in enumerate(grid.index)}
        col_of = {expert: j for j, expert in enumerate(grid.columns)}
        boxes = [
            Rectangle((col_of[int(expert)] + 0.06, row_of[int(layer)] + 0.06), 0.88, 0.88)
            for layer, expert in zip(flagged["layer"], flagged["expert"])
        ]
        outline = PatchCollection(boxes, facecolor="none", edgecolor=_FLAG_COLOR, linewidth=1.6 if annotate else 1.0)
        outline.set_rasterized(not annotate)  # one image with the cells instead of thousands of SVG paths
        ax.add_collection(outline)
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.tick_params(axis="both", labelsize=8, length=0)
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return fig


def alpha_distribution(details: pd.DataFrame) -> Figure | None:
    """Histograms of fitted alpha per role (left) and per projection of the expert matrices (right).

    Each group is normalised on its own (density), so small groups stay visible; dashed lines mark the
    over-/under-trained bounds. Values beyond the 99th percentile (at least 6.5) are clipped to the edge.

    Args:
        details: details.csv rows (role, proj, alpha, status).

    Returns:
        The Figure, or None when no fit succeeded.
    """
    import seaborn as sns

    alpha = details["alpha"].astype(float)
    ok = details[(details["status"] == "success") & np.isfinite(alpha)].copy()
    if ok.empty:
        return None
    ok["alpha"] = ok["alpha"].astype(float)
    lower = min(float(ok["alpha"].min()), ALPHA_BOUNDS[0]) - 0.25
    upper = max(float(ok["alpha"].quantile(0.99)), ALPHA_BOUNDS[1] + 0.5) + 0.25
    clipped = int((ok["alpha"] > upper).sum())
    ok["alpha_shown"] = ok["alpha"].clip(upper=upper)
    bins = np.linspace(lower, upper, 41)
    experts = ok[ok["role"] == "expert"]
    right = experts if not experts.empty else ok
    right_title = "expert matrices by projection" if not experts.empty else "all matrices by projection"
    fig = _figure(12.0, 3.6)
    with sns.axes_style("whitegrid", _STYLE):
        axes = fig.subplots(1, 2)
        for ax, frame, hue, title in (
            (axes[0], ok, "role", "all matrices by role"),
            (axes[1], right, "proj", right_title),
        ):
            order = sorted(frame[hue].astype(str).unique())
            palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
            data = frame.assign(**{hue: frame[hue].astype(str)})
            sns.histplot(
                data=data,
                x="alpha_shown",
                hue=hue,
                hue_order=order,
                palette=palette,
                bins=bins,
                stat="density",
                common_norm=False,
                element="step",
                fill=True,
                alpha=0.18,
                linewidth=1.2,
                ax=ax,
            )
            if len(data) <= RUG_MAX_POINTS:
                sns.rugplot(
                    data=data,
                    x="alpha_shown",
                    hue=hue,
                    hue_order=order,
                    palette=palette,
                    height=0.04,
                    linewidth=0.8,
                    alpha=0.7,
                    legend=False,
                    ax=ax,
                )
            _style_axes(ax)
            for bound in ALPHA_BOUNDS:
                ax.axvline(bound, color="#7a8291", linestyle="--", linewidth=0.9)
            ax.text(
                ALPHA_BOUNDS[0],
                1.0,
                " over-trained \u2190",
                transform=ax.get_xaxis_transform(),
                ha="right",
                va="bottom",
                fontsize=7.5,
                color="#5b6475",
            )
            ax.text(
                ALPHA_BOUNDS[1],
                1.0,
                "\u2192 under-trained ",
                transform=ax.get_xaxis_transform(),
                ha="left",
                va="bottom",
                fontsize=7.5,
                color="#5b6475",
            )
            ax.set_title(f"{title} (n={len(data)})", fontsize=10, pad=14)
            label = "\u03b1 (power-law exponent)"
            ax.set_xlabel(label + (f"; {clipped} values > {upper:.1f} clipped" if clipped and frame is ok else ""))
            ax.set_ylabel("density (per group)")
            if ax.get_legend() is not None:
                sns.move_legend(ax, "upper right", title=hue, frameon=False, fontsize=8, title_fontsize=8.5)
    fig.tight_layout()
    return fig


def esd_figure(panels: Sequence[EsdPanel]) -> Figure | None:
    """Empirical spectral densities as log-log CCDFs with each fitted power-law tail.

    The tail line starts at xmin with slope ``1 - alpha`` (the CCDF of a density ``~ x^-alpha``), anchored on
    the empirical CCDF at xmin; a dot marks xmin. Curves are downsampled to :data:`ESD_POINTS` points.

    Args:
        panels: up to 4 panels, drawn side by side.

    Returns:
        The Figure, or None when ``panels`` is empty.
    """
    import seaborn as sns

    if not panels:
        return None
    panels = list(panels)[:4]
    fig = _figure(max(3.9 * len(panels), 5.0), 3.7)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, panel in zip(axes, panels):
        colors = sns.color_palette("colorblind", max(len(panel.curves), 1))
        ax.set_title(panel.title, fontsize=9.5)
        drawn = 0
        for color, curve in zip(colors, panel.curves):
            drawn += _draw_curve(ax, curve, color)
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "spectra not saved",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="#6b7280",
                fontsize=9,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue \u03bb")
        ax.set_ylabel("P(\u039b \u2265 \u03bb)")
        _style_axes(ax)
        ax.grid(True, which="major", color="#e6e9ee", linewidth=0.6)
        ax.legend(fontsize=7.5, frameon=False, loc="lower left")
    fig.tight_layout()
    return fig


def esd_panels(details: pd.DataFrame, experts: pd.DataFrame, spectra: Mapping[str, Any]) -> list[EsdPanel]:
    """The ESD panels of an inspect run: best / median / worst routed expert by mean alpha (all of its saved
    matrices), then up to 4 other saved spectra, highest alpha first.

    Args:
        details: details.csv rows (name, layer, expert, proj, role, num_evals).
        experts: experts.csv rows (layer, expert, role, alpha_mean).
        spectra: matrix name -> object with ``evals``, ``xmin``, ``alpha`` (spectra.npz).

    Returns:
        The panels, possibly empty; an expert whose spectra were not saved gets a panel without curves.
    """
    by_name = details.drop_duplicates("name").set_index("name")

    def curve(label: str, name: str) -> EsdCurve:
        spectrum = spectra[name]
        num_evals = by_name.at[name, "num_evals"] if name in by_name.index and "num_evals" in by_name else None
        num_evals = float(num_evals) if _present(num_evals) else math.nan
        return EsdCurve(label or name, spectrum.evals, spectrum.xmin, spectrum.alpha, num_evals)

    routed = experts[(experts["role"] == "expert") & experts["alpha_mean"].astype(float).notna()]
    routed = routed.sort_values("alpha_mean", kind="mergesort")
    panels: list[EsdPanel] = []
    used: set[str] = set()
    last = len(routed) - 1
    picks = (
        [(0, "Best"), (len(routed) // 2, "Median"), (last, "Worst")]
        if last >= 2
        else [(0, "Best")] + ([(last, "Worst")] if last > 0 else [])
    )
    for position, label in picks if not routed.empty else []:
        row = routed.iloc[position]
        mask = (details["layer"] == row["layer"]) & (details["expert"] == row["expert"]) & (details["role"] == "expert")
        names = [n for n in details.loc[mask, "name"] if n in spectra]
        used.update(names)
        panels.append(
            EsdPanel(
                f"{label}: layer {row['layer']}, expert {row['expert']} (mean \u03b1 {float(row['alpha_mean']):.2f})",
                tuple(curve(str(by_name.at[n, "proj"]), n) for n in names),
            )
        )
    others = sorted(
        (n for n in spectra if n not in used),
        key=lambda n: -spectra[n].alpha if math.isfinite(spectra[n].alpha) else math.inf,
    )
    if others:
        title = "Highest-\u03b1 matrices" if panels else "Saved spectra (highest \u03b1 first)"
        panels.append(EsdPanel(title, tuple(curve(_short_name(n, by_name), n) for n in others[:4])))
    return panels


def spectrum_ccdf(evals: np.ndarray, num_evals: float = math.nan) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending, finite) and their empirical CCDF ``P(X >= x)``.

    A compressed spectrum (fewer points than ``num_evals``; see ``alphaq.audit.analysis.compress_spectrum``) keeps the
    top :data:`COMPRESSED_TAIL` eigenvalues exactly and equally spaced quantiles of the rest; each point is
    weighted accordingly so the CCDF is that of the full spectrum.

    Args:
        evals: eigenvalues.  # [K]
        num_evals: size of the full spectrum; NaN when unknown (then ``evals`` is taken as complete).

    Returns:
        ``(x, ccdf)``, both ``[K']``; ccdf is 1 at the smallest value and ``1/N`` at the largest.
    """
    x = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    x = x[np.isfinite(x)]
    m = x.size
    n = float(num_evals) if num_evals is not None and math.isfinite(float(num_evals)) else float(m)
    if n > m and m > COMPRESSED_TAIL + 1:
        head = m - COMPRESSED_TAIL
        q = np.arange(head) / (head - 1)
        c_head = ((1.0 - q) * (n - COMPRESSED_TAIL) + COMPRESSED_TAIL) / n
        c_tail = (COMPRESSED_TAIL - np.arange(COMPRESSED_TAIL)) / n
        return x, np.concatenate([c_head, c_tail])
    return x, (m - np.arange(m)) / max(m, 1)


def loglog_subsample(n: int, max_points: int = ESD_POINTS) -> np.ndarray:
    """Indices (ascending) of at most ``max_points`` of ``n`` sorted values, log-spaced in rank from the top.

    Keeps every one of the largest values and thins the bulk, which is what a log-log CCDF shows.
    """
    if n <= max_points:
        return np.arange(n)
    ranks = np.unique(np.round(np.geomspace(1, n, max_points)).astype(np.int64))  # 1 = largest
    return np.sort(n - ranks)


# -- internals ---------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, facecolor="white")


def _colorbar_extend(finite: np.ndarray, vmin: float, vmax: float) -> str:
    """Colorbar arrows for values the robust colour range clips."""
    low = bool(finite.size and finite.min() < vmin)
    high = bool(finite.size and finite.max() > vmax)
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[(low, high)]


def _style_axes(ax: Axes) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9aa3b0")
    ax.tick_params(labelsize=8, colors="#4a5262")
    ax.xaxis.label.set_size(9)
    ax.yaxis.label.set_size(9)


def _draw_curve(ax: Axes, curve: EsdCurve, color: tuple[float, float, float]) -> int:
    """Draw one CCDF and its fitted tail; returns 1 when something was drawn."""
    x, ccdf = spectrum_ccdf(curve.evals, curve.num_evals)
    positive = x > 0
    x, ccdf = x[positive], ccdf[positive]
    if x.size < 2:
        return 0
    idx = loglog_subsample(x.size)
    fitted = math.isfinite(curve.alpha) and math.isfinite(curve.xmin) and curve.xmin > 0 and curve.alpha > 1
    label = f"{curve.label}  \u03b1={curve.alpha:.2f}" if fitted else f"{curve.label}  (no fit)"
    ax.plot(x[idx], ccdf[idx], color=color, linewidth=1.3, label=label)
    if fitted:
        start = int(np.searchsorted(x, curve.xmin, side="left"))
        if start < x.size:
            c0 = float(ccdf[start])
            xs = np.array([curve.xmin, x[-1]])
            ax.plot(
                xs, c0 * (xs / curve.xmin) ** (1.0 - curve.alpha), color=color, linestyle="--", linewidth=1.1, alpha=0.9
            )
            ax.plot(
                [curve.xmin],
                [c0],
                marker="o",
                markersize=4,
                color=color,
                markeredgecolor="white",
                markeredgewidth=0.6,
                linestyle="none",
            )
    return 1


def _short_name(name: str, by_name: pd.DataFrame) -> str:
    """``L3 E5 up_proj`` from the details row, else the name's last three parts."""
    if name in by_name.index:
        row = by_name.loc[name]
        parts = [f"{prefix}{row[key]}" for prefix, key in (("L", "layer"), ("E", "expert")) if _present(row[key])]
        if row["proj"]:
            return " ".join([*parts, str(row["proj"])])
    return ".".join(name.split(".")[-3:])


def _present(value: Any) -> bool:
    """Not None, NaN or pd.NA."""
    import pandas as pd

    return value is not None and not bool(pd.isna(value))
