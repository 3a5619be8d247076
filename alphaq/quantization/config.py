"""How ``alphaq quantize`` executes a plan: :class:`QuantizeConfig` (the plan file, quantizer, device, backend)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alphaq.distributed.ray_backend import BACKENDS
from alphaq.errors import ConfigError
from alphaq.quantization.gptq import GptqOptions
from alphaq.quantization.methods import CALIBRATED_METHODS, QUANTIZE_METHODS

#: GPTQ's standard number of calibration windows.
DEFAULT_CALIBRATION_WINDOWS = 128


@dataclass(frozen=True)
class QuantizeConfig:
    """Options of the quantize stage: everything ``alphaq quantize`` takes besides the model and ``--out``.

    Attributes:
        plan: the ``plan.json`` to execute (written by ``alphaq plan`` for the same checkpoint).
        method: quantizer (``rtn``, ``rtn_clip``, ``hqq``, or ``gptq``, calibrated on ``calibration_text``);
            ``None`` takes the plan's error-model quantizer.
        device: where to quantize (``cpu`` or ``cuda``).
        zero_points: ``float`` (the quantizer's own) or ``integer`` (rounded; the values a compressed-tensors
            export of the same plan holds).
        calibration_text: ``gptq``: the text file its Hessians are measured on (required by it, refused by the
            other methods).
        calibration_windows: ``gptq``: windows of the model's context taken from the text (128, GPTQ's standard).
        gptq: ``gptq``: the protocol (dampening, block size); None: the paper's
            (:class:`alphaq.quantization.gptq.GptqOptions`).
        backend: ``local`` (this process) or ``ray`` (one task per matrix on a Ray cluster that sees the
            checkpoint at the same path; identical bytes).
        ray_address: ``ray``: the cluster's address (``ray://head:10001``); None: ``$RAY_ADDRESS``, else a Ray
            started on this machine for the run.
    """

    plan: str | Path
    method: str | None = None
    device: str = "cpu"
    zero_points: str = "float"
    calibration_text: str | Path | None = None
    calibration_windows: int = DEFAULT_CALIBRATION_WINDOWS
    gptq: GptqOptions | None = None
    backend: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not str(self.plan):
            raise ConfigError("no plan given; pass the plan.json written by `alphaq plan`")
        if self.method is not None and self.method not in QUANTIZE_METHODS:
            raise ConfigError(
                f"unknown quantization method {self.method!r}; use --method with one of {', '.join(QUANTIZE_METHODS)}"
            )
        if self.zero_points not in ("float", "integer"):
            raise ConfigError(f"zero_points must be float or integer, got {self.zero_points!r}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; use cpu or cuda")
        self._check_calibration()
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; use --backend local or --backend ray")
        if self.ray_address is not None and self.backend != "ray":
            raise ConfigError("--ray-address needs --backend ray; add it, or drop --ray-address")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ConfigError("--ray-address is empty; pass a cluster address such as ray://head:10001, or omit it")
        if self.backend == "ray" and self.method in CALIBRATED_METHODS:
            raise ConfigError(
                f"--backend ray does not run calibrated methods (--method {self.method}) yet; use --backend local"
            )

    def _check_calibration(self) -> None:
        calibrated = self.method in CALIBRATED_METHODS
        if self.calibration_text is not None and not str(self.calibration_text).strip():
            raise ConfigError("calibration_text is empty; pass the text file GPTQ is calibrated on")
        if calibrated and self.calibration_text is None:
            raise ConfigError(f"{self.method} is calibrated on text; pass --calibration-text FILE")
        if self.method is not None and not calibrated and self.calibration_text is not None:
            raise ConfigError(f"--calibration-text is used by --method gptq only, not {self.method}; drop it")
        windows = self.calibration_windows
        if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
            raise ConfigError(f"--calibration-windows {windows!r} must be a positive integer (GPTQ's standard: 128)")
        if self.gptq is not None and not isinstance(self.gptq, GptqOptions):
            raise ConfigError(f"gptq={self.gptq!r} must be an alphaq.quantization.gptq.GptqOptions")
        if self.gptq is not None and self.method is not None and not calibrated:
            raise ConfigError(f"gptq options are used by method gptq only, not {self.method}; drop them")


__all__ = ["DEFAULT_CALIBRATION_WINDOWS", "QuantizeConfig"]
