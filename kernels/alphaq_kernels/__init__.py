"""Triton kernels of alphaq, installed as ``alphaq.kernels``.

The source folder is ``kernels/alphaq_kernels/`` of the repository; ``pyproject.toml`` maps it to the
``alphaq.kernels`` package so nothing named ``kernels`` is installed at the top level of site-packages.
Importing this package never imports Triton (nor torch): each kernel module imports it lazily.

Public API (``docs/kernels.md``), each with a plain-torch reference of the same signature in
:mod:`alphaq.kernels.reference`:

- :func:`quantize_pack` ``(w, bits, group_size) -> (packed, scale, zero)``: min-max RTN + bit packing;
- :func:`unpack_dequantize` ``(packed, scale, zero, bits, group_size, cols, dtype) -> W``;
- :func:`dequant_matmul` ``(x, packed, scale, zero, bits, group_size, cols) -> x @ W.T``, fused.

Each takes ``backend="auto" | "triton" | "torch"``: ``"auto"`` runs Triton on CUDA tensors and the torch
reference elsewhere.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "quantize_pack": ("alphaq.kernels.ops", "quantize_pack"),
    "unpack_dequantize": ("alphaq.kernels.ops", "unpack_dequantize"),
    "dequant_matmul": ("alphaq.kernels.ops", "dequant_matmul"),
    "BACKENDS": ("alphaq.kernels.ops", "BACKENDS"),
    "triton_available": ("alphaq.kernels.launch", "triton_available"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'alphaq.kernels' has no attribute {name!r}")
