"""Stages run together: ``alphaq run`` (:mod:`alphaq.pipeline.run`) and the example-report gallery
(:mod:`alphaq.pipeline.gallery`)."""

from __future__ import annotations

from typing import Any

_LAZY = {
    "RunConfig": "alphaq.pipeline.run",
    "PipelineResult": "alphaq.pipeline.run",
    "run_pipeline": "alphaq.pipeline.run",
    "build_gallery": "alphaq.pipeline.gallery",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alphaq.pipeline' has no attribute {name!r}")
