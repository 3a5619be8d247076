"""``InspectConfig(engine="weightwatcher")``: weightwatcher computes the rows; ``tail_test``: powerlaw's columns."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from alphaq.audit.analysis import DETAIL_COLUMNS
from alphaq.audit.run import InspectConfig, inspect
from alphaq.audit.ww_engine import weightwatcher_metrics
from alphaq.diagnostics.tail_compare import TAIL_COLUMNS
from alphaq.errors import ConfigError

P = "model.layers.0.block_sparse_moe"


def _checkpoint(tmp_path, tensors):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "mixtral", "hidden_size": 64, "num_hidden_layers": 1})
    )
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tmp_path


def _heavy_tailed(rows: int, cols: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return (torch.distributions.StudentT(3.0).sample((rows, cols)) * 0.05).contiguous()


@pytest.mark.slow
def test_weightwatcher_engine_matches_alphaq_on_the_demo_model():
    """Every matrix of the bundled demo model through weightwatcher 0.7.7 itself: alphas within 1e-4 relative of
    alphaq's own (float32) engine, and every fit column equal to alphaq's float64 engine to 1e-9."""
    theirs = inspect(None, InspectConfig(engine="weightwatcher"))
    ours32 = {row["name"]: row for row in inspect(None).detail_rows}
    ours64 = {row["name"]: row for row in inspect(None, InspectConfig(dtype="float64")).detail_rows}
    assert theirs.manifest["options"]["engine"] == "weightwatcher" and theirs.manifest["options"]["dtype"] == "float64"
    assert [row["name"] for row in theirs.detail_rows] == list(ours32) and len(ours32) > 100
    fitted = 0
    for row in theirs.detail_rows:
        own32, own64 = ours32[row["name"]], ours64[row["name"]]
        assert row["status"] == own32["status"] == own64["status"], row["name"]
        if row["status"] != "success":
            continue
        fitted += 1
        assert abs(row["alpha"] - own32["alpha"]) <= 1e-4 * own32["alpha"], row["name"]
        for column in ("alpha", "xmin", "D", "sigma", "lambda_max", "norm", "stable_rank", "entropy", "log_alpha_norm"):
            assert row[column] == pytest.approx(own64[column], rel=1e-9), (row["name"], column)
        for column in ("num_evals", "num_pl_spikes", "matrix_rank"):
            assert row[column] == own64[column], (row["name"], column)
        assert row["warning"] == own64["warning"]
    assert fitted == len(theirs.detail_rows)
    assert set(theirs.spectra) == set(inspect(None).spectra)  # the report plots the same matrices


def test_weightwatcher_engine_statuses_and_no_side_effects(tmp_path):
    """Bad and tiny matrices get alphaq's statuses without reaching weightwatcher; a fitted row has every details
    column; weightwatcher's import leaves the root logger as it was."""
    bad = _heavy_tailed(96, 64, 0)
    bad[3, 5] = float("nan")
    path = _checkpoint(
        tmp_path,
        {
            f"{P}.experts.0.w1.weight": bad,
            f"{P}.experts.1.w1.weight": _heavy_tailed(96, 64, 1),
            f"{P}.gate.weight": _heavy_tailed(4, 64, 2),
        },
    )
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    result = inspect(path, InspectConfig(engine="weightwatcher"))
    assert list(root.handlers) == handlers and root.level == level
    rows = {row["name"]: row for row in result.detail_rows}
    assert (
        rows[f"{P}.experts.0.w1.weight"]["status"] == "nonfinite"
        and "1 NaN/Inf" in rows[f"{P}.experts.0.w1.weight"]["message"]
    )
    assert rows[f"{P}.gate.weight"]["status"] == "skipped"
    fitted = rows[f"{P}.experts.1.w1.weight"]
    assert fitted["status"] == "success" and fitted["fit"] == "ww"
    missing = set(DETAIL_COLUMNS) - set(fitted) - set(TAIL_COLUMNS)
    assert not missing, missing
    assert result.details.loc[result.details["status"] != "success", "alpha"].isna().all()


def test_weightwatcher_failed_fit_is_nan_never_minus_one():
    """weightwatcher writes -1 for a failed fit; the engine's row has NaN and status failed, no warning label."""
    metrics, evals = weightwatcher_metrics(np.ones((64, 64), dtype=np.float32))  # rank one: no power-law tail
    assert metrics["status"] == "failed" and metrics["warning"] == "" and metrics["message"]
    for column in ("alpha", "alpha_weighted", "D", "sigma", "xmin", "num_pl_spikes", "log_alpha_norm"):
        assert math.isnan(metrics[column]), column
    assert metrics["lambda_max"] == pytest.approx(64 * 64, rel=1e-9) and metrics["matrix_rank"] == 1
    assert evals.shape == (64,) and evals[-1] == pytest.approx(64 * 64, rel=1e-9)


@pytest.mark.parametrize("engine", ["alphaq", "weightwatcher"])
def test_tail_test_adds_finite_powerlaw_columns(tmp_path, engine):
    """``tail_test`` fills every likelihood-ratio column of each fitted matrix with finite values (p in [0, 1]),
    from either engine's eigenvalues and xmin; without it the columns stay empty."""
    path = _checkpoint(tmp_path, {f"{P}.experts.{e}.w1.weight": _heavy_tailed(256, 128, 10 + e) for e in range(2)})
    tested = inspect(path, InspectConfig(engine=engine, tail_test=True)).detail_rows
    plain = inspect(path, InspectConfig(engine=engine)).detail_rows
    for row in tested:
        assert row["status"] == "success"
        for column in TAIL_COLUMNS:
            assert math.isfinite(row[column]), (row["name"], column)
        assert all(0.0 <= row[c] <= 1.0 for c in ("p_lognormal", "p_exponential", "p_truncated"))
    assert all(column not in row for row in plain for column in TAIL_COLUMNS)


def test_tail_test_is_the_same_through_both_engines(tmp_path):
    path = _checkpoint(tmp_path, {f"{P}.experts.0.w1.weight": _heavy_tailed(256, 128, 20)})
    ours = inspect(path, InspectConfig(dtype="float64", tail_test=True)).detail_rows[0]
    theirs = inspect(path, InspectConfig(engine="weightwatcher", tail_test=True)).detail_rows[0]
    for column in TAIL_COLUMNS:
        assert theirs[column] == pytest.approx(ours[column], rel=1e-6, abs=1e-9), column


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"engine": "magic"}, "unknown engine 'magic'"),
        ({"engine": "weightwatcher", "fit": "hill"}, "drop --fit hill"),
        ({"engine": "weightwatcher", "farms": True}, "drop --farms"),
        ({"engine": "weightwatcher", "device": "cuda"}, "drop --device cuda"),
    ],
)
def test_engine_options_are_validated(options, needle):
    with pytest.raises(ConfigError, match=needle):
        InspectConfig(**options)
