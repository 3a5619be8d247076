"""How the evaluation measures: :class:`EvalOptions` (windows, device, dtype), shared by ``eval`` and ``compare``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alphaq.errors import ConfigError

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
    """

    max_windows: int | None = None
    context: int | None = None
    stride: int | None = None
    baseline: bool = True
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be cpu or cuda[:N], got {self.device!r}")
        for name, low in (("max_windows", 1), ("context", 2), ("stride", 1), ("batch_size", 1)):
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


__all__ = ["DTYPES", "EvalConfig", "EvalOptions"]
