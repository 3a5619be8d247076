"""How the evaluation measures: :class:`EvalOptions` (windows, device, dtype) and what ``eval`` (:class:`EvalConfig`)
and ``compare`` (:class:`CompareConfig`) evaluate."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from alphaq.errors import ConfigError
from alphaq.evaluation.bootstrap import DEFAULT_RESAMPLES

if TYPE_CHECKING:
    from alphaq.planning.planner import PlanConfig

#: Allocator entries of ``compare``; ``frequency`` expands to its in- and out-of-domain calibrations.
FREQUENCY_ENTRIES = {"frequency-in": "in", "frequency-out": "out"}
#: dtypes of the unquantized weights and activations.
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EvalOptions:
    """How ``alphaq eval`` measures.

    Attributes:
        max_windows: evaluate only the first this many windows (None: the whole text).
        context: window length (None: the model's context, at most 2048).
        stride: window step (None: ``context``, the standard non-overlapping protocol).
        baseline: also evaluate the original model on the same windows (quantized / simulated sources).
        batch_size: windows per forward pass.
        device: where the models run (``cpu``, ``cuda``, ``cuda:1``).
        dtype: dtype of the unquantized weights and activations: ``float32``, ``bfloat16`` or ``float16``.
        kld_windows: KL divergence from the original on the first this many evaluated windows (needs the baseline;
            None: every window). The original's log-probabilities are kept for them (float16, spilled to a
            temporary file when large: ``windows x (context - 1) x vocab x 2`` bytes), as llama.cpp keeps its
            base logits; 128 windows is the usual size of a llama.cpp KLD run.
    """

    max_windows: int | None = None
    context: int | None = None
    stride: int | None = None
    baseline: bool = True
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    kld_windows: int | None = 128

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be cpu or cuda[:N], got {self.device!r}")
        for name, low in (("max_windows", 1), ("context", 2), ("stride", 1), ("batch_size", 1), ("kld_windows", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class EvalConfig:
    """What ``alphaq eval`` evaluates and how.

    Attributes:
        quantized: a quantized checkpoint folder (``alphaq quantize --out``); evaluated through ``load_quantized``.
        plan: a ``plan.json`` applied to the original weights by simulated quantization instead.
        text_file: evaluation text (``None``: WikiText-2 test from the data folder).
        options: :class:`EvalOptions`.

    With neither ``quantized`` nor ``plan`` the original model is evaluated.
    """

    quantized: str | Path | None = None
    plan: str | Path | None = None
    text_file: str | Path | None = None
    options: EvalOptions = field(default_factory=EvalOptions)

    def __post_init__(self) -> None:
        if self.quantized is not None and self.plan is not None:
            raise ConfigError("pass either --quantized or --plan, not both")


def expand_allocators(allocators: Sequence[str]) -> list[str]:
    """Entries of the comparison: ``frequency`` becomes ``frequency-in`` and ``frequency-out``.

    Raises:
        ConfigError: an unknown allocator name.
    """
    from alphaq.planning.allocators import ALLOCATORS

    out: list[str] = []
    for name in (a.strip() for a in allocators if a.strip()):
        names = list(FREQUENCY_ENTRIES) if name == "frequency" else [name]
        for entry in names:
            if entry not in ALLOCATORS and entry not in FREQUENCY_ENTRIES:
                raise ConfigError(
                    f"unknown allocator {entry!r}; use one of {', '.join([*ALLOCATORS, *FREQUENCY_ENTRIES])}"
                )
            if entry not in out:
                out.append(entry)
    if not out:
        raise ConfigError("no allocator given; pass --allocators alphaq,uniform,...")
    return out


@dataclass(frozen=True)
class CompareConfig:
    """What ``alphaq compare`` plans and measures: one plan per (budget, allocator[, seed]), each applied by
    simulated quantization and scored on the same windows.

    Attributes:
        budgets: budgets (``("2.5", "3")`` or text ``"2.5,3"``; average bits or sizes).
        allocators: allocator names (``frequency`` = ``frequency-in`` + ``frequency-out``), tuple or comma text.
        plan: base :class:`~alphaq.planning.planner.PlanConfig` (widths, group size, granularity, gamma, quantizer;
            its budget, allocator and seed are replaced per plan); None: the defaults.
        text_file: evaluation text (None: WikiText-2 test from the data folder).
        calib_in: in-domain calibration text of ``frequency-in`` (None: WikiText-2 valid).
        calib_out: out-of-domain calibration text of ``frequency-out`` (None: Tiny Shakespeare).
        seeds: seeds of the ``random`` allocator (tuple or comma text; one plan per seed and budget).
        max_windows: evaluate the first this many windows (None: all).
        context: window length (None: the model's context, at most 2048).
        device: where the model runs (``cpu``, ``cuda[:N]``).
        dtype: dense weights and activations (``float32``, ``bfloat16``, ``float16``).
        resamples: paired-bootstrap resamples of the intervals (:mod:`alphaq.evaluation.bootstrap`).
        level: coverage of the intervals.
        inspect_dir: reuse this inspect run of the same checkpoint (None: the one in the output folder, else a
            fresh experts-only inspect saved there).
        kld_windows: KL divergence from the original on the first this many windows (None: every window); see
            :class:`EvalOptions`.
    """

    budgets: tuple[str, ...] | str = ("2.5", "3", "3.5")
    allocators: tuple[str, ...] | str = ("alphaq", "uniform", "frequency", "random")
    plan: PlanConfig | None = None
    text_file: str | Path | None = None
    calib_in: str | Path | None = None
    calib_out: str | Path | None = None
    seeds: tuple[int, ...] | str = (0, 1, 2)
    max_windows: int | None = None
    context: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    resamples: int = DEFAULT_RESAMPLES
    level: float = 0.95
    inspect_dir: str | Path | None = None
    kld_windows: int | None = 128

    def __post_init__(self) -> None:
        from alphaq.planning.budget import Budget

        budgets = _items(self.budgets, "budgets")
        if not budgets:
            raise ConfigError("no budget given; pass --budgets 2.5,3,3.5")
        for budget in budgets:
            Budget.parse(budget)
        object.__setattr__(self, "budgets", budgets)
        allocators = _items(self.allocators, "allocators")
        expand_allocators(allocators)  # raises on an unknown name or none
        object.__setattr__(self, "allocators", allocators)
        try:
            seeds = tuple(sorted({int(seed) for seed in _items(self.seeds, "seeds")}))
        except ValueError:
            raise ConfigError(f"--seeds {self.seeds!r} must be integers, e.g. 0,1,2") from None
        if not seeds:
            raise ConfigError("no seed given for the random allocator; pass --seeds 0,1,2")
        object.__setattr__(self, "seeds", seeds)
        EvalOptions(
            max_windows=self.max_windows,
            context=self.context,
            device=self.device,
            dtype=self.dtype,
            kld_windows=self.kld_windows,
        )
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 1:
            raise ConfigError(f"--resamples {self.resamples!r} must be a positive integer (default 2000)")
        if not (isinstance(self.level, float) and math.isfinite(self.level) and 0.0 < self.level < 1.0):
            raise ConfigError(f"level={self.level!r} must be a coverage in (0, 1), e.g. 0.95")
        from alphaq.planning.planner import PlanConfig

        if self.plan is not None and not isinstance(self.plan, PlanConfig):
            raise ConfigError(f"plan={self.plan!r} must be an alphaq.PlanConfig or None")
        for name in ("text_file", "calib_in", "calib_out", "inspect_dir"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, Path)) or not str(value).strip():
                    raise ConfigError(f"{name}={value!r} must be a file or folder path, or None")
                object.__setattr__(self, name, Path(value))

    @property
    def options(self) -> EvalOptions:
        """The :class:`EvalOptions` of the measurement (windows, context, device, dtype)."""
        return EvalOptions(
            max_windows=self.max_windows,
            context=self.context,
            device=self.device,
            dtype=self.dtype,
            kld_windows=self.kld_windows,
        )


def _items(value: Sequence[object] | str, option: str) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", 3]`` -> ``("a", "3")`` (empty items dropped).

    Raises:
        ConfigError: neither text nor a list.
    """
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = [str(item) for item in value]
    else:
        raise ConfigError(f"--{option} {value!r} must be a list or comma-separated text")
    return tuple(part.strip() for part in parts if part.strip())


__all__ = ["DTYPES", "FREQUENCY_ENTRIES", "CompareConfig", "EvalConfig", "EvalOptions", "expand_allocators"]
