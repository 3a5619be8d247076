"""The inspect stage: HT-SR metrics of every matrix, per-expert quality, and the inspect artifacts.

* :mod:`alphaq.audit.run`: :class:`InspectConfig`, :func:`inspect` (checkpoint -> :class:`InspectResult`),
  :func:`save_inspect` (the run folder's inspect files);
* :mod:`alphaq.audit.analysis`: the per-matrix work (selection, streamed eigenvalues, metrics rows);
* :mod:`alphaq.audit.expert_quality`: per-expert aggregation and the data-free quality flag;
* :mod:`alphaq.audit.table_files`: the tables written as CSV / Parquet without pandas;
* :mod:`alphaq.audit.artifacts`: the one reader of a saved inspect run (:func:`load_inspect_run`).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "InspectConfig": "alphaq.audit.run",
    "InspectResult": "alphaq.audit.run",
    "inspect": "alphaq.audit.run",
    "save_inspect": "alphaq.audit.run",
    "aggregate_experts": "alphaq.audit.expert_quality",
    "InspectRun": "alphaq.audit.artifacts",
    "load_inspect_run": "alphaq.audit.artifacts",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alphaq.audit' has no attribute {name!r}")
