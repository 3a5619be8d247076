"""The shared look of the report figures: a blank white Figure of a given size, and the axes styling.

No pyplot state and no global style: each figure is a ``matplotlib.figure.Figure`` built directly; matplotlib is
imported inside the functions so importing this module is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    """A white ``width`` x ``height`` inch Figure at 100 dpi."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, facecolor="white")


def style_axes(ax: Axes) -> None:
    """Hide the top and right spines; grey the others and the ticks; small tick and label text."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9aa3b0")
    ax.tick_params(labelsize=8, colors="#4a5262")
    ax.xaxis.label.set_size(9)
    ax.yaxis.label.set_size(9)
