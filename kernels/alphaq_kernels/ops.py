"""Public kernels: validate, then run Triton (CUDA tensors) or the plain-torch reference.

``backend="auto"`` runs the Triton kernel when the tensors are on a CUDA device and triton can be
imported, else the torch reference of :mod:`alphaq.kernels.reference`. ``backend="triton"`` forces
Triton: compiled on CUDA, the Triton interpreter on CPU tensors (slow; for tests). ``backend="torch"``
forces the reference. Both backends give the same results: packing and dequantization bit-exact,
the matmul within the tolerances of ``docs/kernels.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from alphaq.errors import ConfigError
from alphaq.quantization.layout import check_bits, check_group_size, num_groups, packed_row_bytes

if TYPE_CHECKING:
    import torch

Backend = Literal["auto", "triton", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "torch")
#: Largest finite float16 (the format's scales and zeros are float16).
FP16_MAX = 65504.0


def _float_dtypes() -> tuple[torch.dtype, ...]:
    import torch

    return (torch.float16, torch.bfloat16, torch.float32)


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """Whether ``backend`` runs the Triton kernel for tensors on ``tensors[0]``'s device.

    Raises:
        ConfigError: unknown backend, or ``"triton"`` without the triton package.
    """
    from alphaq.kernels.launch import triton_available

    if backend not in BACKENDS:
        raise ConfigError(f"unknown kernel backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return False
    available = triton_available()
    if backend == "triton":
        if not available:
            raise ConfigError("backend='triton' needs the triton package; install triton or use backend='torch'")
        return True
    return available and tensors[0].device.type == "cuda"


def _check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"tensors must be on one device, got {listed}; move them with .to(device)")


def check_weight(w: torch.Tensor) -> None:
    """Raise ValueError unless ``w`` is a non-empty finite 2-D float16/bfloat16/float32 matrix in fp16 range."""
    import torch

    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        got = f"shape {tuple(w.shape)}" if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(
            f"expected a 2-D weight tensor [out, in], got {got}; reshape 3-D expert tensors "
            f"to one [out, in] matrix per expert"
        )
    if w.dtype not in _float_dtypes():
        raise ValueError(f"expected a float16, bfloat16 or float32 weight, got {w.dtype}; convert it with .float()")
    if w.numel() == 0:
        raise ValueError(f"cannot quantize an empty weight of shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight contains NaN or Inf values; fix the checkpoint before quantizing")
    if float(w.abs().max()) > FP16_MAX:
        raise ValueError(
            f"weight has values beyond +-{FP16_MAX:g}, which the float16 scales and zeros of "
            f"the format cannot hold; keep this matrix unquantized"
        )


def check_quantized(
    packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, group_size: int, cols: int
) -> None:
    """Raise ValueError (or ConfigError for the format) unless the tensors form one quantized [R, cols] matrix."""
    import torch

    check_bits(bits)
    check_group_size(group_size)
    if isinstance(cols, bool) or not isinstance(cols, int) or cols <= 0:
        raise ValueError(f"cols={cols!r} must be a positive integer (the matrix's input features C)")
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
        got = (
            f"{packed.dtype} with shape {tuple(packed.shape)}"
            if isinstance(packed, torch.Tensor)
            else type(packed).__name__
        )
        raise ValueError(f"packed must be a 2-D uint8 tensor [R, ceil(C / 8) * bits], got {got}")
    rows, row_bytes = packed.shape[0], packed_row_bytes(cols, bits)
    if packed.shape[1] != row_bytes:
        raise ValueError(
            f"packed rows have {packed.shape[1]} bytes but {cols} values at {bits} bits need "
            f"{row_bytes}; pass the original column count and width"
        )
    groups = (rows, num_groups(cols, group_size))
    for name, tensor in (("scale", scale), ("zero", zero)):
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float16 or tuple(tensor.shape) != groups:
            got = f"{tensor.dtype} {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be float16 {groups} for group_size={group_size}, got {got}")
    _check_same_device(packed=packed, scale=scale, zero=zero)


def _row_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def quantize_pack(
    w: torch.Tensor, bits: int, group_size: int = 128, *, backend: Backend = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``w`` group-wise (min-max round-to-nearest) and pack the codes.

    Bit-exact with ``quantize_groupwise(w, QuantSpec(bits, group_size))`` followed by ``pack``.

    Args:
        w: weight [R, C], float16, bfloat16 or float32; any C >= 1 (a partial last group is allowed).
        bits: width, 1..8.
        group_size: columns per (scale, zero) pair, a positive multiple of 8.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (module docstring).

    Returns:
        (packed uint8 [R, ceil(C / 8) * bits], scale float16 [R, G], zero float16 [R, G]).

    Raises:
        ConfigError: unsupported bits or group size, or unknown backend.
        ValueError: ``w`` is not a finite 2-D float matrix within the float16 range.
    """
    check_bits(bits)
    check_group_size(group_size)
    check_weight(w)
    if not use_triton(backend, w):
        from alphaq.kernels import reference

        return reference.quantize_pack(w, bits, group_size)
    import torch

    from alphaq.kernels import launch

    packed, scale, zero = launch.quantize_pack(w, bits, group_size)
    if not bool(torch.isfinite(scale).all()):
        raise ValueError(
            "a group's value range exceeds what a float16 scale can hold; the weight has "
            "values beyond +-65504 (check the checkpoint, or keep this matrix unquantized)"
        )
    return packed, scale, zero


