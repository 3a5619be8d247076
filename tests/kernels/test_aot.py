"""The kernels build for an H100 (sm_90) on this CPU-only machine: the interpreter tests cannot catch
what only the GPU compiler rejects (non-constexpr globals, layouts), nor spills or scalar loads."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from alphaq.kernels import launch

pytestmark = pytest.mark.usefixtures("needs_triton")


@pytest.fixture(scope="module", autouse=True)
def _private_triton_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Compile into a temporary cache, not the user's ~/.triton."""
    path = tmp_path_factory.mktemp("triton-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def compile_launch():
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("triton has no NVIDIA backend here: cannot build for sm_90")
    from alphaq.kernels.aot import compile_launch

    return compile_launch


def _quantized(rows: int, cols: int, bits: int, group_size: int = 128):
    packed = torch.zeros(rows, -(-cols // 8) * bits, dtype=torch.uint8)
    params = torch.ones(rows, -(-cols // group_size), dtype=torch.float16)
    return packed, params, params.clone()


def test_quantize_and_dequantize_kernels_build(compile_launch) -> None:
    w = torch.zeros(256, 512, dtype=torch.bfloat16)
    compiled = compile_launch(launch.plan_quantize_pack(w, 3, 128, interpret=False)[0])
    assert compiled.spills == 0 or compiled.spills != compiled.spills  # NaN when cuobjdump is missing
    packed, scale, zero = _quantized(256, 512, 3)
    compiled = compile_launch(
        launch.plan_unpack_dequantize(packed, scale, zero, 3, 128, 512, torch.bfloat16, interpret=False)[0]
    )
    assert compiled.spills == 0 or compiled.spills != compiled.spills


@pytest.mark.parametrize(("bits", "m"), [(4, 1), (2, 1), (3, 4)])
def test_gemv_builds_without_spills_and_streams_the_weights(compile_launch, bits: int, m: int) -> None:
    packed, scale, zero = _quantized(1024, 4096, bits)
    x = torch.zeros(m, 4096, dtype=torch.bfloat16)
    plan = launch.plan_dequant_matmul(x, packed, scale, zero, bits, 128, 4096, interpret=False, sm_count=132)[0]
    assert plan.kernel == "gemv_kernel"
    compiled = compile_launch(plan)
    if compiled.registers == compiled.registers:  # known (cuobjdump present)
        assert compiled.spills == 0
        assert compiled.registers <= 168
    # The weight tiles are copied asynchronously into the pipeline's buffers: 16 bytes at a time for
    # widths read as whole words (2, 4 bits), word by word for 3 bits (a unit is 3 words).
    assert ("cp.async.cg.shared.global" if bits in (2, 4) else "cp.async") in compiled.ptx
    assert compiled.shuffles <= 64  # reductions across threads only once per tile and row


def test_dot_kernel_builds_with_tensor_cores(compile_launch) -> None:
    packed, scale, zero = _quantized(1024, 4096, 4)
    x = torch.zeros(64, 4096, dtype=torch.bfloat16)
    plan = launch.plan_dequant_matmul(x, packed, scale, zero, 4, 128, 4096, interpret=False, sm_count=132)[0]
    assert plan.kernel == "dot_kernel" and plan.constexprs["DOT_KIND"] == 1  # bf16 operands on a GPU
    compiled = compile_launch(plan)
    assert "wgmma" in compiled.ptx or "mma.sync" in compiled.ptx
