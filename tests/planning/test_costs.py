from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alphaq.errors import ConfigError, PlanError
from alphaq.planning.costs import MatrixErrors, alpha_importance, build_cost_table, matrix_errors
from alphaq.planning.error_measure import sample_rows
from alphaq.planning.units import build_units, expert_rows
from alphaq.quantization.layout import QuantSpec
from alphaq.quantization.methods import quantize_dequantize
from alphaq.quantization.primitives import relative_error
from tests.planning.test_units import make_details, make_reader


def test_sample_rows_even_and_deterministic() -> None:
    assert sample_rows(100, 200) is None
    picked = sample_rows(1000, 5)
    assert picked.tolist() == [0, 250, 500, 749, 999]


def test_measured_errors_match_the_quantizer_and_fall_with_bits() -> None:
    details = make_details(layers=1, experts=2, extra=False)
    read = make_reader(details)
    errors = matrix_errors(details, read, (2, 3, 4, 8), 32)
    assert errors.names[:3] == ("L0.E0.gate", "L0.E0.up", "L0.E0.down") and errors.error.shape == (6, 4)
    w = read("L0.E0.down")
    expected = relative_error(w, quantize_dequantize(w, QuantSpec(3, 32), dtype=torch.float32))
    assert errors.error[2, 1] == pytest.approx(expected, rel=1e-12)
    assert (np.diff(errors.error, axis=1) < 0).all()
    assert errors.sq_norm[2] == pytest.approx(float(w.double().square().sum()))


def test_measured_samples_rows_of_tall_matrices() -> None:
    details = make_details(layers=1, experts=1, extra=False)
    read = make_reader(details)
    errors = matrix_errors(details, read, (2, 4), 32, max_rows=8)
    w = read("L0.E0.down")
    rows = int(errors.rows[2])
    picked = w if rows == 64 else w[torch.as_tensor(sample_rows(64, 8))]  # the 8-row sample, or all if it fell short
    assert rows in (8, 64)
    expected = relative_error(picked, quantize_dequantize(picked, QuantSpec(4, 32), dtype=torch.float32))
    assert errors.error[2, 1] == pytest.approx(expected, rel=1e-12)


def test_analytic_from_weights_and_from_var_column() -> None:
    details = make_details(layers=1, experts=1, extra=False)
    read = make_reader(details)
    errors = matrix_errors(details, read, (2, 4), 32, "analytic")
    var = float(read("L0.E0.gate").double().var(unbiased=False))
    assert errors.error[0].tolist() == pytest.approx([var / 16, var / 256])
    details["var"] = [1.0, 2.0, 4.0]
    no_weights = matrix_errors(details, None, (2, 4), 32, "analytic")
    np.testing.assert_allclose(no_weights.error, [[1 / 16, 1 / 256], [2 / 16, 2 / 256], [4 / 16, 4 / 256]])


def test_matrix_errors_problems() -> None:
    details = make_details(layers=1, experts=1, extra=False)
    with pytest.raises(PlanError, match="needs the weights"):
        matrix_errors(details, None, (2, 4), 32)
    with pytest.raises(PlanError, match=r"read as \(2, 2\), details say \(32, 64\)"):
        matrix_errors(details, lambda name: torch.zeros(2, 2), (2, 4), 32)
    with pytest.raises(ConfigError, match="error model"):
        matrix_errors(details, make_reader(details), (2, 4), 32, "guess")


def test_alpha_importance_median_and_failed() -> None:
    details = make_details(
        layers=1, experts=4, extra=False, alphas={(0, 0): 2.0, (0, 1): 3.0, (0, 2): 6.0, (0, 3): 4.0}
    )
    details.loc[details["expert"] == 3, "status"] = "failed"
    units = build_units(details, "expert")
    importance, failed = alpha_importance(units, gamma=2.0)
    assert failed == ("L0.E3",)
    assert importance.tolist() == pytest.approx([(3 / 2) ** 2, 1.0, (3 / 6) ** 2, 1.0])
    flat, _ = alpha_importance(units, gamma=0.0)
    assert flat.tolist() == [1.0] * 4


def test_cost_table_aggregates_param_weighted() -> None:
    details = make_details(layers=1, experts=2, extra=False, shapes={"gate": (8, 16), "down": (16, 24)})
    names = tuple(expert_rows(details)["name"])
    errors = MatrixErrors(
        names,
        (2, 4),
        np.array([[1.0, 0.5], [4.0, 1.0], [1.0, 0.5], [4.0, 1.0]]),
        np.array([128.0, 384.0, 128.0, 384.0]),
        "measured",
    )
    table = build_cost_table(build_units(details, "expert"), errors, group_size=8, gamma=1.0)
    # gate 128 params, down 384 params
    assert table.error[0].tolist() == pytest.approx([(128 * 1 + 384 * 4) / 512, (128 * 0.5 + 384 * 1) / 512])
    assert table.rms[0] == pytest.approx(1.0)
    # bytes at 2 bits, group 8: gate 8*2*2 + 2*8*2*2 = 96; down 16*3*2 + 2*16*3*2 = 288
    assert table.bytes[0].tolist() == [96 + 288, 8 * 2 * 4 + 64 + 16 * 3 * 4 + 192]
    assert table.payload_bits[0].tolist() == [1024, 2048] and table.total_params == 1024
    cost = table.cost()
    assert cost[1, 0] == pytest.approx(table.importance[1] * 512 * table.error[1, 0] / 1024)
    with pytest.raises(ConfigError, match="gamma"):
        build_cost_table(table.units, errors, 8, gamma=-1.0)
    with pytest.raises(PlanError, match="no error was measured"):
        build_cost_table(build_units(make_details(layers=2, experts=2, extra=False), "expert"), errors, 8)
    assert math.isfinite(table.importance.sum())
