from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from alphaq.errors import ConfigError
from alphaq.kernels import launch, ops, reference
from alphaq.quantization import QuantSpec, quantize_dequantize


@pytest.fixture()
def no_triton_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a Triton kernel is launched."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Triton kernel was launched")

    for name in ("quantize_pack", "unpack_dequantize", "dequant_matmul"):
        monkeypatch.setattr(launch, name, fail)


def _weight(rows: int = 16, cols: int = 96) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)


@pytest.mark.usefixtures("no_triton_launch")
def test_auto_on_cpu_runs_the_torch_reference() -> None:
    w = _weight()
    packed, scale, zero = ops.quantize_pack(w, 3, 32)
    ref = reference.quantize_pack(w, 3, 32)
    assert torch.equal(packed, ref[0]) and torch.equal(scale, ref[1]) and torch.equal(zero, ref[2])
    w_hat = ops.unpack_dequantize(packed, scale, zero, 3, 32, 96, torch.bfloat16)
    assert torch.equal(w_hat, quantize_dequantize(w, QuantSpec(3, 32)))
    x = torch.randn(2, 5, 96)
    y = ops.dequant_matmul(x, packed, scale, zero, 3, 32, 96)
    assert y.shape == (2, 5, 16) and y.dtype == torch.float32
    torch.testing.assert_close(y, x @ quantize_dequantize(w, QuantSpec(3, 32), dtype=torch.float32).T)


@pytest.mark.usefixtures("needs_triton")
def test_forced_triton_on_cpu_matches_the_reference() -> None:
    w = _weight()
    got = ops.quantize_pack(w, 4, 64, backend="triton")
    ref = reference.quantize_pack(w, 4, 64)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert torch.equal(
        ops.unpack_dequantize(*got, 4, 64, 96, backend="triton"), reference.unpack_dequantize(*ref, 4, 64, 96)
    )
    x = torch.randn(3, 2, 96, dtype=torch.float16)
    y = ops.dequant_matmul(x, *got, 4, 64, 96, backend="triton")
    y_ref = reference.dequant_matmul(x.reshape(6, 96), *ref, 4, 64, 96).reshape(3, 2, 16)
    assert y.shape == (3, 2, 16)
    assert float((y - y_ref).float().norm()) <= 1e-3 * float(y_ref.float().norm())


def test_empty_batch_and_empty_weight() -> None:
    packed, scale, zero = reference.quantize_pack(_weight(), 2, 32)
    y = ops.dequant_matmul(torch.randn(0, 96), packed, scale, zero, 2, 32, 96, backend="triton")
    assert y.shape == (0, 16)
    empty = (packed[:0], scale[:0], zero[:0])
    assert ops.dequant_matmul(torch.randn(3, 96), *empty, 2, 32, 96, backend="triton").shape == (3, 0)
    assert ops.unpack_dequantize(*empty, 2, 32, 96, backend="triton").shape == (0, 96)


def test_backend_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _weight()
    with pytest.raises(ConfigError, match="unknown kernel backend"):
        ops.quantize_pack(w, 4, 32, backend="cuda")  # type: ignore[arg-type]
    monkeypatch.setattr(launch, "triton_available", lambda: False)
    with pytest.raises(ConfigError, match="needs the triton package"):
        ops.quantize_pack(w, 4, 32, backend="triton")
    assert torch.equal(ops.quantize_pack(w, 4, 32)[0], reference.quantize_pack(w, 4, 32)[0])  # auto still works


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # the interpreter's 120000 -> inf
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_weight_validation(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "triton":
        request.getfixturevalue("needs_triton")
    with pytest.raises(ConfigError):
        ops.quantize_pack(_weight(), 9, 32, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ops.quantize_pack(_weight(), 4, 12, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        ops.quantize_pack(torch.zeros(2, 3, 8), 4, 32, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        ops.quantize_pack(torch.zeros(2, 8, dtype=torch.int32), 4, 32, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN or Inf"):
        ops.quantize_pack(torch.tensor([[1.0, float("nan")] * 4]), 4, 32, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beyond"):
        ops.quantize_pack(torch.tensor([[1e5] * 8]), 4, 32, backend=backend)  # type: ignore[arg-type]
    # 1 bit: the range -60000..60000 needs a scale of 120000, beyond float16 (both backends reject it).
    with pytest.raises(ValueError, match="float16 scale"):
        ops.quantize_pack(torch.tensor([[-6e4, 6e4] * 4]), 1, 8, backend=backend)  # type: ignore[arg-type]


def test_quantized_validation() -> None:
    packed, scale, zero = reference.quantize_pack(_weight(), 4, 32)
    with pytest.raises(ValueError, match="need 48"):
        ops.unpack_dequantize(packed[:, :40], scale, zero, 4, 32, 96)
    with pytest.raises(ValueError, match="pass the original column count"):
        ops.unpack_dequantize(packed, scale, zero, 4, 32, 80)
    with pytest.raises(ValueError, match="scale must be float16"):
        ops.unpack_dequantize(packed, scale.float(), zero, 4, 32, 96)
    with pytest.raises(ValueError, match="zero must be float16"):
        ops.unpack_dequantize(packed, scale, zero[:, :2], 4, 32, 96)
    with pytest.raises(ValueError, match="uint8"):
        ops.unpack_dequantize(packed.to(torch.int16), scale, zero, 4, 32, 96)
    with pytest.raises(ValueError, match="cols"):
        ops.unpack_dequantize(packed, scale, zero, 4, 32, 0)
    with pytest.raises(ValueError, match="dtype"):
        ops.unpack_dequantize(packed, scale, zero, 4, 32, 96, torch.int8)
    with pytest.raises(ValueError, match=r"x must be \[..., 96\]"):
        ops.dequant_matmul(torch.randn(2, 64), packed, scale, zero, 4, 32, 96)
    with pytest.raises(ValueError, match="x must be float16"):
        ops.dequant_matmul(torch.ones(2, 96, dtype=torch.int32), packed, scale, zero, 4, 32, 96)


def test_importing_the_package_imports_neither_triton_nor_torch() -> None:
    code = (
        "import sys, alphaq.kernels, alphaq.kernels.ops, alphaq.kernels.launch, alphaq.kernels.tiling; "
        "print('triton' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
