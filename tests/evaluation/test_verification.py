from __future__ import annotations

import math

import pandas as pd
import pytest

from alphaq.evaluation.verification import (
    TENSOR_COLUMNS,
    expert_table,
    tensors_from_quantize_manifest,
    verification_summary,
)


def _tensors() -> pd.DataFrame:
    rows = []
    # layer 0: expert 0 at 4 bits (gate 100 params, down 300 params), expert 1 at 2 bits; one attention matrix
    for expert, bits, errors in ((0, 4, (0.1, 0.2)), (1, 2, (0.4, 0.5))):
        for proj, params, err in zip(("gate", "down"), (100, 300), errors):
            rows.append(
                {
                    "name": f"l0.e{expert}.{proj}",
                    "layer": 0,
                    "expert": expert,
                    "proj": proj,
                    "role": "expert",
                    "bits": bits,
                    "group_size": 32,
                    "params": params,
                    "predicted_error": err,
                    "rel_error": err + 0.01,
                    "bytes": params * bits // 8,
                    "predicted_bytes": params * bits // 8,
                }
            )
    rows.append(
        {
            "name": "l0.q",
            "layer": 0,
            "expert": None,
            "proj": "q",
            "role": "attention",
            "bits": 8,
            "group_size": 32,
            "params": 50,
            "predicted_error": 0.01,
            "rel_error": 0.01,
            "bytes": 50,
            "predicted_bytes": 50,
        }
    )
    return pd.DataFrame(rows, columns=TENSOR_COLUMNS)


def test_expert_table_is_parameter_weighted() -> None:
    table = expert_table(_tensors(), {(0, 0): 0.75, (0, 1): 0.25}, alphas={(0, 0): 2.5})
    assert list(table["expert"]) == [0, 1]  # the attention matrix is not an expert
    e0 = table.iloc[0]
    assert e0["params"] == 400 and e0["bits"] == 4
    assert e0["predicted_error"] == pytest.approx((100 * 0.1 + 300 * 0.2) / 400)
    assert e0["rel_error"] == pytest.approx((100 * 0.11 + 300 * 0.21) / 400)
    assert e0["bytes"] == 200 and e0["routing_share"] == 0.75 and e0["alpha"] == 2.5
    assert math.isnan(table.iloc[1]["alpha"]) and math.isnan(table.iloc[1]["routing_share_original"])


def test_summary_routing_share_by_width_and_spearman() -> None:
    tensors = _tensors()
    experts = expert_table(tensors, {(0, 0): 0.75, (0, 1): 0.25})
    summary = verification_summary(tensors, experts)
    assert summary["routing_share_by_bits"] == {"2": 0.25, "4": 0.75}
    assert summary["error_spearman"] == pytest.approx(1.0)  # measured = predicted + 0.01: same ranks
    weights = tensors["params"]
    assert summary["mean_rel_error"] == pytest.approx((tensors["rel_error"] * weights).sum() / weights.sum())
    assert summary["bytes"] == summary["predicted_bytes"] == tensors["bytes"].sum()


def test_empty_tables_give_nan_summary() -> None:
    empty = pd.DataFrame(columns=TENSOR_COLUMNS)
    summary = verification_summary(empty, expert_table(empty))
    assert summary["tensors"] == 0 and math.isnan(summary["mean_rel_error"]) and summary["routing_share_by_bits"] == {}


def test_tensors_from_quantize_manifest_keeps_quantized_only() -> None:
    manifest = {
        "tensors": [
            {
                "kind": "quantized",
                "name": "a",
                "layer": 1,
                "expert": 2,
                "proj": "up",
                "role": "expert",
                "bits": 3,
                "group_size": 64,
                "rows": 4,
                "cols": 8,
                "predicted_error": 0.2,
                "rel_error": 0.21,
                "bytes": 20,
                "predicted_bytes": 20,
            },
            {"kind": "dense", "name": "b", "rows": 4, "cols": 8, "bits": 16},
        ]
    }
    frame = tensors_from_quantize_manifest(manifest)
    assert list(frame["name"]) == ["a"] and frame.iloc[0]["params"] == 32
