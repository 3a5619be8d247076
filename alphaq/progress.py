"""The one progress-callback type every stage takes: ``progress(advance, item, total)``."""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(advance, item, total)``: ``advance`` units done now, ``item`` what was done, ``total`` units in all.
ProgressFn = Callable[[int, str, int], None]

__all__ = ["ProgressFn"]
