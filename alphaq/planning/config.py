"""Options of ``alphaq plan``: :class:`PlanConfig`, a frozen dataclass validated in ``__post_init__``.

Re-exported by :mod:`alphaq.planning.planner` (and ``alphaq.PlanConfig``); pure, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alphaq.errors import ConfigError
from alphaq.export.ggml_types import GGUF_WIDTHS, check_gguf_widths
from alphaq.planning.allocators import ALLOCATORS, SolverName
from alphaq.planning.budget import DEFAULT_GROUP_SIZE, DEFAULT_WIDTHS, Bounds, Budget, parse_widths
from alphaq.planning.costs import DEFAULT_MAX_ROWS, ERROR_MODELS, ErrorModel
from alphaq.planning.defaults import DEFAULT_GAMMA
from alphaq.planning.units import GRANULARITIES, Granularity, KeepPolicy
from alphaq.quantization.layout import check_group_size
from alphaq.quantization.methods import CALIBRATED_METHODS, METHODS, check_method

#: Formats a plan can be costed for (``--target``).
TARGETS: tuple[str, ...] = ("alphaq", "gguf")
#: Budget of a plan when none is given (the CLI's default too).
DEFAULT_BUDGET = "3.5"
#: Allocators of the predicted-error sweep when none are given.
DEFAULT_SWEEP_ALLOCATORS: tuple[str, ...] = ("alphaq", "uniform", "random")


@dataclass(frozen=True)
class PlanConfig:
    """Options of ``alphaq plan``.

    Attributes:
        budget: ``Budget`` or text: average payload bits (``"3.5"``) or a size (``"12GB"``); with the ``gguf``
            target, the GGUF's real bits per expert weight or bytes.
        widths: candidate widths (subset of 1..8), text ``"2,3,4,8"`` accepted; None: 2,3,4,8, or
            2,3,4,5,6,8 for the ``gguf`` target.
        group_size: columns per scale/zero group (positive multiple of 8).
        granularity: ``expert``, ``matrix`` or ``layer`` (see :mod:`alphaq.planning.units`); None: ``expert``, or
            ``layer`` for the ``gguf`` target (the only one it takes).
        error_model: ``measured`` or ``analytic`` (see :mod:`alphaq.planning.costs`).
        gamma: alpha importance exponent, default 16 on evidence (``bench/gamma_sweep.py``, docs/results.md): with
            gamma 1 the exact optimum is the uniform plan at every budget equal to a candidate width, so alpha does
            nothing there; gamma 16 differs from uniform at every budget and had the lowest total perplexity
            increase over 2.5/3/3.5/4 bits on the bundled model (the paper's ablation: 10-20 on Qwen/DeepSeek).
        allocator: a key of :data:`alphaq.planning.allocators.ALLOCATORS`.
        min_bits: ``"2"``, ``"0:4"``, ``"2,0-1:4"``: global and per-layer lower bounds.
        max_bits: same form, upper bounds.
        keep: widths of the matrices outside the budget, ``KeepPolicy`` or text ``"attention=16,shared=8"``.
        solver: ``exact``, ``lagrangian`` or ``auto`` (exact unless the problem has millions of options).
        time_limit: seconds the exact solver may search.
        seed: seed of the ``random`` allocator.
        quant_method: quantizer the ``measured`` model uses (``rtn``, ``rtn_clip``, ``hqq``).
        max_rows: rows measured per matrix (evenly spaced) by the ``measured`` model.
        target: ``alphaq`` (the packed checkpoint: bytes of alphaq's layout) or ``gguf`` (a whole-model llama.cpp
            plan: one type per GGUF tensor, attention, experts, shared experts, embedding and head; widths
            2,3,4,5,6,8 are Q2_K..Q6_K and Q8_0, F16 where it pays; bytes and errors measured with llama-quantize;
            the budget is the GGUF file: ``"7.5MB"``, bits per weight of the whole file ``"3.5"``, or a
            llama-quantize preset ``"Q3_K_M"``; see :mod:`alphaq.planning.gguf_run`).
        importance: ``gguf`` target only: how each tensor's error is weighted (:data:`alphaq.planning.gguf_model.
            IMPORTANCE_FORMS`); ``fisher`` (default, chosen on held-out text) is the model's self-Fisher, ``alpha``
            the AlphaQ principle.
        fisher_sequences: sequences the model writes for its self-Fisher (``gguf`` target, ``fisher*`` importances).

        The plan stage's inputs (used by :func:`alphaq.plan` / :func:`alphaq.planning.run.run_plan`; they
        change what the stage reads and writes, not the allocation, and are not recorded in the plan's options):

        sweep_budgets: budgets of the predicted-error sweep written to ``sweep.csv`` (``("2", "3")`` or text
            ``"2,3"``; empty: no sweep).
        sweep_allocators: allocators compared in the sweep (``("alphaq", "uniform", "random")``).
        calibration_text: text file of the ``frequency`` allocator's routing counts (the only allocator that
            needs data).
        inspect_dir: take the details from this inspect run (None: the run folder's, if of the same model).
        pattern_file: JSON tensor patterns for an architecture the table does not know.
    """

    budget: Budget | str | float = DEFAULT_BUDGET
    widths: tuple[int, ...] | str | None = None
    group_size: int = DEFAULT_GROUP_SIZE
    granularity: Granularity | None = None
    error_model: ErrorModel = "measured"
    gamma: float = DEFAULT_GAMMA
    allocator: str = "alphaq"
    min_bits: str | int | None = None
    max_bits: str | int | None = None
    keep: KeepPolicy | str | None = field(default_factory=KeepPolicy)
    solver: SolverName = "auto"
    time_limit: float = 60.0
    seed: int = 0
    quant_method: str = "rtn"
    max_rows: int = DEFAULT_MAX_ROWS
    target: str = "alphaq"
    sweep_budgets: tuple[str, ...] | str = ()
    sweep_allocators: tuple[str, ...] | str = DEFAULT_SWEEP_ALLOCATORS
    calibration_text: str | Path | None = None
    inspect_dir: str | Path | None = None
    pattern_file: str | Path | None = None
    importance: str = "fisher"
    fisher_sequences: int = 64

    def __post_init__(self) -> None:
        from alphaq.planning.gguf_model import IMPORTANCE_FORMS, GgufBudget

        self._check_stage_inputs()
        if self.target not in TARGETS:
            raise ConfigError(f"--target {self.target!r} is unknown; use one of {', '.join(TARGETS)}")
        gguf = self.target == "gguf"
        if gguf:
            budget = self.budget.text if isinstance(self.budget, (Budget, GgufBudget)) else self.budget
            object.__setattr__(self, "budget", GgufBudget.parse(budget))
        else:
            object.__setattr__(self, "budget", Budget.parse(self.budget))
        if self.importance not in IMPORTANCE_FORMS:
            raise ConfigError(f"--importance {self.importance!r} is unknown; use one of {', '.join(IMPORTANCE_FORMS)}")
        if (
            isinstance(self.fisher_sequences, bool)
            or not isinstance(self.fisher_sequences, int)
            or self.fisher_sequences < 1
        ):
            raise ConfigError(f"fisher_sequences={self.fisher_sequences!r} must be a positive integer (default 64)")
        default = GGUF_WIDTHS if gguf else DEFAULT_WIDTHS
        object.__setattr__(self, "widths", parse_widths(default if self.widths is None else self.widths))
        if gguf:
            check_gguf_widths(self.widths)  # type: ignore[arg-type]
            if self.granularity not in (None, "layer"):
                raise ConfigError(
                    f"--target gguf plans one type per (layer, projection): GGUF stores a layer's experts "
                    f"as one tensor with one type, so --granularity {self.granularity} cannot be kept; "
                    "drop --granularity or pass --granularity layer"
                )
        if self.granularity is None:
            object.__setattr__(self, "granularity", "layer" if gguf else "expert")
        if not isinstance(self.keep, KeepPolicy):
            object.__setattr__(self, "keep", KeepPolicy.parse(self.keep))
        check_group_size(self.group_size)
        self.bounds  # noqa: B018 - validates min/max bits
        checks = (
            (self.granularity, GRANULARITIES, "--granularity"),
            (self.error_model, ERROR_MODELS, "--error-model"),
            (self.allocator, tuple(ALLOCATORS), "--allocator"),
            (self.solver, ("exact", "lagrangian", "auto"), "--solver"),
            (self.quant_method, METHODS, "--method"),
        )
        if self.quant_method in CALIBRATED_METHODS:  # gptq: a data-free error model cannot use it
            check_method(self.quant_method, "--method")
        for value, allowed, option in checks:
            if value not in allowed:
                raise ConfigError(f"{option} {value!r} is unknown; use one of {', '.join(allowed)}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ConfigError(f"--gamma {self.gamma} must be a finite number >= 0 (default 16, 0 = ignore alpha)")
        if not self.time_limit > 0:
            raise ConfigError(f"--time-limit {self.time_limit} must be positive seconds")
        if self.max_rows < 1:
            raise ConfigError(f"max_rows={self.max_rows} must be >= 1")

    @property
    def bounds(self) -> Bounds:
        """The parsed ``min_bits`` / ``max_bits``."""
        return Bounds.parse(self.min_bits, self.max_bits)

    def _check_stage_inputs(self) -> None:
        """Normalise the stage inputs: comma text -> tuples of names, paths -> :class:`Path`."""
        budgets = _names(self.sweep_budgets, "sweep_budgets")
        for text in budgets:
            Budget.parse(text)  # raises with the form a budget takes
        object.__setattr__(self, "sweep_budgets", budgets)
        allocators = _names(self.sweep_allocators, "sweep_allocators")
        unknown = [name for name in allocators if name not in ALLOCATORS]
        if unknown:
            raise ConfigError(f"--sweep-allocators {unknown[0]!r} is unknown; use some of {', '.join(ALLOCATORS)}")
        if budgets and not allocators:
            raise ConfigError("sweep_allocators is empty; name the allocators of the sweep, e.g. alphaq,uniform")
        object.__setattr__(self, "sweep_allocators", allocators)
        for name in ("calibration_text", "inspect_dir", "pattern_file"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (str, Path)) or not str(value).strip():
                raise ConfigError(f"{name}={value!r} must be a file or folder path, or None")
            object.__setattr__(self, name, Path(value))


def _names(value: Sequence[str | float] | str, option: str) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", 3]`` -> ``("a", "3")``.

    Raises:
        ConfigError: neither text nor a sequence.
    """
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{option}={value!r} must be a list of names or comma-separated text")
    return tuple(str(item).strip() for item in value)
