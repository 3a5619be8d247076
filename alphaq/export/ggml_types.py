"""ggml storage types as llama.cpp defines them, and the planner's GGUF target (pure, no I/O).

The block layouts are those of ``ggml/src/ggml-common.h``; the fallbacks those of ``tensor_type_fallback`` in
``src/llama-quant.cpp``. :data:`GGUF_WIDTH_TYPES` is what ``alphaq plan --target gguf`` plans with: only types
``llama-quantize`` makes without an importance matrix (no IQ1/IQ2 family), so the pipeline stays data-free.
See ``docs/export.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from alphaq.errors import ConfigError


@dataclass(frozen=True)
class GgmlType:
    """Storage of one ggml type: ``block_bytes`` bytes hold ``block_size`` consecutive values of a row."""

    name: str
    block_size: int
    block_bytes: int

    @property
    def bits_per_weight(self) -> float:
        """``8 * block_bytes / block_size`` (Q4_K: 8 * 144 / 256 = 4.5)."""
        return 8 * self.block_bytes / self.block_size


#: Block layouts of ggml-common.h (k-quants: super-blocks of 256 values).
GGML_TYPES: dict[str, GgmlType] = {
    t.name: t
    for t in (
        GgmlType("Q2_K", 256, 84),
        GgmlType("Q3_K", 256, 110),
        GgmlType("Q4_K", 256, 144),
        GgmlType("Q5_K", 256, 176),
        GgmlType("Q6_K", 256, 210),
        GgmlType("Q8_0", 32, 34),
        GgmlType("Q4_0", 32, 18),
        GgmlType("Q4_1", 32, 20),
        GgmlType("Q5_0", 32, 22),
        GgmlType("Q5_1", 32, 24),
        GgmlType("F16", 1, 2),
        GgmlType("BF16", 1, 2),
        GgmlType("F32", 1, 4),
    )
}
#: Planned width -> ggml type: the nearest k-quant at or above it (no 1-bit or 7-bit k-quant exists).
WIDTH_TO_GGML: dict[int, str] = {1: "Q2_K", 2: "Q2_K", 3: "Q3_K", 4: "Q4_K", 5: "Q5_K", 6: "Q6_K", 7: "Q8_0", 8: "Q8_0"}
#: What llama-quantize uses when a row length is not a multiple of the block (``tensor_type_fallback``).
SHAPE_FALLBACK: dict[str, str] = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

#: Widths of the ``gguf`` planner target and their ggml types (each width has its own type, none rounds).
GGUF_WIDTH_TYPES: dict[int, str] = {2: "Q2_K", 3: "Q3_K", 4: "Q4_K", 5: "Q5_K", 6: "Q6_K", 8: "Q8_0"}
GGUF_WIDTHS: tuple[int, ...] = tuple(GGUF_WIDTH_TYPES)


def check_gguf_widths(widths: tuple[int, ...]) -> None:
    """Raise :class:`ConfigError` unless every width has a data-free ggml type of its own."""
    bad = [w for w in widths if w not in GGUF_WIDTH_TYPES]
    if bad:
        raise ConfigError(
            f"--target gguf plans with {','.join(map(str, GGUF_WIDTHS))} (Q2_K..Q6_K, Q8_0); width(s) "
            f"{','.join(map(str, bad))} have no ggml type of their own: drop them from --widths"
        )


def gguf_bits_per_weight(width: int) -> float:
    """Real bits per weight of a ``gguf``-target width: 2 -> 2.625 (Q2_K) ... 8 -> 8.5 (Q8_0)."""
    check_gguf_widths((width,))
    return GGML_TYPES[GGUF_WIDTH_TYPES[width]].bits_per_weight


def ggml_nbytes(type_name: str, rows: int, cols: int) -> tuple[int, str]:
    """Bytes of a ``[rows, cols]`` matrix stored as ``type_name``, after llama-quantize's shape fallback.

    Args:
        type_name: a key of :data:`GGML_TYPES`.
        rows: rows (output features).
        cols: row length, GGUF ``ne[0]`` (input features); must be a multiple of the block size.

    Returns:
        ``(bytes, stored type)``: when ``cols`` is not a multiple of the block the type falls back as in
        llama.cpp (:data:`SHAPE_FALLBACK`, then F16 when even that block does not divide; Q8_0 has no fallback
        there and is costed as F16).
    """
    stored = type_name
    if cols % GGML_TYPES[stored].block_size:
        stored = SHAPE_FALLBACK.get(stored, "F16")
        if cols % GGML_TYPES[stored].block_size:
            stored = "F16"
    kind = GGML_TYPES[stored]
    return rows * (cols // kind.block_size) * kind.block_bytes, stored


def gguf_matrix_nbytes(rows: int, cols: int, width: int) -> int:
    """GGUF bytes of a ``[rows, cols]`` expert matrix at a ``gguf``-target width, after llama.cpp's shape fallback
    (:func:`ggml_nbytes`: a row length that is not a multiple of 256 stores Q4_0/Q5_0/Q5_1/Q8_0 instead)."""
    check_gguf_widths((width,))
    return ggml_nbytes(GGUF_WIDTH_TYPES[width], rows, cols)[0]
