"""What the planner assigns widths to (units of routed-expert matrices) and what it keeps fixed.

A *unit* is a set of routed-expert matrices that must share one width:

- ``expert``: all matrices of one (layer, expert) (gate, up, down) share a width.
- ``matrix``: every matrix alone.
- ``layer``: one width per (layer, projection) shared by all experts of that layer, the only kind of
  plan llama.cpp GGUF, vLLM's fused MoE and TensorRT-LLM can serve unchanged.

Everything that is not a routed expert (attention, routers, shared experts, dense MLPs, embeddings,
lm_head) is outside the budget and kept at a fixed width per role (:class:`KeepPolicy`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from alphaq.errors import ConfigError, PlanError
from alphaq.quantization.layout import QuantSpec, dense_nbytes, quantized_nbytes

if TYPE_CHECKING:
    import pandas as pd

Granularity = Literal["expert", "matrix", "layer"]
GRANULARITIES: tuple[str, ...] = ("expert", "matrix", "layer")
#: Columns of the inspect ``details`` table the planner reads.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "name",
    "tensor",
    "layer",
    "expert",
    "proj",
    "role",
    "rows",
    "cols",
    "params",
    "alpha",
    "status",
)
#: Width meaning "keep unquantized in bf16".
KEEP_BF16 = 16
#: Policy role names -> ``role`` values of the details table.
KEEP_ROLES: dict[str, str] = {
    "attention": "attention",
    "router": "router",
    "shared": "shared_expert",
    "dense": "dense_mlp",
    "embedding": "embedding",
    "lm_head": "lm_head",
    "other": "other",
}
_PROJ_ORDER = {"gate": 0, "up": 1, "down": 2}


@dataclass(frozen=True)
class Unit:
    """Routed-expert matrices that share one width.

    Attributes:
        key: unique id, ``L{layer}.E{expert}`` (expert), ``L{layer}.{proj}`` (layer) or the matrix name.
        layer: decoder layer (None when the checkpoint gives none).
        expert: expert index; None for layer units.
        proj: projection; None for expert units.
        matrices: names of its matrices (``details.name``).
        params: total parameters.
        shapes: ``(rows, cols)`` of each matrix, in ``matrices`` order.
        alpha: parameter-weighted mean alpha of its successfully fitted matrices; NaN if none.
        status: ``success`` (every matrix fitted), ``partial`` (some) or ``failed`` (none).
    """

    key: str
    layer: int | None
    expert: int | None
    proj: str | None
    matrices: tuple[str, ...]
    params: int
    shapes: tuple[tuple[int, int], ...]
    alpha: float
    status: str

    def nbytes(self, bits: int, group_size: int) -> int:
        """Stored bytes of all its matrices at ``bits`` (payload + float16 scales and zeros)."""
        spec = QuantSpec(bits, group_size)
        return sum(quantized_nbytes(rows, cols, spec).total for rows, cols in self.shapes)


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        if value != value:  # NaN
            return None
    except (TypeError, ValueError):  # pd.NA raises on bool()
        return None
    return int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None or (not isinstance(value, str) and _opt_int(value) is None) else str(value)


def check_details(details: pd.DataFrame) -> None:
    """Raise :class:`PlanError` if ``details`` lacks a planner column or has duplicate names."""
    missing = [c for c in REQUIRED_COLUMNS if c not in details.columns]
    if missing:
        raise PlanError(
            f"inspect details lack column(s) {', '.join(missing)}; re-run `alphaq inspect` with this alphaq version"
        )
    dupes = details["name"][details["name"].duplicated()]
    if len(dupes):
        raise PlanError(f"inspect details name matrix {dupes.iloc[0]!r} twice; re-run `alphaq inspect`")


def expert_rows(details: pd.DataFrame) -> pd.DataFrame:
    """The routed-expert rows (``role == "expert"``) in a stable order: layer, expert, projection, name."""
    check_details(details)
    rows = details[details["role"] == "expert"].copy()
    if rows.empty:
        raise PlanError(
            "no routed-expert matrix in the inspect details; inspect an MoE checkpoint (or pass "
            "--pattern-file so its experts are recognised)"
        )
    rows["_layer"] = [(-math.inf if _opt_int(v) is None else _opt_int(v)) for v in rows["layer"]]
    rows["_expert"] = [(-math.inf if _opt_int(v) is None else _opt_int(v)) for v in rows["expert"]]
    rows["_proj"] = [_PROJ_ORDER.get(str(p), 3) for p in rows["proj"]]
    rows = rows.sort_values(["_layer", "_expert", "_proj", "name"], kind="stable")
    return rows.drop(columns=["_layer", "_expert", "_proj"]).reset_index(drop=True)


def build_units(details: pd.DataFrame, granularity: Granularity) -> list[Unit]:
    """Group the routed-expert matrices of an inspect ``details`` table into planning units.

    Args:
        details: one row per matrix (inspect stage output; :data:`REQUIRED_COLUMNS` at least).
        granularity: ``expert``, ``matrix`` or ``layer``.

    Returns:
        Units sorted by layer, then expert / projection; each matrix in exactly one unit.

    Raises:
        ConfigError: unknown granularity.
        PlanError: missing columns, duplicate names, or no routed expert.
    """
    if granularity not in GRANULARITIES:
        raise ConfigError(f"unknown granularity {granularity!r}; use one of {', '.join(GRANULARITIES)}")
    rows = expert_rows(details)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in rows.to_dict("records"):
        layer, expert = _opt_int(record["layer"]), _opt_int(record["expert"])
        proj = _opt_str(record["proj"])
        if granularity == "expert":
            key = ("expert", layer, expert)
        elif granularity == "layer":
            key = ("layer", layer, proj)
        else:
            key = ("matrix", record["name"])
        groups.setdefault(key, []).append(record)
    return [_make_unit(key, records) for key, records in groups.items()]


def _make_unit(key: tuple[Any, ...], records: list[dict[str, Any]]) -> Unit:
    first = records[0]
    layer = _opt_int(first["layer"])
    if key[0] == "expert":
        name, expert, proj = f"L{layer}.E{_opt_int(first['expert'])}", _opt_int(first["expert"]), None
    elif key[0] == "layer":
        name, expert, proj = f"L{layer}.{_opt_str(first['proj'])}", None, _opt_str(first["proj"])
    else:
        name, expert, proj = str(first["name"]), _opt_int(first["expert"]), _opt_str(first["proj"])
    params = [int(r["params"]) for r in records]
    fitted = [
        (float(r["alpha"]), p)
        for r, p in zip(records, params)
        if r["status"] == "success" and r["alpha"] is not None and math.isfinite(float(r["alpha"]))
    ]
    alpha = sum(a * p for a, p in fitted) / sum(p for _, p in fitted) if fitted else math.nan
    status = "success" if len(fitted) == len(records) else ("partial" if fitted else "failed")
    return Unit(
        key=name,
        layer=layer,
        expert=expert,
        proj=proj,
        matrices=tuple(str(r["name"]) for r in records),
        params=sum(params),
        shapes=tuple((int(r["rows"]), int(r["cols"])) for r in records),
        alpha=alpha,
        status=status,
    )


@dataclass(frozen=True)
class KeepPolicy:
    """Fixed widths of the matrices outside the budget, by role (16 = keep in bf16).

    Attributes:
        widths: policy role name (:data:`KEEP_ROLES` keys) -> width, 1..8 or 16. Roles not given are 16.
    """

    widths: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for role, bits in self.widths.items():
            if role not in KEEP_ROLES:
                raise ConfigError(f"unknown role {role!r} in the keep policy; use {', '.join(KEEP_ROLES)}")
            if isinstance(bits, bool) or not isinstance(bits, int) or not (1 <= bits <= 8 or bits == KEEP_BF16):
                raise ConfigError(f"keep width {role}={bits!r} is invalid; use 16 (bf16) or an integer 1..8")
        object.__setattr__(self, "widths", dict(sorted(self.widths.items())))

    @classmethod
    def parse(cls, text: str | None) -> KeepPolicy:
        """Parse ``"attention=16,shared=8"`` (empty or None: everything kept in bf16).

        Raises:
            ConfigError: malformed entry, unknown role or width.
        """
        widths: dict[str, int] = {}
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            role, sep, value = part.partition("=")
            if not sep or not value.strip().isdigit():
                raise ConfigError(
                    f"keep policy entry {part!r} is malformed; write ROLE=BITS, e.g. attention=16,shared=8"
                )
            widths[role.strip()] = int(value)
        return cls(widths)

    def bits_for(self, role: str) -> int:
        """Width of a matrix with details ``role`` (16 unless the policy says otherwise)."""
        for name, detail_role in KEEP_ROLES.items():
            if detail_role == role:
                return int(self.widths.get(name, KEEP_BF16))
        return int(self.widths.get("other", KEEP_BF16))

    def __str__(self) -> str:
        return ",".join(f"{role}={bits}" for role, bits in self.widths.items()) or "all=16"


def matrix_nbytes(rows: int, cols: int, bits: int, group_size: int) -> int:
    """Stored bytes of one matrix: bf16 when ``bits == 16``, else the quantized layout."""
    if bits == KEEP_BF16:
        return dense_nbytes(rows, cols)
    return quantized_nbytes(rows, cols, QuantSpec(bits, group_size)).total


def kept_rows(details: pd.DataFrame, policy: KeepPolicy, group_size: int) -> pd.DataFrame:
    """The matrices outside the budget with their kept width and bytes.

    Args:
        details: the inspect details table.
        policy: fixed width per role.
        group_size: group size used for the roles kept below 16 bits.

    Returns:
        The non-expert rows with added ``bits`` and ``bytes`` columns.
    """
    check_details(details)
    rows = details[details["role"] != "expert"].copy()
    rows["bits"] = [policy.bits_for(str(role)) for role in rows["role"]]
    rows["bytes"] = [
        matrix_nbytes(int(r), int(c), int(b), group_size) for r, c, b in zip(rows["rows"], rows["cols"], rows["bits"])
    ]
    return rows.reset_index(drop=True)


def kept_bytes_by_role(kept: pd.DataFrame) -> dict[str, int]:
    """Bytes of the kept matrices summed per details role (from :func:`kept_rows`)."""
    return {str(role): int(group["bytes"].sum()) for role, group in kept.groupby("role", sort=True)}
