from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alphaq.audit.expert_quality import aggregate_experts, layer_summary, quality_label, robust_z


def _details(alphas: dict[tuple[int, int], list[float]]) -> pd.DataFrame:
    rows = []
    for (layer, expert), values in alphas.items():
        for proj, alpha in zip(("gate", "up", "down"), values):
            rows.append(
                {
                    "layer": layer,
                    "expert": expert,
                    "proj": proj,
                    "role": "expert",
                    "params": 100,
                    "alpha": alpha,
                    "alpha_weighted": alpha,
                    "log_norm": 1.0,
                    "stable_rank": 2.0,
                    "status": "success" if np.isfinite(alpha) else "failed",
                }
            )
    return pd.DataFrame(rows)


def test_robust_z_known_values():
    z = robust_z(pd.Series([1.0, 2.0, 3.0, 4.0, 100.0]))
    # median 3, MAD 1 -> z = (x - 3) / 1.4826
    assert z.tolist() == pytest.approx([-2 / 1.4826, -1 / 1.4826, 0.0, 1 / 1.4826, 97 / 1.4826])
    assert robust_z(pd.Series([2.0, 2.0, 2.0])).tolist() == [0.0, 0.0, 0.0]


def test_aggregate_ranks_and_flags():
    alphas = {(0, e): [3.0 + 0.01 * e] * 3 for e in range(8)}
    alphas[(0, 7)] = [3.0, 3.2, 9.0]  # weakest matrix: down, mean 5.07 -> outlier-high within the layer
    alphas[(0, 6)] = [np.nan, np.nan, np.nan]  # failed fits never count as over-trained
    alphas[(1, 0)] = [1.5, 1.6, 1.7]
    experts = aggregate_experts(_details(alphas))
    row7 = experts[(experts.layer == 0) & (experts.expert == 7)].iloc[0]
    assert row7.alpha_mean == pytest.approx(5.0666, abs=1e-3)
    assert (row7.weakest_proj, row7.weakest_alpha) == ("down", 9.0)
    assert row7.quality == "outlier-high" and row7.rank_in_layer == 7
    failed = experts[(experts.layer == 0) & (experts.expert == 6)].iloc[0]
    assert failed.quality == "failed" and pd.isna(failed.rank_in_layer) and failed.status == "failed"
    best = experts[(experts.layer == 0) & (experts.expert == 0)].iloc[0]
    assert best.rank_in_layer == 1
    assert experts[(experts.layer == 1)].iloc[0].quality == "over-trained"
    assert experts[experts.layer == 1].iloc[0].rank_global == 1
    summary = layer_summary(experts)
    assert summary.loc[summary.layer == 0, "outliers"].item() == 1


def test_quality_label_bounds():
    assert quality_label(1.9, 0.0) == "over-trained"
    assert quality_label(6.1, 0.0) == "under-trained"
    assert quality_label(4.0, -3.0) == "outlier-low"
    assert quality_label(float("nan"), 0.0) == "failed"
    assert quality_label(4.0, 1.0) == "ok"
