"""Memory budgets, width bounds and candidate widths, turned into one knapsack constraint.

Two kinds of budget (:meth:`Budget.parse`):

- average bits, ``"3.5"`` (or ``"3.5bits"``): ``sum_u params_u * bits_u <= 3.5 * sum_u params_u`` over
  the routed-expert weights, counting real parameter counts. It counts **payload bits only**: the
  convention of the AlphaQ/GPTQ papers, independent of the group size. Row padding to 8 values and the
  float16 scales and zeros are not counted; the plan reports the effective bits that include them
  (``bits + 32 / group_size`` for aligned shapes: 3.25 for 3-bit at group size 128).
- bytes, ``"12GB"``, ``"800MB"``, ``"1.5GiB"``: total stored bytes of the quantized experts, payload
  plus scales and zeros at the group size (decimal kB/MB/GB/TB = 1e3/1e6/1e9/1e12, binary
  KiB/MiB/GiB/TiB = 2^10..2^40, ``B`` bytes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from alphaq.errors import ConfigError, PlanError
from alphaq.quantization.layout import MAX_BITS, MIN_BITS

if TYPE_CHECKING:
    from alphaq.planning.costs import CostTable
    from alphaq.planning.units import Unit

DEFAULT_WIDTHS: tuple[int, ...] = (2, 3, 4, 8)
DEFAULT_GROUP_SIZE = 128
_BYTE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BUDGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class Budget:
    """A memory budget for the routed experts.

    Attributes:
        kind: ``bits`` (average payload bits per expert weight) or ``bytes`` (total expert bytes).
        value: bits per weight, or bytes.
        text: the budget as the user wrote it.
    """

    kind: Literal["bits", "bytes"]
    value: float
    text: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("bits", "bytes"):
            raise ConfigError(f"unknown budget kind {self.kind!r}; use bits or bytes")
        if not (math.isfinite(self.value) and self.value > 0):
            raise ConfigError(f"budget {self.text or self.value!r} must be a positive number, e.g. 3.5 or 12GB")

    @classmethod
    def parse(cls, text: str | float | Budget) -> Budget:
        """Parse ``"3.5"``, ``"3.5bits"``, ``"12GB"``, ``"800MB"``, ``"1.5GiB"``, ``"1000000B"``.

        Raises:
            ConfigError: not a positive number with a known unit.
        """
        if isinstance(text, Budget):
            return text
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls("bits", float(text), str(text))
        match = _BUDGET_RE.match(str(text))
        if not match:
            raise ConfigError(f"cannot read budget {text!r}; write average bits (3.5) or a size (12GB, 800MB, 1.5GiB)")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit in ("", "bit", "bits"):
            return cls("bits", number, str(text).strip())
        if unit not in _BYTE_UNITS:
            raise ConfigError(
                f"unknown budget unit {match.group(2)!r} in {text!r}; use bits, B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
            )
        return cls("bytes", number * _BYTE_UNITS[unit], str(text).strip())

    def describe(self) -> str:
        """Human-readable form: ``3.5 bits/weight`` or ``12.00 GB (12000000000 bytes)``."""
        if self.kind == "bits":
            return f"{self.value:g} bits/weight"
        return f"{self.value / 1e9:.3f} GB ({int(self.value)} bytes)"


def parse_widths(widths: str | Iterable[int]) -> tuple[int, ...]:
    """Candidate widths from ``"2,3,4,8"`` or a sequence: sorted, unique, each in 1..8.

    Raises:
        ConfigError: empty, not integers, or outside 1..8.
    """
    items = [w.strip() for w in widths.split(",") if w.strip()] if isinstance(widths, str) else list(widths)
    try:
        values = sorted({int(w) for w in items})
    except (TypeError, ValueError):
        raise ConfigError(f"widths {widths!r} must be integers, e.g. 2,3,4,8") from None
    if not values or any(not MIN_BITS <= w <= MAX_BITS for w in values):
        raise ConfigError(f"widths {widths!r} must be a non-empty subset of {MIN_BITS}..{MAX_BITS}, e.g. 2,3,4,8")
    return tuple(values)


@dataclass(frozen=True)
class Bounds:
    """Lower and upper width bounds, global and per decoder layer.

    Attributes:
        min_bits: global lower bound (None: none).
        max_bits: global upper bound (None: none).
        layer_min: layer -> lower bound (overrides the global one for that layer).
        layer_max: layer -> upper bound (overrides the global one for that layer).
    """

    min_bits: int | None = None
    max_bits: int | None = None
    layer_min: Mapping[int, int] = field(default_factory=dict)
    layer_max: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (
            ("min-bits", self.min_bits),
            ("max-bits", self.max_bits),
            *((f"min-bits {k}:", v) for k, v in self.layer_min.items()),
            *((f"max-bits {k}:", v) for k, v in self.layer_max.items()),
        ):
            if value is not None and not MIN_BITS <= value <= MAX_BITS:
                raise ConfigError(f"--{name} {value} is outside {MIN_BITS}..{MAX_BITS}; pick a width in that range")
        for layer in set(self.layer_min) | set(self.layer_max) | {None}:
            lo, hi = self.limits(layer)
            if lo > hi:
                where = "" if layer is None else f" for layer {layer}"
                raise ConfigError(
                    f"--min-bits {lo} exceeds --max-bits {hi}{where}; lower the minimum or raise the maximum"
                )

    @classmethod
    def parse(cls, min_text: str | int | None = None, max_text: str | int | None = None) -> Bounds:
        """Parse ``"2"``, ``"0:4"``, ``"2,0:4,1-3:3"`` (a global value and/or LAYER[-LAYER]:BITS overrides).

        Raises:
            ConfigError: malformed entry.
        """
        lo_global, lo_layers = _parse_bound(min_text, "min-bits")
        hi_global, hi_layers = _parse_bound(max_text, "max-bits")
        return cls(lo_global, hi_global, lo_layers, hi_layers)

    def limits(self, layer: int | None) -> tuple[int, int]:
        """(lowest, highest) width allowed in ``layer``."""
        lo = self.layer_min.get(layer, self.min_bits) if layer is not None else self.min_bits
        hi = self.layer_max.get(layer, self.max_bits) if layer is not None else self.max_bits
        return (MIN_BITS if lo is None else lo), (MAX_BITS if hi is None else hi)

    def describe(self) -> dict[str, object]:
        """JSON-ready form for the plan's provenance."""
        return {
            "min_bits": self.min_bits,
            "max_bits": self.max_bits,
            "layer_min": {str(k): v for k, v in sorted(self.layer_min.items())},
            "layer_max": {str(k): v for k, v in sorted(self.layer_max.items())},
        }


