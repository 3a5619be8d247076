"""Whole-model GGUF plans (pure): one ggml type per tensor llama-quantize quantizes, under the file's real size.

Inputs are the measurements of :mod:`alphaq.export.gguf_measure` (bytes and errors of every tensor at every type,
measured by llama.cpp's own quantizer) and per-tensor signals; the output is the type of every tensor that
minimises the total *importance-weighted error* with the GGUF file, header and unplanned tensors included, no
larger than the budget (the exact multiple-choice knapsack of :func:`alphaq.planning.solver.solve_exact`).

Importance forms (:data:`IMPORTANCE_FORMS`), each a cost ``[T, K]``:

* ``fisher`` (default): ``1/2 sum_j F_j ||W_:j - Q(W)_:j||^2``, the squared error of each input column weighted by
  the model's own Fisher information (:mod:`alphaq.planning.self_fisher`, measured on text the model writes
  itself): the second-order prediction of the KL divergence each tensor's quantization adds, in nats per token.
* ``alpha``: the AlphaQ principle: squared error times ``(alpha / median alpha) ** -gamma`` per matrix (per expert
  for expert tensors): heavier-tailed (lower alpha) matrices count more.
* ``fisher_alpha``: ``fisher`` times the same alpha factor.
* ``kurtosis``: squared error times ``(kurtosis / median) ** beta``.
* ``absolute``: ``||W - Q(W)||_F^2``. ``uniform``: every weight alike, ``params * ||W - Q(W)||_F^2 / ||W||_F^2``
  (the closest a mixed-type file comes to one width everywhere). ``relative``: ``||W - Q(W)||_F^2 / ||W||_F^2``
  (every tensor alike, whatever its size).

Which form is the default was decided on held-out text (``bench/gguf_presets.py --study``; docs/results.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from alphaq.errors import ConfigError, PlanError
from alphaq.export.gguf_measure import MODEL_TYPES, GgufMeasurements, padded

IMPORTANCE_FORMS: tuple[str, ...] = ("fisher", "alpha", "fisher_alpha", "kurtosis", "absolute", "uniform", "relative")
DEFAULT_IMPORTANCE = "fisher"
#: llama-quantize presets a budget may name (the file size the preset gives this checkpoint).
PRESETS: tuple[str, ...] = (
    "Q2_K",
    "Q2_K_S",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
)
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_BYTE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30}


@dataclass(frozen=True)
class GgufBudget:
    """The size of the GGUF file a plan may write.

    Attributes:
        kind: ``bytes`` (the file's size), ``bits`` (bits per weight over the whole file: ``8 * bytes / params``
            of every tensor) or ``preset`` (the size llama-quantize's preset gives this checkpoint).
        value: bytes, bits per weight, or 0 for a preset.
        text: as written.
        preset: the preset's name (``Q3_K_M``) for kind ``preset``.
    """

    kind: str
    value: float
    text: str
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("bytes", "bits", "preset"):
            raise ConfigError(f"unknown GGUF budget kind {self.kind!r}; use bytes, bits or a preset name")
        if self.kind == "preset" and self.preset not in PRESETS:
            raise ConfigError(f"--budget {self.text}: not a llama-quantize preset; use one of {', '.join(PRESETS)}")
        if self.kind != "preset" and not (math.isfinite(self.value) and self.value > 0):
            raise ConfigError(f"--budget {self.text!r} must be positive, e.g. 7.5MB, 3.5 or Q3_K_M")

    @classmethod
    def parse(cls, text: str | float) -> GgufBudget:
        """``"7.5MB"`` / ``"1.2GiB"`` / ``"8000000B"`` (file bytes), ``"3.5"`` (bits per weight of the whole file)
        or a llama-quantize preset name (``"Q3_K_M"``, any case).

        Raises:
            ConfigError: none of these (the message lists the presets).
        """
        raw = str(text).strip()
        if raw.upper() in PRESETS:
            return cls("preset", 0.0, raw, raw.upper())
        match = _SIZE_RE.match(raw)
        if not match:
            if re.match(r"^[A-Za-z0-9_]+$", raw) and "_" in raw:
                raise ConfigError(f"--budget {raw}: not a llama-quantize preset; use one of {', '.join(PRESETS)}")
            raise ConfigError(
                f"cannot read --budget {raw!r}; write a file size (7.5MB), bits per weight (3.5) or a preset"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit in ("", "bit", "bits", "bpw"):
            return cls("bits", number, raw)
        if unit not in _BYTE_UNITS:
            raise ConfigError(
                f"unknown unit {match.group(2)!r} in --budget {raw!r}; use B, kB, MB, GB, KiB, MiB or GiB"
            )
        return cls("bytes", number * _BYTE_UNITS[unit], raw)


def resolve_budget(budget: GgufBudget, m: GgufMeasurements, preset_bytes: Callable[[str], int] | None = None) -> int:
    """The file bytes a budget allows.

    Args:
        budget: the parsed budget.
        m: the measurements (total parameters for a bits budget).
        preset_bytes: ``preset -> file bytes`` (runs llama-quantize); needed for a preset budget.

    Returns:
        The largest file size in bytes.
    """
    if budget.kind == "bytes":
        return int(budget.value)
    if budget.kind == "bits":
        return int(budget.value * m.total_params / 8)
    if preset_bytes is None:
        raise PlanError(f"--budget {budget.text} names a preset; its size needs llama-quantize")
    return int(preset_bytes(str(budget.preset)))


@dataclass(frozen=True)
class Signals:
    """Per-tensor data-free signals the importance forms read (all optional).

    Attributes:
        fisher_error: ``[T, K]`` Fisher-weighted squared error (``1/2 sum F d^2``); needed by ``fisher*``.
        fisher_expert_error: name -> ``[K, E]`` the same per expert.
        alpha: name -> ``[E]`` (or ``[1]``) power-law alpha of each matrix in the tensor (NaN where no fit).
        gamma: exponent of the alpha factor.
        beta: exponent of the kurtosis factor.
    """

    fisher_error: np.ndarray | None = None
    fisher_expert_error: Mapping[str, np.ndarray] = field(default_factory=dict)
    alpha: Mapping[str, np.ndarray] = field(default_factory=dict)
    kurtosis: Mapping[str, np.ndarray] = field(default_factory=dict)
    gamma: float = 1.0
    beta: float = 1.0


def _factor(values: Mapping[str, np.ndarray], m: GgufMeasurements, exponent: float) -> dict[str, np.ndarray]:
    """``(v / median v) ** exponent`` per matrix of every tensor (1 where unknown)."""
    finite = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values.values()]) if values else np.array([])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    median = float(np.median(finite)) if finite.size else 1.0
    out = {}
    for w in m.weights:
        v = np.asarray(values.get(w.name, np.full(w.experts, np.nan)), dtype=float).reshape(-1)
        v = np.where(np.isfinite(v) & (v > 0), v, median)
        out[w.name] = (v / median) ** exponent
    return out


def importance_costs(m: GgufMeasurements, form: str, signals: Signals | None = None) -> np.ndarray:
    """The cost ``[T, K]`` of every tensor at every type under one importance form.

    Raises:
        ConfigError: unknown form; PlanError: the form needs a signal that was not measured.
    """
    signals = signals or Signals()
    if form not in IMPORTANCE_FORMS:
        raise ConfigError(f"importance {form!r} is unknown; use one of {', '.join(IMPORTANCE_FORMS)}")
    if form == "relative":
        return m.sq_error / np.maximum(m.sq_norm, 1e-30)[:, None]
    if form == "uniform":
        params = np.array([w.params for w in m.weights], dtype=np.float64)
        return m.sq_error / np.maximum(m.sq_norm, 1e-30)[:, None] * params[:, None]
    if form == "absolute":
        return m.sq_error.copy()
    if form.startswith("fisher") and signals.fisher_error is None:
        raise PlanError("the fisher importance needs the model's self-Fisher (alphaq.planning.self_fisher)")
    if form == "fisher":
        return np.asarray(signals.fisher_error, dtype=float).copy()
    base_total = m.sq_error if form in ("alpha", "kurtosis") else np.asarray(signals.fisher_error, dtype=float)
    base_expert = m.expert_sq_error if form in ("alpha", "kurtosis") else signals.fisher_expert_error
    values, exponent = (signals.kurtosis, signals.beta) if form == "kurtosis" else (signals.alpha, -signals.gamma)
    factors = _factor(values, m, exponent)
    cost = np.zeros_like(m.sq_error)
    for i, w in enumerate(m.weights):
        f = factors[w.name]
        if w.role == "expert" and w.name in base_expert and f.size == w.experts:
            cost[i] = np.asarray(base_expert[w.name]) @ f  # [K, E] @ [E]
        else:
            cost[i] = base_total[i] * float(f.mean())
    return cost


@dataclass(frozen=True)
class GgufAssignment:
    """The chosen type of every planned tensor.

    Attributes:
        types: GGUF name -> ggml type.
        file_bytes: the file's exact size with these types.
        capacity: the budget in bytes.
        objective: total cost.
        bound: proven lower bound of the cost (the solver's).
        status: the solver's status.
    """

    types: Mapping[str, str]
    file_bytes: int
    capacity: int
    objective: float
    bound: float
    status: str


def file_bytes(m: GgufMeasurements, choice: np.ndarray) -> int:
    """Exact size of the GGUF with type ``m.types[choice[t]]`` for every planned tensor."""
    chosen = m.nbytes[np.arange(len(m.weights)), choice]
    return int(m.fixed_bytes + padded(chosen, m.alignment).sum())


def allowed_types(m: GgufMeasurements, types: tuple[str, ...] | None = None) -> np.ndarray:
    """``[T, K]`` mask of the candidate types (all measured ones by default) that llama-quantize stores as asked
    (a row length that is not a multiple of a type's block makes it store another type: not offered)."""
    keep = set(types or m.types)
    unknown = keep - set(MODEL_TYPES)
    if unknown:
        raise ConfigError(f"unknown GGUF type(s) {', '.join(sorted(unknown))}; use {', '.join(MODEL_TYPES)}")
    asked = np.tile(np.array([t in keep for t in m.types]), (len(m.weights), 1))
    as_stored = np.array([[s == t for s, t in zip(row, m.types)] for row in m.stored_types], dtype=bool)
    return asked & as_stored


def solve_gguf(m: GgufMeasurements, cost: np.ndarray, capacity: int, mask: np.ndarray | None = None) -> GgufAssignment:
    """Cheapest types whose file fits ``capacity`` bytes (exact multiple-choice knapsack).

    Raises:
        PlanError: even the smallest allowed types exceed the budget (the message gives the smallest size).
    """
    from alphaq.planning.solver import solve_exact

    mask = allowed_types(m) if mask is None else mask
    weight = padded(m.nbytes, m.alignment).astype(np.float64)  # [T, K]
    room = capacity - m.fixed_bytes
    smallest = int(m.fixed_bytes + np.where(mask, weight, np.inf).min(axis=1).sum())
    if smallest > capacity:
        raise PlanError(
            f"the budget ({capacity:,} bytes) is below the smallest GGUF these types can make ({smallest:,} bytes: "
            "every tensor at its smallest type); raise --budget"
        )
    solution = solve_exact(np.asarray(cost, dtype=np.float64), weight, float(room), mask)
    choice = np.asarray(solution.choice)
    return GgufAssignment(
        types={w.name: m.types[int(k)] for w, k in zip(m.weights, choice)},
        file_bytes=file_bytes(m, choice),
        capacity=int(capacity),
        objective=float(solution.objective),
        bound=float(solution.bound),
        status=str(solution.status),
    )


def choice_of(m: GgufMeasurements, types: Mapping[str, str]) -> np.ndarray:
    """Column index per planned tensor of a ``name -> type`` mapping (e.g. a preset's file read back)."""
    col = {t: k for k, t in enumerate(m.types)}
    missing = [w.name for w in m.weights if types.get(w.name) not in col]
    if missing:
        raise PlanError(f"{missing[0]} has type {types.get(missing[0])}, not one of {', '.join(m.types)}")
    return np.array([col[types[w.name]] for w in m.weights])


__all__ = [
    "DEFAULT_IMPORTANCE",
    "IMPORTANCE_FORMS",
    "PRESETS",
    "GgufAssignment",
    "GgufBudget",
    "Signals",
    "allowed_types",
    "choice_of",
    "file_bytes",
    "importance_costs",
    "resolve_budget",
    "solve_gguf",
]
