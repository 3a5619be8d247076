from __future__ import annotations

import pytest
import torch

from alphaq.kernels import reference
from alphaq.quantization import QuantSpec, pack, quantize_dequantize, quantize_groupwise


@pytest.mark.parametrize(("bits", "group_size", "cols"), [(3, 32, 96), (4, 128, 100), (2, 64, 64)])
def test_references_follow_alphaq_quantize(bits: int, group_size: int, cols: int) -> None:
    w = torch.randn(12, cols, dtype=torch.float16)
    packed, scale, zero = reference.quantize_pack(w, bits, group_size)
    qt = quantize_groupwise(w, QuantSpec(bits, group_size))
    assert torch.equal(packed, pack(qt.q, bits)) and torch.equal(scale, qt.scale) and torch.equal(zero, qt.zero)
    w_hat = reference.unpack_dequantize(packed, scale, zero, bits, group_size, cols)
    assert torch.equal(w_hat, quantize_dequantize(w, QuantSpec(bits, group_size), dtype=torch.float32))
    x = torch.randn(5, cols, dtype=torch.float16)
    y = reference.dequant_matmul(x, packed, scale, zero, bits, group_size, cols)
    assert y.dtype == torch.float16
    assert torch.equal(y, (x.float() @ w_hat.T).half())