def _parse_bound(text: str | int | None, option: str) -> tuple[int | None, dict[int, int]]:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None, {}
    if isinstance(text, int) and not isinstance(text, bool):
        return text, {}
    global_value: int | None = None
    layers: dict[int, int] = {}
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(?:(\d+)(?:-(\d+))?:)?(\d+)", part)
        if not match:
            raise ConfigError(f"--{option} entry {part!r} is malformed; write BITS, LAYER:BITS or FIRST-LAST:BITS")
        first, last, bits = match.group(1), match.group(2), int(match.group(3))
        if first is None:
            global_value = bits
            continue
        for layer in range(int(first), int(last if last is not None else first) + 1):
            layers[layer] = bits
    return global_value, layers


def allowed_mask(units: Sequence[Unit], widths: Sequence[int], bounds: Bounds) -> np.ndarray:
    """[U, W] bool: which widths each unit may take under ``bounds``.

    Raises:
        PlanError: a unit is left with no candidate width.
    """
    w = np.asarray(widths)
    mask = np.zeros((len(units), len(w)), dtype=bool)
    for i, unit in enumerate(units):
        lo, hi = bounds.limits(unit.layer)
        mask[i] = (w >= lo) & (w <= hi)
        if not mask[i].any():
            raise PlanError(
                f"no candidate width of {list(widths)} lies in [{lo}, {hi}] for unit {unit.key}; "
                "add a width in that range (--widths) or change --min-bits/--max-bits"
            )
    return mask


@dataclass(frozen=True, eq=False)
class Constraint:
    """``sum_u weight[u, choice[u]] <= capacity``; ``unit`` says what weight counts (bits or bytes)."""

    weight: np.ndarray  # [U, W]
    capacity: float
    unit: Literal["bits", "bytes"]


def budget_constraint(budget: Budget, table: CostTable) -> Constraint:
    """The knapsack constraint a budget puts on a cost table's units.

    Args:
        budget: average payload bits or total bytes.
        table: units, widths, per-option bytes.

    Returns:
        Payload bits ``params * width`` against ``value * total params`` for a bits budget, stored
        bytes against ``value`` for a bytes budget.
    """
    if budget.kind == "bits":
        return Constraint(table.payload_bits.astype(np.float64), budget.value * table.total_params, "bits")
    return Constraint(table.bytes.astype(np.float64), float(budget.value), "bytes")


def check_feasible(budget: Budget, table: CostTable, mask: np.ndarray) -> None:
    """Raise :class:`PlanError` with the feasible range when no allowed choice meets ``budget`` exactly.

    A budget below the lightest allowed choice cannot be met; one above the heaviest cannot be used.
    """
    con = budget_constraint(budget, table)
    lo = float(np.where(mask, con.weight, np.inf).min(axis=1).sum())
    hi = float(np.where(mask, con.weight, -np.inf).max(axis=1).sum())
    if lo <= con.capacity <= hi * (1 + 1e-9):  # rounding above the heaviest choice is no error
        return
    bits_lo = float(np.where(mask, table.payload_bits, np.inf).min(axis=1).sum()) / table.total_params
    bits_hi = float(np.where(mask, table.payload_bits, -np.inf).max(axis=1).sum()) / table.total_params
    bytes_lo = float(np.where(mask, table.bytes, np.inf).min(axis=1).sum())
    bytes_hi = float(np.where(mask, table.bytes, -np.inf).max(axis=1).sum())
    side = "below the smallest" if con.capacity < lo else "above the largest"
    raise PlanError(
        f"budget {budget.text or budget.describe()} is {side} feasible value: with widths "
        f"{list(table.widths)} and these bounds the experts take {bits_lo:.4g} to {bits_hi:.4g} "
        f"bits/weight ({bytes_lo / 1e9:.4g} to {bytes_hi / 1e9:.4g} GB, {int(bytes_lo)} to "
        f"{int(bytes_hi)} bytes); pick a budget in that range or change --widths/--min-bits/--max-bits"
    )
