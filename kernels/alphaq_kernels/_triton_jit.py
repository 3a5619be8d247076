"""Triton kernels of the packed group-wise format (device code only; launched by :mod:`.launch`).

Never imported directly: :func:`alphaq.kernels.launch.jit_module` loads this file once per mode
(compiled for CUDA, interpreted for CPU tensors) so the mode does not depend on ``TRITON_INTERPRET``
at the time something first imported triton. For the same reason the kernels call only core
``triton.language`` builtins and the helpers below, never the ``@jit`` functions of triton's standard
library (``tl.sum``, ``tl.max``, ``tl.zeros``, ``tl.cdiv``...), which are fixed to the mode triton
was imported in.

Shapes in comments: BR rows of W per tile, BU units per tile, V values per unit, LB bytes loaded per
unit, BM rows of x, BN rows of W (dot kernel).
"""

from __future__ import annotations

import triton
import triton.language as tl

FP16_MAX = tl.constexpr(65504.0)
# 1.5 * 2**23: (v + RINT_MAGIC) - RINT_MAGIC rounds |v| < 2**22 to the nearest integer, ties to even,
# exactly like torch.round (the codes are in [-1, 256]).
RINT_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def _sum_combine(a, b):
    return a + b


@triton.jit
def _min_combine(a, b):
    return tl.minimum(a, b)


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


#: The mode this copy of the module was loaded in (``alphaq.kernels.launch.jit_module`` sets it).
_INTERPRETED = triton.knobs.runtime.interpret


def _combine(standard, own):
    """The combine function for tl.reduce. The interpreter takes its numpy fast path only for triton's
    own functions (it compares by identity and never calls them), so interpreted kernels use those;
    compiled kernels use them too unless triton was imported in interpreter mode (then they are not
    compilable and this module's copies are used). Sums of the disjoint bit fields of a unit are
    their bitwise OR, also with the sign bit."""
    return standard if _INTERPRETED or isinstance(standard, triton.runtime.JITFunction) else own


_SUM = _combine(tl.standard._sum_combine, _sum_combine)
_MIN = _combine(tl.standard._elementwise_min, _min_combine)
_MAX = _combine(tl.standard._elementwise_max, _max_combine)


@triton.jit
def _cdiv(a, b):
    return (a + b - 1) // b


