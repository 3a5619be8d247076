"""How ``alphaq quantize`` executes a plan: :class:`QuantizeConfig` (the plan file, quantizer, device)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alphaq.errors import ConfigError
from alphaq.quantization.methods import check_method


@dataclass(frozen=True)
class QuantizeConfig:
    """Options of the quantize stage.

    Attributes:
        plan: the ``plan.json`` to execute (written by ``alphaq plan`` for the same checkpoint).
        method: quantizer (``rtn``, ``rtn_clip``, ``hqq``); ``None`` takes the plan's error-model quantizer.
        device: where to quantize (``cpu`` or ``cuda``).
        zero_points: ``float`` (the quantizer's own) or ``integer`` (rounded; the values a compressed-tensors
            export of the same plan holds).
    """

    plan: str | Path
    method: str | None = None
    device: str = "cpu"
    zero_points: str = "float"

    def __post_init__(self) -> None:
        if not str(self.plan):
            raise ConfigError("no plan given; pass the plan.json written by `alphaq plan`")
        if self.method is not None:
            check_method(self.method)
        if self.zero_points not in ("float", "integer"):
            raise ConfigError(f"zero_points must be float or integer, got {self.zero_points!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")


__all__ = ["QuantizeConfig"]
