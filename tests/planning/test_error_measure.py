"""The measured error model's adaptive row sample: exact when measured whole, within 1 % when sampled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alphaq.planning.error_measure import measure_matrix, sample_rows
from alphaq.quantization.layout import QuantSpec
from alphaq.quantization.methods import quantize_dequantize
from alphaq.quantization.primitives import relative_error


def _full(w: torch.Tensor, bits: int) -> float:
    return relative_error(w, quantize_dequantize(w, QuantSpec(bits, 128), dtype=torch.float32))


def test_a_matrix_of_at_most_max_rows_is_measured_whole_and_exactly() -> None:
    w = torch.randn(300, 256, generator=torch.Generator().manual_seed(0))
    measured = measure_matrix(w, (2, 4), 128, "rtn", max_rows=300)
    assert measured.rows == 300 and measured.std_error == 0.0
    assert measured.error[1] == pytest.approx(_full(w, 4), rel=1e-12)


def test_alike_rows_stop_at_the_first_sample_within_one_percent() -> None:
    g = torch.Generator().manual_seed(1)
    col_scale = torch.rand(1024, generator=g).pow(-0.2)  # heavy-tailed columns
    w = torch.randn(2048, 1024, generator=g) * col_scale  # [2048, 1024]
    measured = measure_matrix(w, (2, 3, 4, 8), 128, "rtn", max_rows=1024)
    assert measured.rows == 256 and 0.0 < measured.std_error <= 0.01
    for k, bits in enumerate((2, 3, 4, 8)):
        assert measured.error[k] == pytest.approx(_full(w, bits), rel=0.01)  # 0.42 % off at most here
    picked = torch.as_tensor(sample_rows(2048, 1024)[::4])  # every 4th of the 1024-row sample
    assert measured.error[2] == pytest.approx(_full(w[picked], 4), rel=1e-12)  # exactly the sample's error


def test_rows_that_differ_make_the_sample_grow() -> None:
    g = torch.Generator().manual_seed(2)
    heavy = torch.rand(4096, 256, generator=g).clamp_min(1e-5).pow(-1 / 1.8)  # heavy-tailed entries: rows differ
    w = torch.randn(4096, 256, generator=g) * heavy
    measured = measure_matrix(w, (2, 4), 128, "rtn", max_rows=1024)
    assert measured.rows == 4096 and measured.std_error == 0.0  # 1024 rows were not enough: the whole matrix
    assert measured.error[1] == pytest.approx(_full(w, 4), rel=1e-12)
    assert np.all(measured.error > 0)
    picked = torch.as_tensor(sample_rows(4096, 1024))
    assert abs(_full(w[picked], 4) / _full(w, 4) - 1) > 0.01  # the fixed 1024-row sample was more than 1 % off


def test_a_later_plan_in_the_same_folder_reuses_the_measured_errors(tmp_path, monkeypatch) -> None:
    from alphaq.planning import planner
    from alphaq.planning.config import PlanConfig
    from alphaq.planning.run import run_plan
    from alphaq.runfolder import PLAN_ERRORS_NPZ

    first = run_plan(None, PlanConfig(budget="3"), tmp_path)
    assert (tmp_path / PLAN_ERRORS_NPZ).is_file()
    calls = []
    original = planner.measure_errors
    monkeypatch.setattr(planner, "measure_errors", lambda *a, **k: calls.append(1) or original(*a, **k))
    second = run_plan(None, PlanConfig(budget="3"), tmp_path)  # same key: loaded, identical plan
    assert calls == [] and second.plan.to_dict()["tensors"] == first.plan.to_dict()["tensors"]
    run_plan(None, PlanConfig(budget="2.5"), tmp_path)  # another budget: the same errors
    assert calls == []
    run_plan(None, PlanConfig(budget="3", group_size=64), tmp_path)  # another group size: measured again
    assert calls == [1]
