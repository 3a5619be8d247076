from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from alphaq.errors import ConfigError
from alphaq.evaluation.compare import COMPARE_COLUMNS, expand_allocators, prediction_check, run_compare
from alphaq.evaluation.compare_stats import INTERVAL_COLUMNS
from alphaq.evaluation.options import CompareConfig
from alphaq.provenance import sha256_file


def _text(path: Path) -> Path:
    words = ("the cat sat on the mat while a river ran past old stone walls and quiet hills " * 120).strip()
    path.write_text(words + "\n", encoding="utf-8")
    return path


def test_expand_allocators() -> None:
    assert expand_allocators(["alphaq", "frequency", "uniform"]) == [
        "alphaq",
        "frequency-in",
        "frequency-out",
        "uniform",
    ]
    with pytest.raises(ConfigError):
        expand_allocators(["nope"])


def test_prediction_check_spearman() -> None:
    table = pd.DataFrame(
        {
            "entry": ["original", "a", "b", "c", "d"],
            "ppl": [1.0, 2.0, 3.0, 4.0, 5.0],
            "ppl_increase": [0.0, 1.0, 2.0, 3.0, 4.0],
            "predicted_error": [None, 0.1, 0.2, 0.3, 0.4],
            "alpha_objective": [None, 0.4, 0.3, 0.2, 0.1],
        }
    )
    check = prediction_check(table)
    assert check["predicted_error"]["rho"] == pytest.approx(1.0)
    assert check["alpha_objective"]["rho"] == pytest.approx(-1.0)
    short = prediction_check(table.iloc[:3])
    assert short["predicted_error"]["status"] == "too_few_plans" and math.isnan(short["predicted_error"]["rho"])


def test_compare_two_budgets_two_allocators(tmp_path: Path) -> None:
    from alphaq.report.compare_page import render_compare

    text = _text(tmp_path / "eval.txt")
    out = tmp_path / "run"
    table = run_compare(
        None,
        CompareConfig(budgets=("2.5", "3.5"), allocators=("alphaq", "uniform"), text_file=text, max_windows=2),
        out,
    )
    assert list(table.columns) == COMPARE_COLUMNS + INTERVAL_COLUMNS
    assert list(table["entry"]) == ["original", "alphaq", "uniform", "alphaq", "uniform"]
    plans = table.iloc[1:]
    assert plans["ppl"].notna().all() and (plans["windows"] == 2).all()
    assert plans["average_payload_bits"].tolist() == pytest.approx([2.5, 2.5, 3.5, 3.5], abs=0.26)
    assert table.loc[0, "ppl"] == pytest.approx(math.exp(table.loc[0, "nll"]))
    saved = pd.read_csv(out / "compare.csv")
    assert len(saved) == 5 and saved["ppl"].iloc[1] == pytest.approx(table["ppl"].iloc[1])
    meta = json.loads((out / "compare.json").read_text())
    assert meta["eval_text"]["sha256"] == sha256_file(text)
    assert {"alphaq", "torch", "transformers"} <= set(meta["versions"])
    assert meta["protocol"]["windows"] == 2 and meta["protocol"]["remainder"] == "dropped"
    assert all(row["plan_fingerprint"] for row in meta["rows"][1:])
    assert len(list((out / "plans").glob("*.json"))) == 4
    verification = pd.read_csv(out / "expert_verification.csv")
    assert set(verification["entry"]) == {"alphaq", "uniform"}
    assert verification["eval_routing_share"].between(0, 1).all()
    page = render_compare(out)
    assert "Perplexity vs bits" in page.read_text()