def unpack_dequantize(
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    cols: int,
    dtype: torch.dtype | None = None,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Unpack and dequantize: ``W[r, c] = (q[r, c] - zero[r, g]) * scale[r, g]`` in float32, then cast.

    Equal to ``dequantize_groupwise`` (exactly in float32; the same rounding of the float32 value for
    float16/bfloat16 output).

    Args:
        packed: uint8 [R, ceil(cols / 8) * bits].
        scale: float16 [R, G].
        zero: float16 [R, G].
        bits: width, 1..8.
        group_size: columns per group.
        cols: C, values per row.
        dtype: float16, bfloat16 or float32 (``None``: float32).
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        W [R, cols] of ``dtype``.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    check_quantized(packed, scale, zero, bits, group_size, cols)
    if dtype not in _float_dtypes():
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype}")
    if not use_triton(backend, packed) or packed.shape[0] == 0:
        from alphaq.kernels import reference

        return reference.unpack_dequantize(packed, scale, zero, bits, group_size, cols, dtype)
    from alphaq.kernels import launch

    return launch.unpack_dequantize(
        _row_contiguous(packed), _row_contiguous(scale), _row_contiguous(zero), bits, group_size, cols, dtype
    )


def dequant_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    cols: int,
    *,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Fused ``x @ W.T`` with W kept packed: W is dequantized in registers, never written to memory.

    Batches of at most 4 rows run a GEMV kernel (decode), larger ones tiles of ``tl.dot`` (prefill).

    Args:
        x: activations [..., cols], float16, bfloat16 or float32.
        packed: the quantized W [R, cols]: uint8 codes [R, ceil(cols / 8) * bits] (see :func:`unpack_dequantize`).
        scale: float16 [R, G].
        zero: float16 [R, G].
        bits: width, 1..8.
        group_size: columns per group.
        cols: C, values per row of W (the last dim of x).
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        y [..., R] of ``x.dtype``.
    """
    import torch

    check_quantized(packed, scale, zero, bits, group_size, cols)
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != cols:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be [..., {cols}] (the last dim is W's input features), got {got}")
    if x.dtype not in _float_dtypes():
        raise ValueError(f"x must be float16, bfloat16 or float32, got {x.dtype}")
    _check_same_device(x=x, packed=packed)
    lead, rows = x.shape[:-1], packed.shape[0]
    x2 = x.reshape(-1, cols)  # [M, C]
    if x2.shape[0] == 0 or rows == 0:
        return x.new_zeros((*lead, rows))
    if not use_triton(backend, x):
        from alphaq.kernels import reference

        y = reference.dequant_matmul(x2, packed, scale, zero, bits, group_size, cols)
    else:
        from alphaq.kernels import launch

        y = launch.dequant_matmul(
            x2, _row_contiguous(packed), _row_contiguous(scale), _row_contiguous(zero), bits, group_size, cols
        )
    return y.reshape(*lead, rows)