@triton.jit
def _load_codes(
    packed_ptr,
    stride_pr,
    row_idx,
    unit_idx,
    mask,
    value_idx,
    row_bytes,
    BITS: tl.constexpr,
    UNIT_BYTES: tl.constexpr,
    WIDE: tl.constexpr,
    BYTE_MASK: tl.constexpr,
    SOURCE: tl.constexpr,
    SCALED: tl.constexpr = False,
):
    """Codes [..., V] (float32, exact) of the units ``unit_idx`` of rows ``row_idx``; masked units read 0.

    ``row_idx``, ``unit_idx`` and ``mask`` broadcast to the tile's shape [..., 1] (its last dim of
    size 1 is the values' dim); ``value_idx`` is ``arange(V)`` shaped [1, ..., 1, V]. The loads are
    [..., 1], so the V values of a unit derived from them share the load's layout and stay in one
    thread's registers.

    SOURCE (``alphaq.kernels.tiling``): 0 one aligned int32 per unit (vector loads along the row);
    1 the unit's bytes, assembled into one integer (int64 when WIDE); 2 UNIT_BYTES / 4 int32 words
    holding 32 values, a straddling value read from the 64-bit pair of its two words.
    A code (< 2**8) becomes a float through the mantissa of 2**23: a logical op and a float add
    instead of a quarter-rate int-to-float conversion.

    SCALED (SOURCE 0 only): value i comes back multiplied by ``2**s``, ``s = _value_shift(i)``: it is
    masked in place in the low or high half of the word (no shift per value), so the caller must
    multiply what it pairs with the code by ``2**-s`` (exact: a power of two).
    """
    code_mask = (1 << BITS) - 1
    row_off = row_idx.to(tl.int64)
    if SOURCE == 0:
        word_ptrs = packed_ptr.to(tl.pointer_type(tl.uint32)) + row_off * (stride_pr // 4) + unit_idx
        word = tl.load(word_ptrs, mask=mask, other=0)
        if SCALED:
            # Mask each value in place (one logical op with the OR below): values of the high half
            # come from word >> 16, so the scaled code stays below 2**23 (exact in the mantissa).
            position = value_idx * BITS
            high = position >= 16
            half = tl.where(high, word >> 16, word)  # [..., V]
            codes = half & (code_mask << _value_shift(value_idx, BITS)).to(tl.uint32)
        else:
            codes = (word >> (value_idx * BITS).to(tl.uint32)) & code_mask  # [..., V]
    elif SOURCE == 1:
        byte_ptrs = packed_ptr + row_off * stride_pr + unit_idx * UNIT_BYTES
        word = tl.load(byte_ptrs, mask=mask, other=0).to(tl.int64 if WIDE else tl.int32)
        for j in tl.static_range(1, UNIT_BYTES):
            byte_mask = mask
            if BYTE_MASK:
                byte_mask = mask & (unit_idx * UNIT_BYTES + j < row_bytes)
            byte = tl.load(byte_ptrs + j, mask=byte_mask, other=0)
            word = word | (byte.to(tl.int64 if WIDE else tl.int32) << (8 * j))
        codes = (word >> (value_idx * BITS).to(tl.int64 if WIDE else tl.int32)) & code_mask  # [..., V]
    else:
        n_words: tl.constexpr = UNIT_BYTES // 4
        word_ptrs = packed_ptr.to(tl.pointer_type(tl.int32)) + row_off * (stride_pr // 4) + unit_idx * n_words
        position = value_idx * BITS
        word_of = position >> 5  # the word holding a value's lowest bit
        shift = (position & 31).to(tl.int64)
        lo = tl.load(word_ptrs, mask=mask, other=0).to(tl.uint32, bitcast=True).to(tl.int64)
        hi = tl.load(word_ptrs + 1, mask=mask, other=0).to(tl.uint32, bitcast=True).to(tl.int64)
        codes = (lo | (hi << 32)) >> shift  # right where word_of == 0
        for k in tl.static_range(1, n_words):
            lo = hi
            pair = lo
            if k + 1 < n_words:
                hi = tl.load(word_ptrs + (k + 1), mask=mask, other=0).to(tl.uint32, bitcast=True).to(tl.int64)
                pair = lo | (hi << 32)
            codes = tl.where(word_of == k, pair >> shift, codes)
        codes = codes & code_mask  # [..., V]
    return (codes.to(tl.int32) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0


@triton.jit
def _value_shift(value_idx, BITS: tl.constexpr):
    """Where value ``i`` of a 32-bit unit sits in its 16-bit half: ``i * BITS mod 16``."""
    return (value_idx * BITS) & 15


@triton.jit
def _value_unscale(value_idx, BITS: tl.constexpr):
    """``2**-_value_shift(i)`` as float32, built from its exponent bits (exact)."""
    return ((127 - _value_shift(value_idx, BITS)) << 23).to(tl.float32, bitcast=True)


@triton.jit
def quantize_pack_kernel(
    w_ptr,
    packed_ptr,
    scale_ptr,
    zero_ptr,
    R,
    C,
    G,
    row_bytes,
    stride_wr,
    stride_wc,
    stride_pr,
    stride_sr,
    stride_zr,
    BITS: tl.constexpr,
    GROUP_SIZE: tl.constexpr,
    UNIT_BYTES: tl.constexpr,
    LOAD_BYTES: tl.constexpr,
    UNIT_VALUES: tl.constexpr,
    WIDE: tl.constexpr,
    BYTE_MASK: tl.constexpr,
    UNITS_PER_GROUP: tl.constexpr,
    UNITS_P2: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """One program: BLOCK_R rows x one group: min-max RTN parameters, codes, packed bytes."""
    pid_r = tl.program_id(0)
    g = tl.program_id(1)
    max_code = (1 << BITS) - 1
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)  # [BR]
    row_mask = rows < R
    u = tl.arange(0, UNITS_P2)
    v = tl.arange(0, UNIT_VALUES)
    cols = g * GROUP_SIZE + u[:, None] * UNIT_VALUES + v[None, :]  # [BU, V]
    col_mask = (u < UNITS_PER_GROUP)[:, None] & (cols < C)
    mask = row_mask[:, None, None] & col_mask[None, :, :]  # [BR, BU, V]
    w_ptrs = w_ptr + rows[:, None, None].to(tl.int64) * stride_wr + cols[None, :, :].to(tl.int64) * stride_wc
    w = tl.load(w_ptrs, mask=mask, other=0.0).to(tl.float32)  # [BR, BU, V]
    w_min = tl.reduce(tl.reduce(tl.where(mask, w, float("inf")), 2, _MIN), 1, _MIN)  # [BR]
    w_max = tl.reduce(tl.reduce(tl.where(mask, w, float("-inf")), 2, _MAX), 1, _MAX)  # [BR]

    # alphaq.quantization.primitives.group_params with shrink 1: every step rounded as torch rounds it.
    lo = tl.minimum(w_min, 0.0)
    hi = tl.maximum(w_max, 0.0)
    span = hi - lo
    raw_scale = tl.where(span > 0, tl.math.div_rn(span, tl.full([BLOCK_R], max_code, tl.float32)), 1.0)
    scale16 = raw_scale.to(tl.float16)
    scale_up = (scale16.to(tl.int16, bitcast=True) + 1).to(tl.float16, bitcast=True)  # nextafter(+inf)
    scale16 = tl.where(scale16.to(tl.float32) < raw_scale, scale_up, scale16)
    zero32 = tl.math.div_rn(-lo, scale16.to(tl.float32))
    constant = w_min == w_max
    scale16 = tl.where(constant, tl.full([BLOCK_R], 1.0, tl.float16), scale16)
    zero32 = tl.where(constant, -w_min, zero32)
    zero16 = tl.minimum(tl.maximum(zero32, -FP16_MAX), FP16_MAX).to(tl.float16)
    tl.store(scale_ptr + rows.to(tl.int64) * stride_sr + g, scale16, mask=row_mask)
    tl.store(zero_ptr + rows.to(tl.int64) * stride_zr + g, zero16, mask=row_mask)

    scale = scale16.to(tl.float32)[:, None, None]
    zero = zero16.to(tl.float32)[:, None, None]
    level = tl.math.div_rn(w, tl.broadcast_to(scale, (BLOCK_R, UNITS_P2, UNIT_VALUES))) + zero
    level = (level + RINT_MAGIC) - RINT_MAGIC
    codes = tl.minimum(tl.maximum(level, 0.0), max_code).to(tl.int32)
    codes = tl.where(mask, codes, 0)  # padding values are 0
    if WIDE:
        word = tl.reduce(codes.to(tl.int64) << (v * BITS).to(tl.int64)[None, None, :], 2, _SUM)  # [BR, BU]
    else:
        word = tl.reduce(codes << (v * BITS)[None, None, :], 2, _SUM)  # [BR, BU]
    j = tl.arange(0, LOAD_BYTES)
    data = ((word[:, :, None] >> (j * 8)[None, None, :]) & 0xFF).to(tl.uint8)  # [BR, BU, LB]
    byte_idx = (g * UNITS_PER_GROUP + u)[:, None] * UNIT_BYTES + j[None, :]  # [BU, LB]
    store_mask = row_mask[:, None, None] & (u < UNITS_PER_GROUP)[None, :, None]
    if LOAD_BYTES != UNIT_BYTES:
        store_mask = store_mask & (j < UNIT_BYTES)[None, None, :]
    store_mask = store_mask & (byte_idx < row_bytes)[None, :, :]
    tl.store(packed_ptr + rows[:, None, None].to(tl.int64) * stride_pr + byte_idx[None, :, :], data, mask=store_mask)


@triton.jit
def unpack_dequantize_kernel(
    packed_ptr,
    scale_ptr,
    zero_ptr,
    out_ptr,
    R,
    C,
    G,
    row_bytes,
    n_units,
    stride_pr,
    stride_sr,
    stride_zr,
    stride_or,
    BITS: tl.constexpr,
    GROUP_SIZE: tl.constexpr,
    UNIT_BYTES: tl.constexpr,
    UNIT_VALUES: tl.constexpr,
    WIDE: tl.constexpr,
    BYTE_MASK: tl.constexpr,
    SOURCE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_U: tl.constexpr,
):
    """One program: a [BLOCK_R, BLOCK_U units] tile of W = (q - zero) * scale, in float32, then cast."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # [BR]
    units = tl.program_id(1) * BLOCK_U + tl.arange(0, BLOCK_U)  # [BU]
    row_mask = rows < R
    unit_mask = units < n_units
    q = _load_codes(
        packed_ptr,
        stride_pr,
        rows[:, None, None],
        units[None, :, None],
        row_mask[:, None, None] & unit_mask[None, :, None],
        tl.arange(0, UNIT_VALUES)[None, None, :],
        row_bytes,
        BITS,
        UNIT_BYTES,
        WIDE,
        BYTE_MASK,
        SOURCE,
    )  # [BR, BU, V]
    groups = (units * UNIT_VALUES) // GROUP_SIZE  # [BU]
    p_mask = row_mask[:, None] & (groups < G)[None, :]
    p_off = rows[:, None].to(tl.int64)
    scale = tl.load(scale_ptr + p_off * stride_sr + groups[None, :], mask=p_mask, other=0.0).to(tl.float32)
    zero = tl.load(zero_ptr + p_off * stride_zr + groups[None, :], mask=p_mask, other=0.0).to(tl.float32)
    w = (q - zero[:, :, None]) * scale[:, :, None]  # [BR, BU, V]
    cols = units[:, None] * UNIT_VALUES + tl.arange(0, UNIT_VALUES)[None, :]  # [BU, V]
    mask = row_mask[:, None, None] & (cols < C)[None, :, :]
    tl.store(
        out_ptr + rows[:, None, None].to(tl.int64) * stride_or + cols[None, :, :],
        w.to(out_ptr.dtype.element_ty),
        mask=mask,
    )


@triton.jit
def _gemv_groups(q, x_ptrs, col_mask, x_unscale, scale, zero):
    """sum_c x[c] * (q[r, c] - zero) * scale per group, as ``scale * (sum q x - zero * sum x)``.

    q [BR, GPT, UPGT, V] (codes times 1 / x_unscale [1, 1, V]), x [GPT, UPGT, V], scale and zero
    [BR, GPT]: returns [BR, GPT].
    x is loaded 3-D and broadcast, so the compiler fits the small x to the layout of the large q;
    the sums over a group come before the scale so only [BR, GPT] tensors meet the scale's layout.
    """
    x = tl.load(x_ptrs, mask=col_mask, other=0.0).to(tl.float32)  # [GPT, UPGT, V]
    qx = tl.reduce(tl.reduce(q * (x * x_unscale)[None, :, :, :], 3, _SUM), 2, _SUM)  # [BR, GPT]
    xs = tl.reduce(tl.reduce(x, 2, _SUM), 1, _SUM)  # [GPT]
    return scale * (qx - zero * xs[None, :])  # [BR, GPT]


@triton.jit
def gemv_kernel(
    x_ptr,
    packed_ptr,
    scale_ptr,
    zero_ptr,
    out_ptr,
    R,
    C,
    G,
    row_bytes,
    n_units,
    SPLIT_K,
    stride_xm,
    stride_xc,
    stride_pr,
    stride_sr,
    stride_zr,
    stride_os,
    stride_om,
    M: tl.constexpr,
    BITS: tl.constexpr,
    GROUP_SIZE: tl.constexpr,
    UNIT_BYTES: tl.constexpr,
    UNIT_VALUES: tl.constexpr,
    WIDE: tl.constexpr,
    BYTE_MASK: tl.constexpr,
    SOURCE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    GPT: tl.constexpr,
    UPGT: tl.constexpr,
    STAGES: tl.constexpr,
):
    """Decode: y[m, r] = sum_c x[m, c] * W[r, c] for M <= 4 rows of x.

    Program (pid_r, pid_k) streams the packed rows ``pid_r * BLOCK_R ...`` over its share of tiles
    along C, dequantizing in registers; the loop over tiles is software-pipelined STAGES deep
    (asynchronous copies of the next tiles on a GPU). A tile is [BLOCK_R rows, GPT groups, UPGT
    units]: GPT whole groups of UPGT units, or (GPT = 1) a power-of-two part of one group; each
    (row, group) has one scale and zero, applied once per tile as ``scale * (sum q x - zero * sum x)``.
    Partial sums stay per (row, group) in registers and are reduced over the groups once, after the
    loop. With SPLIT_K > 1 each program writes a float32 partial sum [SPLIT_K, M, R] that the host
    adds up.
    """
    BLOCK_U: tl.constexpr = GPT * UPGT
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)  # [BR]
    row_mask = rows < R
    n_tiles = _cdiv(n_units, BLOCK_U)
    per_split = _cdiv(n_tiles, SPLIT_K)
    t_start = pid_k * per_split
    t_end = tl.minimum(t_start + per_split, n_tiles)
    unit_off = tl.arange(0, GPT)[:, None] * UPGT + tl.arange(0, UPGT)[None, :]  # [GPT, UPGT]
    v_off = tl.arange(0, UNIT_VALUES)
    # Codes masked in place (no shift per value) for widths < 8 read as whole words; 8-bit codes
    # are whole bytes, which the compiler extracts best by shifting.
    SCALED: tl.constexpr = SOURCE == 0 and BITS < 8
    if SCALED:
        x_unscale = _value_unscale(v_off, BITS)[None, None, :]  # [1, 1, V]: undoes the scaled codes
    else:
        x_unscale = tl.full([1, 1, UNIT_VALUES], 1.0, tl.float32)
    group_off = tl.arange(0, GPT) * UPGT  # [GPT] (first unit of each group)
    rows4 = rows[:, None, None, None]
    row_mask4 = row_mask[:, None, None, None]
    scale_ptrs = scale_ptr + rows[:, None].to(tl.int64) * stride_sr  # [BR, 1]
    zero_ptrs = zero_ptr + rows[:, None].to(tl.int64) * stride_zr  # [BR, 1]
    acc0 = tl.full([BLOCK_R, GPT], 0.0, tl.float32)
    acc1 = tl.full([BLOCK_R, GPT], 0.0, tl.float32)
    acc2 = tl.full([BLOCK_R, GPT], 0.0, tl.float32)
    acc3 = tl.full([BLOCK_R, GPT], 0.0, tl.float32)
    for t in tl.range(t_start, t_end, num_stages=STAGES):
        units = t * BLOCK_U + unit_off  # [GPT, UPGT]
        units4 = units[None, :, :, None]
        q = _load_codes(
            packed_ptr,
            stride_pr,
            rows4,
            units4,
            row_mask4 & (units4 < n_units),
            v_off[None, None, None, :],
            row_bytes,
            BITS,
            UNIT_BYTES,
            WIDE,
            BYTE_MASK,
            SOURCE,
            SCALED,
        )  # [BR, GPT, UPGT, V], times 2**shift when SCALED
        groups = ((t * BLOCK_U + group_off) * UNIT_VALUES) // GROUP_SIZE  # [GPT]
        p_mask = row_mask[:, None] & (groups < G)[None, :]
        scale = tl.load(scale_ptrs + groups[None, :], mask=p_mask, other=0.0).to(tl.float32)  # [BR, GPT]
        zero = tl.load(zero_ptrs + groups[None, :], mask=p_mask, other=0.0).to(tl.float32)  # [BR, GPT]
        cols = units[:, :, None] * UNIT_VALUES + v_off[None, None, :]  # [GPT, UPGT, V]
        col_mask = cols < C
        x_ptrs = x_ptr + cols.to(tl.int64) * stride_xc
        acc0 += _gemv_groups(q, x_ptrs, col_mask, x_unscale, scale, zero)
        if M > 1:
            acc1 += _gemv_groups(q, x_ptrs + stride_xm, col_mask, x_unscale, scale, zero)
        if M > 2:
            acc2 += _gemv_groups(q, x_ptrs + 2 * stride_xm, col_mask, x_unscale, scale, zero)
        if M > 3:
            acc3 += _gemv_groups(q, x_ptrs + 3 * stride_xm, col_mask, x_unscale, scale, zero)
    out_ptrs = out_ptr + pid_k * stride_os + rows
    out_ty = out_ptr.dtype.element_ty
    tl.store(out_ptrs, _row_sums(acc0).to(out_ty), mask=row_mask)
    if M > 1:
        tl.store(out_ptrs + stride_om, _row_sums(acc1).to(out_ty), mask=row_mask)
    if M > 2:
        tl.store(out_ptrs + 2 * stride_om, _row_sums(acc2).to(out_ty), mask=row_mask)
    if M > 3:
        tl.store(out_ptrs + 3 * stride_om, _row_sums(acc3).to(out_ty), mask=row_mask)


@triton.jit
def _row_sums(acc):
    """[BR, GPT] -> [BR]."""
    return tl.reduce(acc, 1, _SUM)


@triton.jit
def dot_kernel(
    x_ptr,
    packed_ptr,
    scale_ptr,
    zero_ptr,
    out_ptr,
    M,
    R,
    C,
    G,
    row_bytes,
    n_units,
    SPLIT_K,
    stride_xm,
    stride_xc,
    stride_pr,
    stride_sr,
    stride_zr,
    stride_os,
    stride_om,
    BITS: tl.constexpr,
    GROUP_SIZE: tl.constexpr,
    UNIT_BYTES: tl.constexpr,
    UNIT_VALUES: tl.constexpr,
    WIDE: tl.constexpr,
    BYTE_MASK: tl.constexpr,
    SOURCE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_U: tl.constexpr,
    DOT_KIND: tl.constexpr,
):
    """Prefill: y[BM, BN] tiles of x @ W.T with W dequantized in registers, then tl.dot.

    DOT_KIND: 0 float16 operands, 1 bfloat16, 2 float32 (ieee). Program (pid, pid_k): pid walks
    the batch blocks fastest so programs that share a weight tile run together.
    """
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    m_blocks = _cdiv(M, BLOCK_M)
    pid_m = pid % m_blocks
    pid_n = pid // m_blocks
    rows_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    rows_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    m_mask = rows_m < M
    n_mask = rows_n < R
    n_tiles = _cdiv(n_units, BLOCK_U)
    per_split = _cdiv(n_tiles, SPLIT_K)
    t_start = pid_k * per_split
    t_end = tl.minimum(t_start + per_split, n_tiles)
    u_off = tl.arange(0, BLOCK_U)
    v_off = tl.arange(0, UNIT_VALUES)
    k_off = tl.arange(0, BLOCK_U * UNIT_VALUES)
    x_rows = x_ptr + rows_m[:, None].to(tl.int64) * stride_xm  # [BM, 1]
    s_off = rows_n[:, None].to(tl.int64) * stride_sr
    z_off = rows_n[:, None].to(tl.int64) * stride_zr
    acc = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
    for t in range(t_start, t_end):
        units = t * BLOCK_U + u_off  # [BU]
        q = _load_codes(
            packed_ptr,
            stride_pr,
            rows_n[:, None, None],
            units[None, :, None],
            n_mask[:, None, None] & (units < n_units)[None, :, None],
            v_off[None, None, :],
            row_bytes,
            BITS,
            UNIT_BYTES,
            WIDE,
            BYTE_MASK,
            SOURCE,
        )  # [BN, BU, V]
        groups = (units * UNIT_VALUES) // GROUP_SIZE  # [BU]
        p_mask = n_mask[:, None] & (groups < G)[None, :]
        scale = tl.load(scale_ptr + s_off + groups[None, :], mask=p_mask, other=0.0).to(tl.float32)  # [BN, BU]
        zero = tl.load(zero_ptr + z_off + groups[None, :], mask=p_mask, other=0.0).to(tl.float32)  # [BN, BU]
        w = (q - zero[:, :, None]) * scale[:, :, None]  # [BN, BU, V]
        w = tl.reshape(w, (BLOCK_N, BLOCK_U * UNIT_VALUES))  # [BN, BK]
        cols = t * (BLOCK_U * UNIT_VALUES) + k_off  # [BK]
        x = tl.load(
            x_rows + cols[None, :].to(tl.int64) * stride_xc, mask=m_mask[:, None] & (cols < C)[None, :], other=0.0
        )  # [BM, BK]
        if DOT_KIND == 0:
            acc = tl.dot(x.to(tl.float16), tl.trans(w.to(tl.float16)), acc)
        elif DOT_KIND == 1:
            acc = tl.dot(x.to(tl.bfloat16), tl.trans(w.to(tl.bfloat16)), acc)
        else:
            acc = tl.dot(x.to(tl.float32), tl.trans(w), acc, input_precision="ieee")
    out_ptrs = out_ptr + pid_k * stride_os + rows_m[:, None] * stride_om + rows_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])
