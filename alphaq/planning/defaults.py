"""Defaults of the plan stage that the CLI needs without importing the planner (numpy, pandas)."""

from __future__ import annotations

#: Exponent of the alpha importance ``(median_alpha / alpha) ** gamma``, chosen on evidence (docs/results.md,
#: ``bench/gamma_sweep.py``).
DEFAULT_GAMMA = 16.0

__all__ = ["DEFAULT_GAMMA"]
