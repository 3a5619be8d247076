"""Report figures built on ``matplotlib.figure.Figure`` directly (no pyplot state, no global style).

Each function takes saved tables/arrays and returns a Figure (or None when there is nothing to draw);
embed it with :func:`alphaq.report.page.figure_html`. matplotlib and seaborn are imported inside the
functions so importing this module is cheap. This module holds the alpha heatmap and distribution; the ESD
figures live in :mod:`alphaq.report.esd_figures` and the shared styling in :mod:`alphaq.report.figure_style`
(both re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from alphaq.report.esd_figures import COMPRESSED_TAIL as COMPRESSED_TAIL
from alphaq.report.esd_figures import ESD_POINTS as ESD_POINTS
from alphaq.report.esd_figures import EsdCurve as EsdCurve
from alphaq.report.esd_figures import EsdPanel as EsdPanel
from alphaq.report.esd_figures import esd_figure as esd_figure
from alphaq.report.esd_figures import esd_panels as esd_panels
from alphaq.report.esd_figures import loglog_subsample as loglog_subsample
from alphaq.report.esd_figures import spectrum_ccdf as spectrum_ccdf
from alphaq.report.figure_style import new_figure as _figure
from alphaq.report.figure_style import style_axes as _style_axes

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: weightwatcher's bounds: alpha below is over-trained, above is under-trained.
ALPHA_BOUNDS = (2.0, 6.0)
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


# -- internals ---------------------------------------------------------------------------------------


def _colorbar_extend(finite: np.ndarray, vmin: float, vmax: float) -> str:
    """Colorbar arrows for values the robust colour range clips."""
    low = bool(finite.size and finite.min() < vmin)
    high = bool(finite.size and finite.max() > vmax)
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[(low, high)]
