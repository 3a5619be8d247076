"""Small value helpers of the plan pages: optional JSON blocks, numbers from JSON, formatted numbers, width classes.

Pure functions shared by :mod:`alphaq.report.plan_sections`, :mod:`alphaq.report.plan_budget_sections` and
:mod:`alphaq.report.quantize_page`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def bits_class(value: Any) -> str:
    """The CSS class of a width cell: ``q-bad`` for 1-2 bits, ``q-warn`` for 3, ``na`` for bf16 (16)."""
    return "q-bad" if int(value) <= 2 else "q-warn" if int(value) == 3 else "na" if int(value) == 16 else ""


def as_mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one (for optional JSON blocks)."""
    return value if isinstance(value, Mapping) else {}


def as_float(value: Any) -> float:
    """A float from a JSON value; NaN for None, booleans, text and other non-numbers."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt_number(value: Any, fmt: str) -> str:
    """``fmt.format(value)`` for a finite number, else an em dash."""
    number = as_float(value)
    return fmt.format(number) if np.isfinite(number) else "\u2014"
