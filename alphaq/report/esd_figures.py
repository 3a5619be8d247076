"""Empirical spectral density (ESD) figures of inspect.html: each matrix's eigenvalue CCDF on log-log axes with
its fitted power-law tail, grouped into panels.

:func:`esd_panels` picks the panels from the saved tables and spectra; :func:`esd_figure` draws them.
matplotlib is imported inside the functions so importing this module is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.report.figure_style import new_figure as _figure
from alphaq.report.figure_style import style_axes as _style_axes

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: ``alphaq.audit.analysis.compress_spectrum`` keeps this many top eigenvalues exactly, the rest as quantiles.
COMPRESSED_TAIL = 256
#: Points drawn per ESD curve (log-spaced in rank, dense in the tail) to keep pages small.
ESD_POINTS = 160


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
