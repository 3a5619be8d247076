"""Group-wise integer weight quantization: format arithmetic, bit packing, RTN, HQQ and GPTQ (pure torch).

The byte-size arithmetic (:mod:`alphaq.quantization.layout`) is pure Python and imported eagerly; the
torch functions load on first use so importing this package (e.g. from the CLI) does not import torch.
The format is described in ``docs/quantization-format.md``.
"""

from __future__ import annotations

from typing import Any

from alphaq.quantization.layout import (
    QuantBytes,
    QuantSpec,
    dense_nbytes,
    num_groups,
    packed_row_bytes,
    quantized_nbytes,
)

_LAZY = {
    "QuantizedTensor": ("alphaq.quantization.primitives", "QuantizedTensor"),
    "quantize_groupwise": ("alphaq.quantization.primitives", "quantize_groupwise"),
    "dequantize_groupwise": ("alphaq.quantization.primitives", "dequantize_groupwise"),
    "quantize_dequantize": ("alphaq.quantization.methods", "quantize_dequantize"),
    "quantize_with": ("alphaq.quantization.methods", "quantize_with"),
    "METHODS": ("alphaq.quantization.methods", "METHODS"),
    "relative_error": ("alphaq.quantization.primitives", "relative_error"),
    "quantize_hqq": ("alphaq.quantization.hqq", "quantize_hqq"),
    "quantize_gptq": ("alphaq.quantization.gptq", "quantize_gptq"),
    "pack": ("alphaq.quantization.packing", "pack"),
    "unpack": ("alphaq.quantization.packing", "unpack"),
}

__all__ = ["QuantBytes", "QuantSpec", "dense_nbytes", "num_groups", "packed_row_bytes", "quantized_nbytes", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'alphaq.quantization' has no attribute {name!r}")
