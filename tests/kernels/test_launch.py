"""The Triton kernels against the torch reference, run on CPU tensors in the Triton interpreter.

Packing is compared byte for byte, dequantization exactly, the fused matmul within
``MATMUL_RTOL * ||y||`` of the reference computed in float32 and cast to the same dtype.
"""

from __future__ import annotations

import pytest
import torch

from alphaq.kernels import launch, reference
from alphaq.kernels.configs import DotConfig, GemvConfig

pytestmark = pytest.mark.usefixtures("needs_triton")

#: ||y_kernel - y_ref|| / ||y_ref||, y_ref = reference.dequant_matmul (float32, cast to x's dtype).
MATMUL_RTOL = 1e-3

SHAPES = ((16, 64), (48, 256))  # (R, C); C = 64 with group size 128 is one partial group
WIDTHS = (2, 3, 4, 8)
GROUP_SIZES = (32, 64, 128)


def make_weight(
    rows: int, cols: int, dtype: torch.dtype = torch.float16, seed: int = 0, huge: bool = True
) -> torch.Tensor:
    """Gaussian weights with the awkward cases: a zero row, a constant row, tiny and (``huge``) huge groups."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen)
    w[0] = 0.0
    if rows > 1:
        w[1] = 0.375  # constant non-zero: scale 1, zero -0.375
    if rows > 2:
        w[2] *= 1e-6  # float16 subnormal scales
    if rows > 3 and huge:
        w[3, : min(cols, 8)] = 60000.0  # near the float16 limit
    if rows > 4:
        w[4] = w[4].abs()  # all positive: lo = 0
    return w.to(dtype)


def quantized(rows: int, cols: int, bits: int, group_size: int, seed: int = 0):
    """The reference (packed, scale, zero) of a test weight without the huge group (y stays finite)."""
    return reference.quantize_pack(make_weight(rows, cols, seed=seed, huge=False), bits, group_size)


def assert_matmul_close(y: torch.Tensor, y_ref: torch.Tensor, rtol: float = MATMUL_RTOL) -> None:
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
    err = float((y.double() - y_ref.double()).norm())
    norm = float(y_ref.double().norm())
    assert err <= rtol * norm, f"relative error {err / norm:.2e} > {rtol:.0e}"


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_quantize_pack_and_unpack_dequantize_are_exact(rows: int, cols: int, bits: int, group_size: int) -> None:
    w = make_weight(rows, cols)
    packed, scale, zero = launch.quantize_pack(w, bits, group_size)
    ref_packed, ref_scale, ref_zero = reference.quantize_pack(w, bits, group_size)
    assert torch.equal(packed, ref_packed)
    assert torch.equal(scale.view(torch.int16), ref_scale.view(torch.int16))  # bit for bit
    assert torch.equal(zero, ref_zero)
    w_hat = launch.unpack_dequantize(packed, scale, zero, bits, group_size, cols, torch.float32)
    assert torch.equal(w_hat, reference.unpack_dequantize(packed, scale, zero, bits, group_size, cols))


@pytest.mark.parametrize(
    ("rows", "cols", "bits", "group_size"),
    [
        (5, 40, 2, 32),  # C % 8 == 0 but the 4-byte units run past the row end (byte mask)
        (5, 44, 1, 32),  # C % 8 != 0: the last unit holds padding
        (7, 13, 3, 8),
        (3, 100, 4, 64),  # partial last group
        (9, 96, 3, 96),  # group size not a power of two
        (4, 72, 5, 24),
        (6, 200, 8, 40),
        (33, 24, 6, 16),
    ],
)
def test_odd_shapes_are_exact(rows: int, cols: int, bits: int, group_size: int) -> None:
    w = make_weight(rows, cols, seed=1)
    packed, scale, zero = launch.quantize_pack(w, bits, group_size, block_r=4)
    ref = reference.quantize_pack(w, bits, group_size)
    assert torch.equal(packed, ref[0]) and torch.equal(scale, ref[1]) and torch.equal(zero, ref[2])
    w_hat = launch.unpack_dequantize(
        packed, scale, zero, bits, group_size, cols, torch.float32, block_r=4, values_per_tile=32
    )
    assert torch.equal(w_hat, reference.unpack_dequantize(packed, scale, zero, bits, group_size, cols))
    x = torch.randn(3, cols, dtype=torch.float32)  # float32: the 60000 group stays finite
    y_ref = reference.dequant_matmul(x, packed, scale, zero, bits, group_size, cols)
    assert_matmul_close(launch.dequant_matmul(x, packed, scale, zero, bits, group_size, cols), y_ref)
    assert_matmul_close(launch.dequant_matmul(x, packed, scale, zero, bits, group_size, cols, use_gemv=False), y_ref)


@pytest.mark.parametrize("w_dtype", [torch.bfloat16, torch.float32])
def test_quantize_pack_other_input_dtypes(w_dtype: torch.dtype) -> None:
    w = make_weight(8, 128, dtype=w_dtype, seed=2)
    got = launch.quantize_pack(w, 4, 32)
    ref = reference.quantize_pack(w, 4, 32)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_unpack_dequantize_half_outputs_are_the_rounded_float32_values(dtype: torch.dtype) -> None:
    packed, scale, zero = quantized(16, 256, 3, 64)
    got = launch.unpack_dequantize(packed, scale, zero, 3, 64, 256, dtype)
    assert torch.equal(got, reference.unpack_dequantize(packed, scale, zero, 3, 64, 256, dtype))


@pytest.mark.parametrize("m", [1, 3, 16])
@pytest.mark.parametrize("bits", WIDTHS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_dequant_matmul_grid(rows: int, cols: int, group_size: int, bits: int, m: int) -> None:
    packed, scale, zero = quantized(rows, cols, bits, group_size)
    x = torch.randn(m, cols, dtype=torch.float16, generator=torch.Generator().manual_seed(m))
    y = launch.dequant_matmul(x, packed, scale, zero, bits, group_size, cols)
    assert_matmul_close(y, reference.dequant_matmul(x, packed, scale, zero, bits, group_size, cols))


@pytest.mark.parametrize("bits", [1, 5, 6, 7])
@pytest.mark.parametrize("m", [2, 16])
def test_dequant_matmul_other_widths(bits: int, m: int) -> None:
    packed, scale, zero = quantized(48, 256, bits, 64)
    x = torch.randn(m, 256, dtype=torch.float16)
    y = launch.dequant_matmul(x, packed, scale, zero, bits, 64, 256)
    assert_matmul_close(y, reference.dequant_matmul(x, packed, scale, zero, bits, 64, 256))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("m", [4, 24])
def test_dequant_matmul_activation_dtypes(dtype: torch.dtype, m: int) -> None:
    packed, scale, zero = quantized(48, 256, 4, 128)
    x = torch.randn(m, 256).to(dtype)
    y = launch.dequant_matmul(x, packed, scale, zero, 4, 128, 256)
    assert_matmul_close(y, reference.dequant_matmul(x, packed, scale, zero, 4, 128, 256))


def test_dequant_matmul_float32_is_accurate_to_float32_rounding() -> None:
    packed, scale, zero = quantized(48, 256, 3, 32)
    w = reference.unpack_dequantize(packed, scale, zero, 3, 32, 256).double()
    x = torch.randn(20, 256)
    y_exact = x.double() @ w.T
    for m in (1, 4, 20):  # GEMV and tl.dot (float32 operands)
        y = launch.dequant_matmul(x[:m], packed, scale, zero, 3, 32, 256)
        assert float((y.double() - y_exact[:m]).norm()) <= 1e-5 * float(y_exact[:m].norm())


@pytest.mark.parametrize(("use_gemv", "splits"), [(True, 1), (True, 3), (False, 1), (False, 2)])
@pytest.mark.parametrize("bits", [2, 3])
def test_dequant_matmul_many_tiles_and_split_k(use_gemv: bool, splits: int, bits: int) -> None:
    """Small tiles: the loop over C runs many times, groups span tiles and split-K adds partial sums."""
    rows, cols, group_size = 40, 512, 64
    packed, scale, zero = quantized(rows, cols, bits, group_size)
    m = 3 if use_gemv else 33
    x = torch.randn(m, cols, dtype=torch.float16)
    y = launch.dequant_matmul(
        x,
        packed,
        scale,
        zero,
        bits,
        group_size,
        cols,
        splits=splits,
        use_gemv=use_gemv,
        gemv_config=GemvConfig(block_r=16, block_k=64),
        dot_config=DotConfig(block_n=16, block_k=32),
    )
    assert_matmul_close(y, reference.dequant_matmul(x, packed, scale, zero, bits, group_size, cols))


def test_dequant_matmul_strided_activations_and_m_above_64() -> None:
    packed, scale, zero = quantized(16, 128, 4, 32)
    x = torch.randn(130, 256, dtype=torch.float16)[:, ::2]  # non-contiguous, M = 130 > one 64-row block
    y = launch.dequant_matmul(x, packed, scale, zero, 4, 32, 128)
    assert_matmul_close(y, reference.dequant_matmul(x, packed, scale, zero, 4, 32, 128))


@pytest.mark.parametrize(
    ("bits", "cols", "group_size", "source"),
    [
        (4, 256, 64, "word"),
        (2, 64, 32, "word"),
        (8, 256, 128, "word"),
        (3, 256, 64, "words"),
        (5, 256, 64, "words"),
        (3, 96, 96, "words"),
        (2, 40, 32, "bytes"),
        (3, 13, 8, "bytes"),
        (1, 44, 32, "bytes"),
    ],
)
def test_the_test_shapes_cover_every_unit_source(bits: int, cols: int, group_size: int, source: str) -> None:
    """The grids above run each way of reading units (tiling.SOURCES) in every kernel."""
    from alphaq.kernels.tiling import SOURCES

    packed, scale, zero = quantized(4, cols, bits, group_size)
    for m in (1, 16):
        plan, _ = launch.plan_dequant_matmul(
            torch.zeros(m, cols), packed, scale, zero, bits, group_size, cols, interpret=True
        )
        assert SOURCES[plan.constexprs["SOURCE"]] == source


def test_gemv_rejects_large_batches() -> None:
    packed, scale, zero = quantized(16, 64, 4, 32)
    with pytest.raises(ValueError, match="at most 4 rows"):
        launch.dequant_matmul(torch.randn(5, 64), packed, scale, zero, 4, 32, 64, use_gemv=True)


def test_kernels_load_in_interpreter_mode_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import triton

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    module = launch.jit_module(interpret=True)
    assert type(module.gemv_kernel).__name__ == "InterpretedFunction"
    assert not triton.knobs.runtime.interpret  # the knob was set for the load only


@pytest.mark.usefixtures("needs_cuda")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_compiled_kernels_on_cuda(bits: int, dtype: torch.dtype) -> None:
    w = make_weight(256, 512, dtype=dtype, huge=False).cuda()
    packed, scale, zero = launch.quantize_pack(w, bits, 128)
    ref = reference.quantize_pack(w.cpu(), bits, 128)
    assert torch.equal(packed.cpu(), ref[0]) and torch.equal(scale.cpu(), ref[1]) and torch.equal(zero.cpu(), ref[2])
    w_hat = launch.unpack_dequantize(packed, scale, zero, bits, 128, 512, torch.float32)
    assert torch.equal(w_hat.cpu(), reference.unpack_dequantize(*ref, bits, 128, 512))
    rtol = 1e-3 if dtype == torch.float16 else 1e-2  # bf16 tl.dot rounds W to bfloat16
    for m in (1, 4, 16, 64):
        x = torch.randn(m, 512, dtype=dtype, device="cuda")
        y = launch.dequant_matmul(x, packed, scale, zero, bits, 128, 512, autotune=False)
        assert_matmul_close(y.cpu(), reference.dequant_matmul(x.cpu(), *ref, bits, 128, 512), rtol)
