from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaq.errors import ConfigError
from alphaq.quantization.layout import QuantSpec, quantized_nbytes
from alphaq.quantization.methods import quantize_dequantize
from alphaq.quantization.packing import pack
from alphaq.quantization.primitives import (
    CLIP_SHRINK_GRID,
    QuantizedTensor,
    dequantize_groupwise,
    quantize_groupwise,
    relative_error,
)


def gaussian(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def student_t(rows: int, cols: int, seed: int = 0, df: float = 4.0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.distributions.StudentT(df).sample((rows, cols)) * 0.02


def expand(params: torch.Tensor, group_size: int, cols: int) -> torch.Tensor:
    return params.to(torch.float32).repeat_interleave(group_size, dim=1)[:, :cols]


def test_quantized_tensor_shapes_and_dtypes_with_partial_group() -> None:
    w = gaussian(6, 200)
    qt = quantize_groupwise(w, QuantSpec(4, 64))
    assert qt.q.dtype == torch.uint8 and tuple(qt.q.shape) == (6, 200)
    assert qt.scale.dtype == torch.float16 and tuple(qt.scale.shape) == (6, 4)
    assert qt.zero.dtype == torch.float16 and tuple(qt.zero.shape) == (6, 4)
    assert qt.shape == (6, 200) and qt.spec == QuantSpec(4, 64)
    assert int(qt.q.max()) <= 15
    assert bool((qt.scale > 0).all())
    out = dequantize_groupwise(qt)
    assert out.dtype == torch.float32 and tuple(out.shape) == (6, 200)
    assert dequantize_groupwise(qt, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize(("cols", "group_size"), [(200, 64), (256, 128), (100, 32), (13, 8)])
def test_rtn_error_is_at_most_half_a_step(bits: int, cols: int, group_size: int) -> None:
    # Rows of very different magnitude, including one with an offset (all-positive groups).
    w = gaussian(5, cols, seed=bits) * torch.tensor([[1e-3], [0.02], [1.0], [300.0], [1.0]])
    w[4] += 5.0
    qt = quantize_groupwise(w, QuantSpec(bits, group_size))
    scale = expand(qt.scale, group_size, cols)
    err = (w - dequantize_groupwise(qt)).abs()
    assert bool((err <= scale * (0.5 + 1e-4)).all()), float((err / scale).max())
    assert int(qt.q.max()) <= 2**bits - 1


@settings(max_examples=200, deadline=None)
@given(
    bits=st.integers(1, 8),
    group_size=st.sampled_from([8, 16, 32]),
    values=st.lists(st.floats(-4000, 4000, width=32), min_size=1, max_size=60),
    rows=st.integers(1, 3),
    clip_search=st.booleans(),
)
def test_half_step_bound_on_arbitrary_values(
    bits: int, group_size: int, values: list[float], rows: int, clip_search: bool
) -> None:
    w = torch.tensor(values, dtype=torch.float32).repeat(rows, 1) * torch.tensor([[1.0], [1e-3], [-7.0]])[:rows]
    qt = quantize_groupwise(w, QuantSpec(bits, group_size), clip_search=clip_search)
    out = dequantize_groupwise(qt)
    assert bool(torch.isfinite(out).all())
    if not clip_search:  # clipping trades the bound at the extremes for a finer step
        scale = expand(qt.scale, group_size, w.shape[1])
        err = (w - out).abs()
        # Half a step, or for constant groups (scale 1) the float16 rounding of the value.
        assert bool(((err <= scale * (0.5 + 1e-4)) | (err <= w.abs() * 2**-11)).all()), float((err / scale).max())


def test_dequantize_is_the_documented_formula() -> None:
    """The exact float32 computation a kernel must reproduce: (float(q) - float(zero)) * float(scale)."""
    w = student_t(5, 200)
    qt = quantize_groupwise(w, QuantSpec(3, 64))
    expected = (qt.q.float() - expand(qt.zero, 64, 200)) * expand(qt.scale, 64, 200)
    assert torch.equal(dequantize_groupwise(qt), expected)
    assert torch.equal(dequantize_groupwise(qt, dtype=torch.bfloat16), expected.to(torch.bfloat16))


def test_rtn_uses_the_whole_code_range() -> None:
    qt = quantize_groupwise(gaussian(4, 256), QuantSpec(3, 128))
    assert int(qt.q.min()) == 0 and int(qt.q.max()) == 7


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_exactly_representable_values_survive(bits: int) -> None:
    max_code = 2**bits - 1
    gen = torch.Generator().manual_seed(bits)
    rows, groups, gs = 4, 3, 32
    codes = torch.randint(0, max_code + 1, (rows, groups, gs), generator=gen)
    codes[..., 0], codes[..., 1] = 0, max_code  # both ends present -> min-max recovers the grid
    zero = torch.randint(0, max_code + 1, (rows, groups, 1), generator=gen).float()  # integer zero in range
    scale = 2.0 ** -torch.randint(2, 8, (rows, groups, 1), generator=gen).float()  # float16-exact
    w = ((codes - zero) * scale).reshape(rows, groups * gs)
    qt = quantize_groupwise(w, QuantSpec(bits, gs))
    assert torch.equal(dequantize_groupwise(qt), w)
    assert torch.equal(qt.q.reshape(rows, groups, gs).long(), codes)


def test_relative_error_of_4_bit_g128_on_standard_normal() -> None:
    w = gaussian(512, 1024)
    err = relative_error(w, quantize_dequantize(w, QuantSpec(4, 128)))
    assert 0.0985 < err < 0.1005  # measured 0.0995: uniform error of step ~range/15 on N(0, 1)


def test_error_decreases_monotonically_with_bits() -> None:
    w = gaussian(256, 1024, seed=1)
    errors = [relative_error(w, quantize_dequantize(w, QuantSpec(bits, 128))) for bits in range(1, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # From 3 bits on, each extra bit halves the error (a finer uniform grid), measured 0.466..0.498.
    ratios = [b / a for a, b in zip(errors[2:], errors[3:])]
    assert all(0.45 < r < 0.51 for r in ratios), ratios
    assert 0.0057 < errors[-1] < 0.0060  # 8 bits


def test_smaller_groups_give_smaller_error() -> None:
    w = student_t(128, 1024)
    errors = [relative_error(w, quantize_dequantize(w, QuantSpec(3, gs))) for gs in (32, 64, 128)]
    assert errors[0] < errors[1] < errors[2], errors


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_clip_search_is_never_worse_than_rtn(bits: int) -> None:
    w = student_t(64, 1000, seed=bits)
    spec = QuantSpec(bits, 128)
    plain = dequantize_groupwise(quantize_groupwise(w, spec))
    clipped = dequantize_groupwise(quantize_groupwise(w, spec, clip_search=True))
    # Per group (here per row and group of 128 columns), not only overall.
    group_err = lambda w_hat: (w - w_hat)[:, :896].reshape(64, 7, 128).square().sum(-1)  # noqa: E731
    assert bool((group_err(clipped) <= group_err(plain)).all())
    assert relative_error(w, clipped) <= relative_error(w, plain)
    if bits <= 3:
        assert relative_error(w, clipped) < 0.9 * relative_error(w, plain)


def test_clip_grid_runs_from_one_to_one_half() -> None:
    assert CLIP_SHRINK_GRID[0] == 1.0 and CLIP_SHRINK_GRID[-1] == 0.5 and len(CLIP_SHRINK_GRID) == 21


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_dtype_does_not_change_the_result(dtype: torch.dtype) -> None:
    w = gaussian(8, 160).to(dtype)
    spec = QuantSpec(4, 32)
    a, b = quantize_groupwise(w, spec), quantize_groupwise(w.to(torch.float32), spec)
    assert torch.equal(a.q, b.q) and torch.equal(a.scale, b.scale) and torch.equal(a.zero, b.zero)


def test_quantize_dequantize_methods_and_dtype() -> None:
    w = student_t(32, 256).to(torch.bfloat16)
    spec = QuantSpec(3, 64)
    fake = quantize_dequantize(w, spec)
    assert fake.dtype == torch.bfloat16
    exact = quantize_dequantize(w, spec, dtype=torch.float32)
    assert torch.equal(exact, dequantize_groupwise(quantize_groupwise(w, spec)))
    clip = quantize_dequantize(w, spec, method="rtn_clip", dtype=torch.float32)
    assert torch.equal(clip, dequantize_groupwise(quantize_groupwise(w, spec, clip_search=True)))
    hqq = quantize_dequantize(w, spec, method="hqq", dtype=torch.float32)
    assert relative_error(w, hqq) <= relative_error(w, exact)
    with pytest.raises(ConfigError, match="unknown quantization method"):
        quantize_dequantize(w, spec, method="awq")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="gptq is calibrated on text"):  # data-free paths refuse it
        quantize_dequantize(w, spec, method="gptq")  # type: ignore[arg-type]


def test_all_zero_matrix_and_rows_are_exact() -> None:
    qt = quantize_groupwise(torch.zeros(3, 40), QuantSpec(2, 16))
    assert bool((qt.q == 0).all()) and bool((qt.scale == 1).all()) and bool((qt.zero == 0).all())
    assert bool((dequantize_groupwise(qt) == 0).all())
    w = gaussian(4, 64)
    w[1] = 0.0
    out = dequantize_groupwise(quantize_groupwise(w, QuantSpec(4, 32)))
    assert bool((out[1] == 0).all())


@pytest.mark.parametrize("value", [0.75, -3.5, 1e-3, 1234.0, -6e4])
@pytest.mark.parametrize("bits", [1, 4, 8])
def test_constant_groups_are_exact_up_to_float16(value: float, bits: int) -> None:
    w = gaussian(3, 24)
    w[:2] = value  # constant groups in rows 0 and 1, a normal row 2
    for clip_search in (False, True):
        qt = quantize_groupwise(w, QuantSpec(bits, 8), clip_search=clip_search)
        out = dequantize_groupwise(qt)
        assert torch.equal(out[:2], torch.full((2, 24), value).half().float())
        assert bool((qt.q[:2] == 0).all()) and bool((qt.scale[:2] == 1).all())


def test_large_constant_group_keeps_float16_precision() -> None:
    # 4081 is not a float16 (neighbours 4080, 4082): zero = -4080 and code 1 give 4081 back exactly.
    qt = quantize_groupwise(torch.full((1, 8), 4081.0), QuantSpec(4, 8))
    assert float(qt.zero[0, 0]) == -4080.0
    assert torch.equal(dequantize_groupwise(qt), torch.full((1, 8), 4081.0))


def test_constant_group_below_float16_range_dequantizes_to_zero() -> None:
    qt = quantize_groupwise(torch.full((1, 8), 1e-9), QuantSpec(4, 8))
    assert bool((dequantize_groupwise(qt) == 0).all())


def test_a_zero_inside_a_group_is_exact_when_an_end_is_zero() -> None:
    w = torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])  # lo = 0 -> zero point 0
    out = dequantize_groupwise(quantize_groupwise(w, QuantSpec(3, 8)))
    assert out[0, 0] == 0.0


def test_tiny_weights_keep_the_half_step_bound() -> None:
    w = gaussian(4, 64) * 1e-7  # float16 subnormal scales
    qt = quantize_groupwise(w, QuantSpec(4, 32))
    scale = expand(qt.scale, 32, 64)
    assert bool((scale > 0).all())
    assert bool(((w - dequantize_groupwise(qt)).abs() <= scale * 0.5001).all())


def test_single_column_and_single_row() -> None:
    for w in (torch.tensor([[1.0], [-2.0], [0.0]]), gaussian(1, 77)):
        qt = quantize_groupwise(w, QuantSpec(3, 128))
        assert qt.scale.shape == (w.shape[0], 1)
        assert relative_error(w, dequantize_groupwise(qt)) < 0.25


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_rejected(bad: float) -> None:
    w = gaussian(2, 16)
    w[1, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_groupwise(w, QuantSpec(4, 8))


def test_invalid_weights_are_rejected() -> None:
    with pytest.raises(ValueError, match="2-D"):
        quantize_groupwise(torch.zeros(2, 3, 8), QuantSpec(4))
    with pytest.raises(ValueError, match="empty"):
        quantize_groupwise(torch.zeros(0, 8), QuantSpec(4))
    with pytest.raises(ValueError, match="floating-point"):
        quantize_groupwise(torch.zeros(2, 8, dtype=torch.int32), QuantSpec(4))
    with pytest.raises(ValueError, match="65504"):
        quantize_groupwise(torch.tensor([[-1e5, 1.0] * 4]), QuantSpec(4, 8))
    with pytest.raises(ValueError, match="float16 scale"):
        quantize_groupwise(torch.tensor([[-6e4, 6e4] * 4]), QuantSpec(1, 8))


def test_quantized_tensor_validates_its_fields() -> None:
    qt = quantize_groupwise(gaussian(2, 16), QuantSpec(4, 8))
    with pytest.raises(ValueError, match="q must be uint8"):
        QuantizedTensor(q=qt.q.to(torch.int32), scale=qt.scale, zero=qt.zero, spec=qt.spec, shape=qt.shape)
    with pytest.raises(ValueError, match="scale must be float16"):
        QuantizedTensor(q=qt.q, scale=qt.scale.float(), zero=qt.zero, spec=qt.spec, shape=qt.shape)
    with pytest.raises(ValueError, match="zero must be float16"):
        QuantizedTensor(q=qt.q, scale=qt.scale, zero=qt.zero[:, :1], spec=qt.spec, shape=qt.shape)


@pytest.mark.parametrize(("rows", "cols", "bits", "group_size"), [(7, 200, 3, 64), (4, 128, 4, 128), (3, 13, 1, 8)])
def test_stored_tensors_match_the_byte_contract(rows: int, cols: int, bits: int, group_size: int) -> None:
    spec = QuantSpec(bits, group_size)
    qt = quantize_groupwise(gaussian(rows, cols), spec)
    stored = pack(qt.q, bits).numel() + qt.scale.numel() * 2 + qt.zero.numel() * 2
    assert stored == quantized_nbytes(rows, cols, spec).total == qt.nbytes.total


def test_relative_error_values() -> None:
    assert relative_error(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 0.0])) == pytest.approx(0.8)
    assert relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert relative_error(torch.zeros(3), torch.ones(3)) == math.inf
    # float64: a float32 matrix against its float16 rounding (relative error ~1e-4) is resolved.
    w = gaussian(64, 64)
    err = relative_error(w, w.half())
    assert 5e-5 < err < 5e-4
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(torch.zeros(2, 3), torch.zeros(3, 2))


def test_round_zero_points_gives_integer_zeros_and_nearest_codes_with_a_partial_group() -> None:
    from alphaq.quantization.primitives import round_zero_points

    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 40, generator=g)  # groups of 16: 16 + 16 + a partial 8
    native = quantize_groupwise(w, QuantSpec(3, 16))
    qt = round_zero_points(w, native)
    assert torch.equal(qt.scale, native.scale)
    assert torch.equal(qt.zero.float(), torch.round(native.zero.float()).clamp(0, 7))
    scale = qt.scale.float().repeat_interleave(16, dim=1)[:, :40]
    zero = qt.zero.float().repeat_interleave(16, dim=1)[:, :40]
    assert torch.equal(qt.q.float(), torch.round(w / scale + zero).clamp(0, 7))
    assert relative_error(w, dequantize_groupwise(qt)) < 2 * relative_error(w, dequantize_groupwise(native))
