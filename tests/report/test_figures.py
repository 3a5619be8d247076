from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alphaq.report.figures import (
    COMPRESSED_TAIL,
    EsdCurve,
    EsdPanel,
    alpha_distribution,
    alpha_heatmap,
    esd_figure,
    loglog_subsample,
    spectrum_ccdf,
)


def _experts(layers: int = 2, experts: int = 4) -> pd.DataFrame:
    rows = [
        {"layer": l, "expert": e, "role": "expert", "alpha_mean": 3.0 + 0.1 * e + l, "quality": "ok"}
        for l in range(layers)
        for e in range(experts)
    ]
    frame = pd.DataFrame(rows)
    frame.loc[1, "alpha_mean"] = np.nan
    frame.loc[1, "quality"] = "failed"
    frame.loc[2, "quality"] = "outlier-high"
    frame["layer"] = frame["layer"].astype("Int64")
    frame["expert"] = frame["expert"].astype("Int64")
    return frame


def test_spectrum_ccdf_uncompressed() -> None:
    x, c = spectrum_ccdf(np.array([3.0, 1.0, np.nan, 2.0, 4.0]))
    assert x.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert c.tolist() == [1.0, 0.75, 0.5, 0.25]


def test_spectrum_ccdf_reweights_a_compressed_spectrum() -> None:
    from alphaq.audit.run import compress_spectrum

    rng = np.random.default_rng(0)
    full = np.sort(rng.pareto(2.0, 5000) + 1.0)
    x, c = spectrum_ccdf(compress_spectrum(full), num_evals=5000)
    assert x.size == 1024 and c[0] == 1.0 and c[-1] == pytest.approx(1 / 5000)
    exact = 1.0 - np.searchsorted(full, x, side="left") / full.size  # P(X >= x) of the full spectrum
    assert np.max(np.abs(c - exact)) < 2e-3
    assert np.all(np.diff(c) <= 0)
    assert COMPRESSED_TAIL == 256


def test_loglog_subsample_keeps_the_tail() -> None:
    assert loglog_subsample(50, 100).tolist() == list(range(50))
    idx = loglog_subsample(1024, 160)
    assert idx.size <= 160 and np.all(np.diff(idx) > 0) and idx[0] == 0
    assert idx[-10:].tolist() == list(range(1014, 1024))  # every top eigenvalue


def test_alpha_heatmap() -> None:
    assert alpha_heatmap(_experts().assign(role="shared_expert")) is None
    fig = alpha_heatmap(_experts())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
    assert "failed" in [t.get_text() for t in ax.texts]  # the NaN cell, annotated
    outline = ax.collections[-1]
    assert len(outline.get_paths()) == 1  # one flagged (non-ok, non-failed) expert outlined
    all_nan = _experts().assign(alpha_mean=np.nan, quality="failed")
    assert alpha_heatmap(all_nan) is not None


def test_alpha_distribution() -> None:
    details = pd.DataFrame(
        {
            "role": ["expert"] * 6 + ["attention"] * 2,
            "proj": ["up", "down"] * 4,
            "alpha": [2.5, 3.0, 3.5, 4.0, 40.0, np.nan, 3.1, 3.2],
            "status": ["success"] * 5 + ["failed"] + ["success"] * 2,
        }
    )
    fig = alpha_distribution(details)
    left, right = fig.axes
    assert "n=7" in left.get_title() and "n=5" in right.get_title()
    assert "clipped" in left.get_xlabel()  # the alpha = 40 fit is drawn at the edge
    assert alpha_distribution(details.assign(status="failed")) is None


def test_esd_figure_tail_line_has_slope_one_minus_alpha() -> None:
    rng = np.random.default_rng(1)
    evals = np.sort(np.concatenate([rng.uniform(0.1, 1.0, 400), (1 - rng.uniform(0, 1, 100)) ** (-1 / 2.5)]))
    fig = esd_figure(
        [
            EsdPanel(
                "p",
                (EsdCurve("up", evals, xmin=1.0, alpha=3.5), EsdCurve("nofit", evals, xmin=math.nan, alpha=math.nan)),
            ),
            EsdPanel("empty", ()),
        ]
    )
    ax, empty = fig.axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    fit = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(fit) == 1
    (x0, x1), (y0, y1) = fit[0].get_data()
    assert x0 == 1.0 and math.log(y1 / y0) / math.log(x1 / x0) == pytest.approx(1 - 3.5)
    curve = ax.get_lines()[0]
    assert len(curve.get_xdata()) <= 160
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["up  \u03b1=3.50", "nofit  (no fit)"]
    assert "spectra not saved" in [t.get_text() for t in empty.texts]
    assert esd_figure([]) is None
