"""alphaq: data-free HT-SR audit and alpha-guided mixed-precision quantization of MoE LLMs.

The public API is imported lazily so ``import alphaq`` (and ``alphaq --help``) stays fast:

- :func:`alphaq.inspect` — per-matrix and per-expert HT-SR metrics of a checkpoint.
- :func:`alphaq.demo_model_path` — the bundled, trained demo MoE.
- :func:`alphaq.load_model` — a ready transformers model and tokenizer from a checkpoint folder.
- :func:`alphaq.open_checkpoint` — lazy, classified view of a checkpoint's matrices.
- :func:`alphaq.load_quantized` — a transformers model whose routed experts run from packed weights.
"""

from __future__ import annotations

from typing import Any

from alphaq._version import __version__

_LAZY = {
    "inspect": ("alphaq.audit.run", "inspect"),
    "InspectConfig": ("alphaq.audit.run", "InspectConfig"),
    "InspectResult": ("alphaq.audit.run", "InspectResult"),
    "save_inspect": ("alphaq.audit.run", "save_inspect"),
    "demo_model_path": ("alphaq.zoo.demo", "demo_model_path"),
    "load_model": ("alphaq.load.model", "load_model"),
    "open_checkpoint": ("alphaq.load", "open_checkpoint"),
    "load_quantized": ("alphaq.quantization.loading", "load_quantized"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'alphaq' has no attribute {name!r}")
