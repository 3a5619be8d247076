"""Launch configurations of the matmul kernels: defaults, autotuning lists, tile constants (pure Python).

The defaults were chosen from sm_90 builds (``bench/kernels.py --compile-only``): no spills, about
100-170 registers, 16-byte asynchronous copies of the packed weights. Their speed is not measured
yet (no GPU here); on CUDA the launcher autotunes over the lists below by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alphaq.kernels.tiling import UnitLayout, dot_block_units, gemv_tiling, next_power_of_2


@dataclass(frozen=True)
class GemvConfig:
    """One configuration of the GEMV (decode) kernel.

    Attributes:
        block_r: weight rows per program.
        block_k: values per row and tile (rounded down to whole groups, or a power-of-two part of one).
        num_warps: warps per program.
        num_stages: software-pipelining depth of the loop over tiles (asynchronous copies of the
            next tiles on a GPU).
    """

    block_r: int
    block_k: int
    num_warps: int = 2
    num_stages: int = 3


@dataclass(frozen=True)
class DotConfig:
    """One configuration of the tl.dot (prefill) kernel.

    Attributes:
        block_n: weight rows per program.
        block_k: values per row and tile (at least 16).
        num_warps: warps per program.
        num_stages: software-pipelining depth.
    """

    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3


#: The only configurations of the CPU interpreter: large tiles, so fewer interpreted steps.
GEMV_CPU = GemvConfig(block_r=64, block_k=1024)
DOT_CPU = DotConfig(block_n=64, block_k=128)
#: tl.dot defaults on a GPU: 16-bit operands; byte-assembled units (more registers); float32 x (FMA dot).
DOT_GPU = DotConfig(block_n=64, block_k=128, num_warps=4, num_stages=3)
DOT_GPU_BYTES = DotConfig(block_n=32, block_k=64, num_warps=4, num_stages=3)
DOT_GPU_FP32 = DotConfig(block_n=32, block_k=32, num_warps=8, num_stages=2)
#: Autotuning candidates on a GPU (the first call per shape times each).
GEMV_AUTOTUNE: tuple[GemvConfig, ...] = (
    GemvConfig(16, 512, 2, 3),
    GemvConfig(16, 512, 4, 3),
    GemvConfig(16, 512, 8, 3),
    GemvConfig(32, 512, 4, 3),
    GemvConfig(8, 512, 1, 3),
    GemvConfig(16, 1024, 4, 3),
    GemvConfig(16, 256, 2, 4),
    GemvConfig(32, 256, 2, 4),
    GemvConfig(64, 256, 4, 3),
    GemvConfig(16, 512, 2, 2),
    GemvConfig(8, 1024, 2, 3),
)
DOT_AUTOTUNE: tuple[DotConfig, ...] = (
    DOT_GPU,
    DotConfig(32, 128, 4, 3),
    DotConfig(128, 64, 8, 3),
    DotConfig(64, 64, 4, 4),
    DotConfig(32, 256, 4, 2),
    DotConfig(128, 128, 8, 3),
    DotConfig(64, 256, 8, 2),
    DOT_GPU_BYTES,
)


def default_gemv_config(bits: int, m_rows: int) -> GemvConfig:
    """The GEMV configuration on a GPU without autotuning.

    16 rows x 512 values per tile, 3 pipeline stages, and warps so that a thread holds about 128
    values for one row of x, 64 for 1, 2 and 8 bits (denser units) and for 2..4 rows of x.

    Args:
        bits: width, 1..8.
        m_rows: rows of x (1..4).

    Returns:
        The :class:`GemvConfig`.
    """
    dense_units = bits <= 2 or bits == 8
    warps = 2 if m_rows == 1 else 4
    return GemvConfig(block_r=16, block_k=512, num_warps=warps * 2 if dense_units else warps, num_stages=3)


def default_dot_config(source: str, x_is_float32: bool) -> DotConfig:
    """The tl.dot configuration on a GPU without autotuning (see the module constants)."""
    if x_is_float32:
        return DOT_GPU_FP32
    return DOT_GPU_BYTES if source == "bytes" else DOT_GPU


def gemv_meta(layout: UnitLayout, config: GemvConfig, cols: int | None = None) -> dict[str, Any]:
    """The GEMV kernel's tile constants for ``config`` (tiles no wider than a row when ``cols`` is given)."""
    block_k = config.block_k if cols is None else min(config.block_k, next_power_of_2(cols))
    tiling = gemv_tiling(layout, block_k)
    return {
        "BLOCK_R": config.block_r,
        "GPT": tiling.groups_per_tile,
        "UPGT": tiling.units_per_group_in_tile,
        "STAGES": config.num_stages,
    }


def dot_meta(layout: UnitLayout, config: DotConfig, block_m: int, cols: int | None = None) -> dict[str, Any]:
    """The tl.dot kernel's tile constants for ``config`` (tiles no wider than a row when ``cols`` is given)."""
    block_k = config.block_k if cols is None else min(config.block_k, next_power_of_2(cols))
    return {"BLOCK_M": block_m, "BLOCK_N": config.block_n, "BLOCK_U": dot_block_units(layout, block_k)}
