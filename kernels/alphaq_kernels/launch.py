"""Host side of the Triton kernels: load them in the right mode, plan tiles and grids, launch.

Inputs are validated by :mod:`alphaq.kernels.ops`; the functions here trust them. Triton is imported
only inside functions. CUDA tensors run the compiled kernels (autotuned over a few configurations when
``autotune=True``); CPU tensors run them in the Triton interpreter with one configuration, since
autotuning needs a GPU. Each kernel has a ``plan_*`` function (a :class:`Launch`: kernel, arguments,
constants, grid) used by the ``run`` path and by :mod:`alphaq.kernels.aot`. See ``docs/kernels.md``.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from alphaq.kernels import configs
from alphaq.kernels.configs import DotConfig, GemvConfig
from alphaq.kernels.tiling import RowGeometry, UnitLayout, next_power_of_2, row_geometry, split_k, unit_layout
from alphaq.quantization.layout import packed_row_bytes

if TYPE_CHECKING:
    import torch

#: Largest batch handled by the GEMV (decode) kernel; larger batches use the tl.dot kernel.
GEMV_MAX_M = 4

_JIT_SOURCE = Path(__file__).with_name("_triton_jit.py")
_MODULES: dict[bool, ModuleType] = {}
_TUNERS: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()

Grid = Callable[[dict[str, Any]], tuple[int, ...]]


def triton_available() -> bool:
    """True when triton can be imported (it may still lack a GPU: then only the interpreter runs)."""
    return importlib.util.find_spec("triton") is not None


def jit_module(interpret: bool) -> ModuleType:
    """The kernels compiled for a GPU (``interpret=False``) or run by the Triton interpreter.

    ``triton.jit`` fixes the mode when a function is decorated, from ``TRITON_INTERPRET``; this loads
    ``_triton_jit.py`` once per mode with that knob set for the load only, so the mode does not
    depend on the environment at the time triton or alphaq were first imported.
    """
    with _LOCK:
        if interpret not in _MODULES:
            import triton

            name = f"alphaq.kernels._triton_jit_{'interpreted' if interpret else 'compiled'}"
            spec = importlib.util.spec_from_file_location(name, _JIT_SOURCE)
            if spec is None or spec.loader is None:  # pragma: no cover - the file ships with the package
                raise ImportError(f"cannot load the Triton kernels from {_JIT_SOURCE}")
            module = importlib.util.module_from_spec(spec)
            with triton.knobs.runtime.scope():
                triton.knobs.runtime.interpret = interpret
                spec.loader.exec_module(module)
            _MODULES[interpret] = module
        return _MODULES[interpret]


@dataclass(frozen=True)
class Launch:
    """One planned kernel launch.

    Attributes:
        kernel: name of the kernel in the module of :func:`jit_module`.
        args: positional arguments (tensors and ints).
        constexprs: compile-time constants that do not depend on the configuration.
        meta: the configuration's compile-time constants (each candidate's own when autotuned).
        grid: ``meta -> grid``.
        num_warps: warps per program (ignored by the interpreter).
        num_stages: pipelining depth (ignored by the interpreter).
        tune: ``(kind, layout, block_m)`` of this launch's autotuner, or None when not autotuned.
        options: other compile options (``enable_fp_fusion``).
    """

    kernel: str
    args: tuple[Any, ...]
    constexprs: dict[str, Any]
    meta: dict[str, Any]
    grid: Grid
    num_warps: int = 4
    num_stages: int = 3
    tune: tuple[Any, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)


def run(launch: Launch, interpret: bool, autotune: bool = False) -> None:
    """Launch a planned kernel: interpreted, compiled with its configuration, or autotuned (CUDA)."""
    kernel = getattr(jit_module(interpret), launch.kernel)
    if interpret:
        kernel[launch.grid(launch.meta)](*launch.args, **launch.meta, **launch.constexprs)
    elif autotune and launch.tune is not None:
        _tuner(*launch.tune, kernel)[launch.grid](*launch.args, **launch.constexprs, **launch.options)
    else:
        kernel[launch.grid(launch.meta)](
            *launch.args,
            **launch.meta,
            **launch.constexprs,
            **launch.options,
            num_warps=launch.num_warps,
            num_stages=launch.num_stages,
        )


def _tuner(kind: str, layout: UnitLayout, block_m: int, kernel: Any) -> Any:
    """The autotuned wrapper of ``kernel`` for one layout (the candidates carry its tile constants)."""
    import triton

    key = (kind, layout, block_m)
    with _LOCK:
        if key not in _TUNERS:
            if kind == "gemv":
                candidates = [
                    triton.Config(configs.gemv_meta(layout, c), num_warps=c.num_warps, num_stages=c.num_stages)
                    for c in configs.GEMV_AUTOTUNE
                ]
                keys = ["R", "C", "M", "SPLIT_K"]
            else:
                candidates = [
                    triton.Config(configs.dot_meta(layout, c, block_m), num_warps=c.num_warps, num_stages=c.num_stages)
                    for c in configs.DOT_AUTOTUNE
                ]
                keys = ["R", "C", "SPLIT_K", "DOT_KIND"]  # M: bucketed by block_m
            _TUNERS[key] = triton.autotune(configs=candidates, key=keys)(kernel)
        return _TUNERS[key]


def _writer_args(layout: UnitLayout, geo: RowGeometry) -> dict[str, Any]:
    """Constants of the quantize kernel (a ``"bytes"`` layout)."""
    return {
        "BITS": layout.bits,
        "GROUP_SIZE": layout.group_size,
        "UNIT_BYTES": layout.unit_bytes,
        "LOAD_BYTES": layout.load_bytes,
        "UNIT_VALUES": layout.unit_values,
        "WIDE": layout.wide_word,
        "BYTE_MASK": geo.byte_mask,
    }


def _reader_layout(packed: torch.Tensor, bits: int, group_size: int, cols: int) -> tuple[UnitLayout, RowGeometry]:
    """The unit layout of the kernels that read ``packed``: int32 loads where its rows allow them."""
    aligned = packed_row_bytes(cols, bits) % 4 == 0 and packed.stride(0) % 4 == 0 and packed.data_ptr() % 4 == 0
    layout = unit_layout(bits, group_size, word_aligned=aligned)
    return layout, row_geometry(cols, layout)


def _reader_args(layout: UnitLayout, geo: RowGeometry) -> dict[str, Any]:
    """Constants of the kernels that read packed codes."""
    return {
        "BITS": layout.bits,
        "GROUP_SIZE": layout.group_size,
        "UNIT_BYTES": layout.unit_bytes,
        "UNIT_VALUES": layout.unit_values,
        "WIDE": layout.wide_word,
        "BYTE_MASK": geo.byte_mask,
        "SOURCE": layout.source_index,
    }


def _store_dtype(dtype: torch.dtype, interpret: bool) -> torch.dtype:
    """The dtype a kernel writes. The interpreter rounds float32 -> bfloat16 wrongly (it truncates, or
    rounds half up without carry), so there the kernel writes float32 and torch rounds."""
    import torch

    return torch.float32 if interpret and dtype == torch.bfloat16 else dtype


def _sm_count(device: torch.device) -> int:
    import torch

    return int(torch.cuda.get_device_properties(device).multi_processor_count)


def plan_quantize_pack(
    w: torch.Tensor, bits: int, group_size: int, interpret: bool, block_r: int | None = None
) -> tuple[Launch, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Plan the quantize-and-pack kernel (one program per BLOCK_R rows and group).

    Returns:
        The launch and its outputs (packed, scale, zero), allocated here.
    """
    import torch

    layout = unit_layout(bits, group_size)
    rows, cols = w.shape
    geo = row_geometry(cols, layout)
    packed = torch.empty((rows, geo.row_bytes), dtype=torch.uint8, device=w.device)
    scale = torch.empty((rows, geo.groups), dtype=torch.float16, device=w.device)
    zero = torch.empty((rows, geo.groups), dtype=torch.float16, device=w.device)
    units_p2 = next_power_of_2(layout.units_per_group)
    if block_r is None:
        block_r = max(1, min(64 if interpret else 16, 4096 // (units_p2 * layout.unit_values)))
    groups = geo.groups
    launch = Launch(
        kernel="quantize_pack_kernel",
        args=(
            w,
            packed,
            scale,
            zero,
            rows,
            cols,
            geo.groups,
            geo.row_bytes,
            w.stride(0),
            w.stride(1),
            packed.stride(0),
            scale.stride(0),
            zero.stride(0),
        ),
        constexprs={"UNITS_PER_GROUP": layout.units_per_group, "UNITS_P2": units_p2, **_writer_args(layout, geo)},
        meta={"BLOCK_R": block_r},
        grid=lambda meta: (-(-rows // meta["BLOCK_R"]), groups),
        options={"enable_fp_fusion": False},
    )  # bit-exact rounding: no fused multiply-adds
    return launch, (packed, scale, zero)


def quantize_pack(
    w: torch.Tensor, bits: int, group_size: int, block_r: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the quantize-and-pack kernel.

    Returns:
        (packed uint8 [R, ceil(C / 8) * bits], scale float16 [R, G], zero float16 [R, G]).
    """
    interpret = w.device.type != "cuda"
    launch, outputs = plan_quantize_pack(w, bits, group_size, interpret, block_r)
    run(launch, interpret)
    return outputs


def plan_unpack_dequantize(
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    cols: int,
    dtype: torch.dtype,
    interpret: bool,
    block_r: int | None = None,
    values_per_tile: int = 512,
) -> tuple[Launch, torch.Tensor]:
    """Plan the unpack-and-dequantize kernel (one program per [BLOCK_R, BLOCK_U units] tile).

    Returns:
        The launch and its output W [R, cols], allocated here.
    """
    import torch

    layout, geo = _reader_layout(packed, bits, group_size, cols)
    rows = packed.shape[0]
    out = torch.empty((rows, cols), dtype=_store_dtype(dtype, interpret), device=packed.device)
    block_u = max(1, next_power_of_2(values_per_tile // layout.unit_values + 1) // 2)
    if block_r is None:
        block_r = 64 if interpret else 16
    units = geo.units
    launch = Launch(
        kernel="unpack_dequantize_kernel",
        args=(
            packed,
            scale,
            zero,
            out,
            rows,
            cols,
            geo.groups,
            geo.row_bytes,
            geo.units,
            packed.stride(0),
            scale.stride(0),
            zero.stride(0),
            out.stride(0),
        ),
        constexprs=_reader_args(layout, geo),
        meta={"BLOCK_R": block_r, "BLOCK_U": block_u},
        grid=lambda meta: (-(-rows // meta["BLOCK_R"]), -(-units // meta["BLOCK_U"])),
        options={"enable_fp_fusion": False},
    )
    return launch, out


def unpack_dequantize(
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    cols: int,
    dtype: torch.dtype,
    block_r: int | None = None,
    values_per_tile: int = 512,
) -> torch.Tensor:
    """Run the unpack-and-dequantize kernel; returns W [R, cols] of ``dtype``."""
    interpret = packed.device.type != "cuda"
    launch, out = plan_unpack_dequantize(
        packed, scale, zero, bits, group_size, cols, dtype, interpret, block_r, values_per_tile
    )
    run(launch, interpret)
    return out.to(dtype)


def plan_dequant_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    cols: int,
    interpret: bool,
    *,
    sm_count: int | None = None,
    splits: int | None = None,
    gemv_config: GemvConfig | None = None,
    dot_config: DotConfig | None = None,
    use_gemv: bool | None = None,
) -> tuple[Launch, torch.Tensor]:
    """Plan the fused matmul (arguments as :func:`dequant_matmul`; ``sm_count`` for a GPU-less plan).

    Returns:
        The launch and its output buffer: y [M, R] when there is one split along C, else float32
        partial sums [splits, M, R].
    """
    import torch

    layout, geo = _reader_layout(packed, bits, group_size, cols)
    m_rows, rows = x.shape[0], packed.shape[0]
    gemv = m_rows <= GEMV_MAX_M if use_gemv is None else use_gemv
    if gemv and m_rows > GEMV_MAX_M:
        raise ValueError(f"the GEMV kernel handles at most {GEMV_MAX_M} rows of x, got {m_rows}")
    config: GemvConfig | DotConfig
    if gemv:
        config = gemv_config or (configs.GEMV_CPU if interpret else configs.default_gemv_config(bits, m_rows))
        meta = configs.gemv_meta(layout, config, cols)
        block_m, programs, tile_units = 1, -(-rows // meta["BLOCK_R"]), meta["GPT"] * meta["UPGT"]
    else:
        config = dot_config or (
            configs.DOT_CPU if interpret else configs.default_dot_config(layout.source, x.dtype == torch.float32)
        )
        block_m = min(64, max(16, next_power_of_2(m_rows)))
        meta = configs.dot_meta(layout, config, block_m, cols)
        programs, tile_units = -(-m_rows // block_m) * -(-rows // meta["BLOCK_N"]), meta["BLOCK_U"]
    if splits is None:
        splits = 1 if interpret else split_k(programs, -(-geo.units // tile_units), sm_count or _sm_count(x.device))
    if splits == 1:
        out = torch.empty((m_rows, rows), dtype=_store_dtype(x.dtype, interpret), device=x.device)
    else:
        out = torch.empty((splits, m_rows, rows), dtype=torch.float32, device=x.device)
    args = (
        (x, packed, scale, zero, out)
        + (() if gemv else (m_rows,))
        + (
            rows,
            cols,
            geo.groups,
            geo.row_bytes,
            geo.units,
            splits,
            x.stride(0),
            x.stride(1),
            packed.stride(0),
            scale.stride(0),
            zero.stride(0),
            out.stride(0) if splits > 1 else 0,
            out.stride(-2),
        )
    )
    constexprs = _reader_args(layout, geo)
    n_splits = splits
    grid: Grid
    if gemv:
        constexprs["M"] = m_rows
        grid = lambda meta_: (-(-rows // meta_["BLOCK_R"]), n_splits)  # noqa: E731
    else:
        dot_kind = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}[x.dtype]
        constexprs["DOT_KIND"] = 2 if interpret and dot_kind == 1 else dot_kind  # bf16 tl.dot: wrong if interpreted
        grid = lambda meta_: (-(-m_rows // meta_["BLOCK_M"]) * -(-rows // meta_["BLOCK_N"]), n_splits)  # noqa: E731
    tunable = (gemv_config if gemv else dot_config) is None
    launch = Launch(
        kernel="gemv_kernel" if gemv else "dot_kernel",
        args=args,
        constexprs=constexprs,
        meta=meta,
        grid=grid,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        tune=("gemv" if gemv else "dot", layout, block_m) if tunable else None,
        options={"enable_fp_fusion": True},
    )  # fused multiply-adds (explicit: triton's default changes)
    return launch, out


def dequant_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    cols: int,
    *,
    autotune: bool = True,
    splits: int | None = None,
    gemv_config: GemvConfig | None = None,
    dot_config: DotConfig | None = None,
    use_gemv: bool | None = None,
) -> torch.Tensor:
    """Run the fused ``x @ dequant(W).T`` kernel: GEMV for M <= 4, tl.dot tiles above.

    Args:
        x: [M, C] float16, bfloat16 or float32.
        packed: uint8 [R, ceil(C / 8) * bits].
        scale: float16 [R, G].
        zero: float16 [R, G].
        bits: width, 1..8.
        group_size: columns per group.
        cols: C.
        autotune: on CUDA, pick the fastest of a few configurations (first call per shape).
        splits: split count along C (``None``: only when the grid leaves SMs idle; 1 on the CPU).
        gemv_config: a fixed GEMV configuration (no autotuning).
        dot_config: a fixed tl.dot configuration (no autotuning).
        use_gemv: force the GEMV (M <= 4 only) or the tl.dot kernel; ``None`` picks by M.

    Returns:
        y [M, R] of ``x.dtype``.
    """
    interpret = x.device.type != "cuda"
    launch, out = plan_dequant_matmul(
        x,
        packed,
        scale,
        zero,
        bits,
        group_size,
        cols,
        interpret,
        splits=splits,
        gemv_config=gemv_config,
        dot_config=dot_config,
        use_gemv=use_gemv,
    )
    run(launch, interpret, autotune)
    return (out if out.dim() == 2 else out.sum(dim=0)).to(x.dtype)