def test_random_seeds_and_intervals(tmp_path: Path) -> None:
    text = _text(tmp_path / "eval.txt")
    out = tmp_path / "run"
    table = run_compare(
        None,
        CompareConfig(
            budgets="2.5",
            allocators="uniform,random,alphaq",
            text_file=text,
            max_windows=4,
            seeds=(0, 1, 2),
            resamples=200,
        ),
        out,
    )
    assert list(table["entry"]) == ["original", "uniform", "random", "random", "random", "alphaq"]
    assert table["seed"].tolist()[2:5] == [0, 1, 2]
    plans = table.iloc[1:]
    assert (plans["ci_low"].astype(float) <= plans["ppl_increase"].astype(float) + 1e-9).all()
    assert (plans["ci_high"].astype(float) >= plans["ppl_increase"].astype(float) - 1e-9).all()
    uniform = table[table["entry"] == "uniform"].iloc[0]
    assert uniform["vs_uniform"] is None
    alphaq_row = table[table["entry"] == "alphaq"].iloc[0]
    assert alphaq_row["vs_uniform"] == pytest.approx(alphaq_row["ppl"] - uniform["ppl"])
    # KL divergence from the original on the same windows, with paired intervals (alone and against uniform)
    assert table.iloc[0]["mean_kld"] == 0.0 and table.iloc[0]["same_top"] == 1.0
    kld = plans["mean_kld"].astype(float)
    assert (kld > 0).all() and (plans["same_top"].astype(float) < 1).all()
    assert (plans["kld_low"].astype(float) <= kld + 1e-12).all() and (plans["kld_high"].astype(float) >= kld).all()
    assert (plans["p99_kld"].astype(float) >= plans["median_kld"].astype(float)).all()
    assert alphaq_row["kld_vs_uniform"] == pytest.approx(alphaq_row["mean_kld"] - uniform["mean_kld"])
    assert alphaq_row["kld_vs_uniform_low"] <= alphaq_row["kld_vs_uniform"] <= alphaq_row["kld_vs_uniform_high"]
    meta = json.loads((out / "compare.json").read_text())
    spread = meta["random_seeds"]["2.5"]
    increases = table[table["entry"] == "random"]["ppl_increase"].astype(float)
    assert spread["seeds"] == [0, 1, 2] and spread["mean"] == pytest.approx(increases.mean())
    assert spread["std"] == pytest.approx(increases.std(ddof=1))
    assert meta["intervals"]["resamples"] == 200
    assert set(meta["prediction_check"]) >= {"abs_sq_error", "depth_sq_error", "routed_sq_error"}
    prior = meta["routing_prior"]
    assert prior["windows"] == 32 and prior["seed"] == 0 and len(prior["shares"]) == 4 * 8
    assert sum(s["share"] for s in prior["shares"] if s["layer"] == 0) == pytest.approx(1.0)
    routed = table.iloc[1:]["routed_sq_error"].astype(float)
    assert (routed > 0).all() and (routed < table.iloc[1:]["abs_sq_error"].astype(float)).all()
    assert len(list((out / "plans").glob("random-2.5-seed*.json"))) == 3
    from alphaq.report.compare_page import render_compare

    assert "Significance" in render_compare(out).read_text()


def test_plan_predictors_known_values() -> None:
    from types import SimpleNamespace

    from alphaq.evaluation.compare_stats import plan_predictors

    tensors = [
        SimpleNamespace(name="a", unit="0.0", error=0.5, layer=0, expert=0),
        SimpleNamespace(name="b", unit="0.1", error=0.1, layer=1, expert=1),
        SimpleNamespace(name="embed", unit=None, error=0.0, layer=None, expert=None),
    ]
    sq_norm, alpha = {"a": 4.0, "b": 100.0}, {"a": 2.0, "b": 4.0}
    got = plan_predictors(tensors, sq_norm, alpha, num_layers=2, routing_prior={(0, 0): 0.75, (1, 1): 0.25})
    assert got["abs_sq_error"] == pytest.approx(4 * 0.25 + 100 * 0.01)  # 2.0
    assert got["alpha_sq_error"] == pytest.approx(1.0 * 3 / 2 + 1.0 * 3 / 4)  # median alpha 3
    assert got["depth_sq_error"] == pytest.approx(1.0 * 1.5 + 1.0 * 1.0)
    assert got["routed_sq_error"] == pytest.approx(1.0 * 0.75 + 1.0 * 0.25)
    assert math.isnan(plan_predictors(tensors, sq_norm, alpha, num_layers=2)["routed_sq_error"])
