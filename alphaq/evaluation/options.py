"""How the evaluation measures: :class:`EvalOptions` (windows, device, dtype), shared by ``eval`` and ``compare``."""

from __future__ import annotations

from dataclasses import dataclass

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


__all__ = ["DTYPES", "EvalOptions"]
