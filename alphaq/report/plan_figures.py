"""Figures of the plan page, on ``matplotlib.figure.Figure`` directly (no pyplot state, no global style).

Each function takes tables read from a plan run folder and returns a Figure, or None when there is nothing
to draw; embed it with :func:`alphaq.report.page.figure_html`. Large point clouds and grids are rasterized
so that a 58-layer x 256-expert plan stays a small page. matplotlib and seaborn load inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

from alphaq.report.figures import ANNOTATE_MAX_CELLS, _figure, _style_axes

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: Allocator drawn in the accent colour on the sweep figure.
HIGHLIGHT_ALLOCATOR = "alphaq"
#: Display names of the registered allocators (others are shown as given).
ALLOCATOR_LABELS = {
    "alphaq": "AlphaQ",
    "uniform": "uniform",
    "random": "random",
    "alpha_ratio": "alpha ratio",
    "weight_norm": "weight norm",
    "frequency": "routing frequency",
}
#: Order of the projections on a layer x projection map.
PROJ_ORDER = ("gate", "gate_proj", "w1", "up", "up_proj", "w3", "down", "down_proj", "w2")
#: Seed of the vertical jitter of the alpha-vs-bits scatter (fixed: pages are reproducible).
JITTER_SEED = 0
_ACCENT = "#2f5d8a"
_FAILED = "#e4572e"
_WIDTH_RANGE = (1, 8)


def width_color(bits: float) -> tuple[float, float, float, float]:
    """The colour of a width, the same on every page: viridis over 1..8 bits, grey for bf16."""
    from matplotlib import colormaps

    if bits > _WIDTH_RANGE[1]:
        return (0.62, 0.65, 0.70, 1.0)
    lo, hi = _WIDTH_RANGE
    return tuple(colormaps["viridis"]((float(bits) - lo) / (hi - lo)))  # type: ignore[return-value]


def bits_grid(tensors: pd.DataFrame, column: str) -> pd.DataFrame:
    """Parameter-weighted mean width of the routed-expert matrices, layer x ``column`` (expert or proj).

    Args:
        tensors: plan tensors (layer, expert, proj, params, bits) of the routed experts.
        column: ``"expert"`` or ``"proj"``.

    Returns:
        A float frame indexed by layer, one column per expert (ascending) or projection (gate, up, down).
    """
    import pandas as pd

    rows = tensors[tensors["layer"].notna() & tensors[column].notna()]
    if rows.empty:
        return pd.DataFrame(dtype=float)
    weighted = rows.assign(
        _pb=rows["params"].astype(float) * rows["bits"].astype(float),
        _p=rows["params"].astype(float),
        _c=rows[column].astype(object),
    )
    sums = weighted.groupby([weighted["layer"].astype(int), "_c"])[["_pb", "_p"]].sum()
    grid = (sums["_pb"] / sums["_p"]).unstack("_c")  # [L, E] or [L, P]
    order = (
        sorted(grid.columns, key=lambda c: (PROJ_ORDER.index(c) if c in PROJ_ORDER else len(PROJ_ORDER), str(c)))
        if column == "proj"
        else sorted(grid.columns, key=int)
    )
    grid = grid.sort_index()[order].astype(float)
    grid.index.name, grid.columns.name = "layer", column
    return grid


def bits_heatmap(
    grid: pd.DataFrame,
    *,
    widths: Sequence[int] = (),
    failed: Collection[tuple[int, object]] = (),
    xlabel: str = "expert",
) -> Figure | None:
    """Layer x expert (or projection) map of the planned widths.

    Integral grids (one width per cell) get a discrete colour per candidate width; mean widths (matrix
    granularity) a continuous scale. Cells of units without a fitted alpha are outlined.

    Args:
        grid: from :func:`bits_grid`.
        widths: the plan's candidate widths (colour-bar ticks); the widths present when empty.
        failed: (layer, column value) cells to outline.
        xlabel: x axis label.

    Returns:
        The Figure, or None for an empty grid.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
    from matplotlib.patches import Rectangle

    if grid.empty:
        return None
    values = grid.to_numpy(dtype=float)  # [L, X]
    finite = values[np.isfinite(values)]
    n_rows, n_cols = values.shape
    discrete = bool(finite.size) and bool(np.all(finite == np.round(finite)))
    ticks = sorted({int(w) for w in widths} | ({int(v) for v in finite} if discrete else set()))
    if not ticks:
        ticks = [int(math.floor(finite.min())), int(math.ceil(finite.max()))] if finite.size else [2, 8]
    if discrete:
        cmap = ListedColormap([width_color(w) for w in ticks])
        edges = [ticks[0] - 0.5, *[(a + b) / 2 for a, b in zip(ticks, ticks[1:])], ticks[-1] + 0.5]
        norm = BoundaryNorm(edges, cmap.N)
    else:
        lo, hi = min(ticks[0], float(finite.min())), max(ticks[-1], float(finite.max()))
        cmap = ListedColormap([width_color(v) for v in np.linspace(lo, hi, 256)])  # same colours as discrete
        norm = Normalize(lo, hi)
    cmap = cmap.with_extremes(bad="#c9cdd4")
    annotate = values.size <= ANNOTATE_MAX_CELLS and n_cols <= 16
    width = min(max(3.4 + (0.55 if annotate else 0.05) * n_cols, 6.5), 13.0)
    height = min(max(1.5 + (0.4 if annotate else 0.14) * n_rows, 2.6), 10.0)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    image.set_rasterized(True)
    bar = fig.colorbar(
        image,
        ax=ax,
        pad=0.015,
        fraction=0.035,
        aspect=40,
        **({"ticks": ticks, "spacing": "uniform"} if discrete else {}),
    )
    bar.set_label("planned bits" + ("" if discrete else " (parameter-weighted mean)"), fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if annotate:
        for (row, col), value in np.ndenumerate(values):
            if math.isfinite(value):
                text = f"{value:.0f}" if discrete else f"{value:.2f}"
                ax.text(
                    col,
                    row,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value < (ticks[0] + ticks[-1]) / 2 else "#1d2330",
                )
        ax.set_xticks(np.arange(n_cols) - 0.5, minor=True)
        ax.set_yticks(np.arange(n_rows) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=1.2)
        ax.tick_params(which="minor", length=0)
    if failed:
        row_of = {int(v): i for i, v in enumerate(grid.index)}
        col_of = {str(v): j for j, v in enumerate(grid.columns)}
        for layer, key in sorted(failed, key=str):
            if int(layer) in row_of and str(key) in col_of:
                ax.add_patch(
                    Rectangle(
                        (col_of[str(key)] - 0.44, row_of[int(layer)] - 0.44),
                        0.88,
                        0.88,
                        facecolor="none",
                        edgecolor=_FAILED,
                        linewidth=1.6 if annotate else 0.8,
                    )
                )
    _label_ticks(ax, grid, annotate)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("layer", fontsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout()
    return fig


def alpha_bits_scatter(points: pd.DataFrame) -> Figure | None:
    """Each routed expert's mean alpha against its planned (parameter-weighted mean) width.

    Widths are jittered vertically (fixed seed) so that equal widths do not overlap; diamonds mark the
    median alpha at each width.

    Args:
        points: one row per expert with ``layer``, ``alpha`` and ``bits``.

    Returns:
        The Figure, or None when no expert has a finite alpha.
    """
    import seaborn as sns

    ok = points[np.isfinite(points["alpha"].astype(float)) & np.isfinite(points["bits"].astype(float))]
    if ok.empty:
        return None
    alpha = ok["alpha"].to_numpy(dtype=float)
    bits = ok["bits"].to_numpy(dtype=float)
    layers = ok["layer"].astype(float).fillna(0.0).to_numpy()
    jitter = np.random.default_rng(JITTER_SEED).uniform(-0.13, 0.13, bits.size)
    fig = _figure(7.2, 4.0)
    with sns.axes_style("whitegrid"):
        ax = fig.add_subplot()
    dots = ax.scatter(
        alpha, bits + jitter, c=layers, cmap="crest", s=14 if bits.size < 2000 else 5, alpha=0.75, linewidths=0
    )
    dots.set_rasterized(bits.size > 400)
    if np.nanmax(layers) > np.nanmin(layers):
        from matplotlib.ticker import MaxNLocator

        bar = fig.colorbar(dots, ax=ax, pad=0.015, fraction=0.04, aspect=35)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
        bar.set_label("layer", fontsize=9)
        bar.ax.tick_params(labelsize=8)
    if np.all(bits == np.round(bits)):
        for width in np.unique(bits):
            ax.plot(
                [float(np.median(alpha[bits == width]))],
                [width],
                marker="D",
                markersize=7,
                color="#1d2330",
                markerfacecolor="white",
                markeredgewidth=1.4,
                linestyle="none",
                zorder=5,
            )
        ax.set_yticks(np.unique(bits))
    _style_axes(ax)
    ax.set_xlabel("expert mean \u03b1 (lower = heavier tail = better trained)")
    ax.set_ylabel("planned bits")
    fig.tight_layout()
    return fig


def bits_histogram(tensors: pd.DataFrame) -> Figure | None:
    """Parameters at each width, stacked by role (routed experts first); bf16 (16) is its own bar.

    Args:
        tensors: plan tensors with ``bits``, ``params`` and ``role``.

    Returns:
        The Figure, or None for no tensors.
    """
    import seaborn as sns

    if tensors.empty:
        return None
    table = tensors.groupby(["bits", "role"])["params"].sum().unstack("role", fill_value=0).sort_index()  # [W, R]
    roles = sorted(table.columns, key=lambda r: (r != "expert", str(r)))
    table = table[roles].astype(float)
    total = float(table.to_numpy().sum())
    scale, unit = _param_scale(float(table.sum(axis=1).max()))
    others = iter(sns.color_palette("colorblind", max(len(roles), 2))[1:])
    colors = [_ACCENT if role == "expert" else next(others) for role in roles]
    fig = _figure(7.2, 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(table))
    bottom = np.zeros(len(table))
    for role, color in zip(roles, colors):
        heights = table[role].to_numpy() / scale
        label = "routed experts" if role == "expert" else str(role).replace("_", " ")
        ax.bar(x, heights, bottom=bottom, color=color, width=0.7, label=label, edgecolor="white", linewidth=0.6)
        bottom += heights
    for xi, height, params in zip(x, bottom, table.sum(axis=1)):
        ax.text(xi, height, f"{100 * params / total:.1f}%", ha="center", va="bottom", fontsize=8, color="#3b4250")
    ax.set_xticks(x, [f"{b}\n(bf16)" if b == 16 else str(b) for b in table.index])
    ax.set_xlabel("bits")
    ax.set_ylabel(f"parameters ({unit})")
    ax.margins(y=0.12)
    _style_axes(ax)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def sweep_figure(sweep: pd.DataFrame, *, current: tuple[float, float] | None = None) -> Figure | None:
    """Predicted error against average payload bits, one line per allocator, AlphaQ highlighted.

    Args:
        sweep: sweep.csv rows (allocator, average_payload_bits, predicted_error); NaN rows (infeasible) skipped.
        current: (average bits, predicted error) of the page's plan, starred.

    Returns:
        The Figure, or None when no row has both figures.
    """
    import seaborn as sns

    x = sweep["average_payload_bits"].astype(float)
    y = sweep["predicted_error"].astype(float)
    ok = sweep[np.isfinite(x) & np.isfinite(y)]
    if ok.empty:
        return None
    names = list(dict.fromkeys(ok["allocator"].astype(str)))
    names.sort(
        key=lambda n: (
            n != HIGHLIGHT_ALLOCATOR,
            list(ALLOCATOR_LABELS).index(n) if n in ALLOCATOR_LABELS else len(ALLOCATOR_LABELS),
            n,
        )
    )
    palette = iter(sns.color_palette("colorblind", len(names) + 1)[1:])
    fig = _figure(7.6, 4.0)
    ax = fig.add_subplot()
    for name in names:
        rows = ok[ok["allocator"].astype(str) == name].sort_values("average_payload_bits", kind="mergesort")
        main = name == HIGHLIGHT_ALLOCATOR
        ax.plot(
            rows["average_payload_bits"].astype(float),
            rows["predicted_error"].astype(float),
            color=_ACCENT if main else next(palette),
            linewidth=2.6 if main else 1.2,
            marker="o",
            markersize=5 if main else 3.5,
            alpha=1.0 if main else 0.85,
            zorder=4 if main else 2,
            label=ALLOCATOR_LABELS.get(name, name),
        )
    values = ok["predicted_error"].astype(float)
    if float(values.min()) > 0 and float(values.max()) / float(values.min()) > 20:
        ax.set_yscale("log")
    if current is not None and all(math.isfinite(v) for v in current):
        ax.plot(
            [current[0]],
            [current[1]],
            marker="*",
            markersize=14,
            color=_FAILED,
            markeredgecolor="white",
            linestyle="none",
            zorder=6,
            label="this plan",
        )
    _style_axes(ax)
    ax.grid(True, which="major", color="#e6e9ee", linewidth=0.6)
    ax.set_xlabel("average payload bits per expert weight")
    ax.set_ylabel("predicted error (parameter-weighted mean)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


# -- internals ---------------------------------------------------------------------------------------


def _label_ticks(ax: object, grid: pd.DataFrame, every: bool) -> None:
    """Tick labels on a grid: all of them when annotated, else at most ~32 per axis."""
    for axis, labels in ((ax.xaxis, list(grid.columns)), (ax.yaxis, list(grid.index))):  # type: ignore[attr-defined]
        step = 1 if every else max(1, math.ceil(len(labels) / 32))
        positions = np.arange(0, len(labels), step)
        axis.set_ticks(positions, [str(labels[i]) for i in positions])
    ax.tick_params(axis="both", labelsize=8, length=0)  # type: ignore[attr-defined]
    if not every and len(grid.columns) > 16:
        ax.tick_params(axis="x", rotation=90)  # type: ignore[attr-defined]


def _param_scale(largest: float) -> tuple[float, str]:
    for scale, unit in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if largest >= scale:
            return scale, unit
    return 1.0, "count"
