"""The quantizers by name: data-free ``rtn`` (min-max), ``rtn_clip`` (min-max with a clip search) and ``hqq``; calibrated ``gptq``.

``gptq`` needs the inputs of each matrix on calibration text (:mod:`alphaq.quantization.calibration`), so it is
only a method of ``alphaq quantize --method gptq --calibration-text FILE``; the data-free paths (the plan's measured
error model, :func:`quantize_dequantize`, simulation) refuse it.

The one place that maps a method name to its quantizer, above both :mod:`alphaq.quantization.primitives`
(group-wise RTN and dequantization) and :mod:`alphaq.quantization.hqq` (which builds on the primitives).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from alphaq.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from alphaq.quantization.layout import QuantSpec
    from alphaq.quantization.primitives import QuantizedTensor

#: The data-free quantizers (plan error models, ``alphaq quantize --method``, simulation).
METHODS: tuple[str, ...] = ("rtn", "rtn_clip", "hqq")
Method = Literal["rtn", "rtn_clip", "hqq"]
#: Quantizers that need calibration text (``alphaq quantize`` only, never the default).
CALIBRATED_METHODS: tuple[str, ...] = ("gptq",)
#: Every ``alphaq quantize --method``.
QUANTIZE_METHODS: tuple[str, ...] = METHODS + CALIBRATED_METHODS


def check_method(method: str, option: str = "--method") -> None:
    """Refuse an unknown quantizer name.

    Raises:
        ConfigError: ``method`` is not one of :data:`METHODS` (a calibrated one gets its own message).
    """
    if method in CALIBRATED_METHODS:
        raise ConfigError(
            f"{option} {method} is calibrated on text and cannot be used by the data-free paths (the "
            f"plan's measured error model, simulation); use {', '.join(METHODS)} here and "
            f"`alphaq quantize --method {method} --calibration-text FILE`"
        )
    if method not in METHODS:
        raise ConfigError(f"unknown quantization method {method!r}; use {option} with one of {', '.join(METHODS)}")


def quantize_with(w: torch.Tensor, spec: QuantSpec, method: Method = "rtn") -> QuantizedTensor:
    """Quantize ``w`` [R, C] with the named data-free quantizer.

    Args:
        w: weight [R, C].
        spec: width and group size.
        method: a name of :data:`METHODS`.

    Returns:
        The :class:`~alphaq.quantization.primitives.QuantizedTensor`.

    Raises:
        ConfigError: an unknown method.
    """
    from alphaq.quantization.hqq import quantize_hqq
    from alphaq.quantization.primitives import quantize_groupwise

    check_method(method)
    if method == "hqq":
        return quantize_hqq(w, spec)
    return quantize_groupwise(w, spec, clip_search=method == "rtn_clip")


def quantize_dequantize(
    w: torch.Tensor, spec: QuantSpec, *, method: Method = "rtn", dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Fake quantization: quantize ``w`` with ``method`` and dequantize it again.

    Args:
        w: weight [R, C].
        spec: width and group size.
        method: ``"rtn"`` (min-max), ``"rtn_clip"`` (min-max with clip search) or ``"hqq"``.
        dtype: output dtype; ``None`` keeps ``w.dtype``. Pass ``torch.float32`` for the exact values.

    Returns:
        Tensor [R, C] of the dequantized weight.
    """
    from alphaq.quantization.primitives import dequantize_groupwise

    return dequantize_groupwise(quantize_with(w, spec, method), dtype=w.dtype if dtype is None else dtype)


__all__ = [
    "CALIBRATED_METHODS",
    "METHODS",
    "QUANTIZE_METHODS",
    "Method",
    "check_method",
    "quantize_dequantize",
    "quantize_with",
]
