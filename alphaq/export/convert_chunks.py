"""Row-block conversion of a checkpoint's large pass-through tensors inside llama.cpp's ``convert_hf_to_gguf.py``.

The converter reads each tensor whole, widens BF16 to float32 and converts the whole array to the output type,
so its peak memory is several times its largest tensor: 2.9 GB for Qwen1.5-MoE-A2.7B's 151936 x 2048 embedding
and output head (0.6 GB each in bf16). Its own writer already writes a ``gguf.LazyChunkedTensor`` one row block at
a time (llama.cpp uses it for Qwen4's sharded embedding table); this module hands it one for every 2-D float
tensor of at least :data:`DEFAULT_MIN_BYTES` (as float32) that the architecture's ``modify_tensors`` passes
through unchanged, the case of the embedding and the output head in every family.

"Unchanged" is checked, not assumed: the converter calls ``modify_tensors(data, name, bid)`` with the lazy
float32 view of the file's tensor, and only a result that *is* that very object (same shape, no operation
recorded on it) is replaced. Reordered, permuted, scaled, merged or split tensors go the converter's own way.
A row block converts to exactly the bytes the whole array would (BF16 -> float32 is exact, and every output type
the converter writes here, F32/F16/BF16/Q8_0, quantizes rows independently), which a test checks byte for byte.

Runs inside the converter's process (:mod:`alphaq.export.convert_shim`): no torch import here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from alphaq.load.safetensors_files import NUMPY_FLOATS, TensorInfo, list_shards, read_header

#: Environment variable: the float32 size (bytes) from which a pass-through tensor is converted in row blocks;
#: ``0`` turns row blocks off.
MIN_BYTES_ENV = "ALPHAQ_CONVERT_CHUNK_BYTES"
#: Default of :data:`MIN_BYTES_ENV`: 256 MiB of float32 (Qwen1.5-MoE's 151936 x 2048 head is 1.2 GB).
DEFAULT_MIN_BYTES = 256 << 20
#: float32 bytes per row block.
ROW_BLOCK_BYTES = 64 << 20


def min_bytes_from_env(environ: dict[str, str] | None = None) -> int:
    """The row-block threshold: ``$ALPHAQ_CONVERT_CHUNK_BYTES`` (bytes, ``0`` = off) or :data:`DEFAULT_MIN_BYTES`."""
    value = (os.environ if environ is None else environ).get(MIN_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MIN_BYTES
    if not value.isdecimal():
        raise ValueError(f"${MIN_BYTES_ENV}={value!r} is not a byte count; use a whole number (0 turns it off)")
    return int(value)


def large_float_tensors(model_dir: Path, min_bytes: int) -> dict[str, TensorInfo]:
    """The 2-D plain-float tensors of a checkpoint folder with at least ``min_bytes`` as float32, by name.

    Args:
        model_dir: the safetensors checkpoint folder.
        min_bytes: threshold in float32 bytes (``0``: none).

    Returns:
        name -> :class:`TensorInfo` (its shard, offset, dtype and shape).
    """
    if min_bytes <= 0:
        return {}
    found: dict[str, TensorInfo] = {}
    for shard in list_shards(model_dir):
        infos, _ = read_header(shard)
        for name, info in infos.items():
            if len(info.shape) == 2 and info.dtype in NUMPY_FLOATS and info.numel * 4 >= min_bytes:
                found[name] = info
    return found


def row_block_loaders(info: TensorInfo, block_bytes: int = ROW_BLOCK_BYTES) -> list[Callable[[], Any]]:
    """Loaders of a 2-D tensor's row blocks, each returning float32 ``[rows, cols]`` read from the file.

    Args:
        info: the tensor (2-D, plain float, known offset).
        block_bytes: float32 bytes per block (at least one row).

    Returns:
        Callables in row order; together they read every row once.
    """
    from alphaq.load.safetensors_files import read_float_array

    rows, cols = info.shape
    per_block = max(1, block_bytes // (4 * cols))
    return [
        (lambda start=start: read_float_array(info, rows=(start, min(rows, start + per_block))))
        for start in range(0, rows, per_block)
    ]


def passthrough_in_row_blocks(
    modify: Callable[[Any, str, int | None], Iterable[tuple[str, Any]]],
    tensors: dict[str, TensorInfo],
    chunked: Callable[..., Any],
) -> Callable[[Any, str, int | None], Iterator[tuple[str, Any]]]:
    """Wrap a converter model's ``modify_tensors`` so that large pass-through tensors become row-block tensors.

    Args:
        modify: the model instance's own ``modify_tensors``.
        tensors: :func:`large_float_tensors` of the checkpoint.
        chunked: ``gguf.LazyChunkedTensor`` (its ``(loaders, shape=, dtype=)`` constructor).

    Returns:
        A ``modify_tensors`` with the same results, except that a result which is the very tensor it was given,
        for a name in ``tensors`` with the file's shape, is a ``LazyChunkedTensor`` of its row blocks.
    """
    import sys

    import numpy as np

    def modify_tensors(data: Any, name: str, bid: int | None) -> Iterator[tuple[str, Any]]:
        info = tensors.get(name)
        for new_name, out in modify(data, name, bid):
            if info is not None and out is data and tuple(out.shape) == tuple(info.shape):
                blocks = row_block_loaders(info)
                print(f"alphaq: {new_name} ({name}) is written in {len(blocks)} row block(s)", file=sys.stderr)
                out = chunked(blocks, shape=tuple(info.shape), dtype=np.float32)
            yield new_name, out

    return modify_tensors


def install(model_base: Any, chunked: Callable[..., Any], tensors: dict[str, TensorInfo]) -> None:
    """Patch ``ModelBase.prepare_tensors`` (every architecture's tensor loop) to use
    :func:`passthrough_in_row_blocks` on the instance being converted.

    Args:
        model_base: the converter's ``conversion.base.ModelBase``.
        chunked: ``gguf.LazyChunkedTensor``.
        tensors: :func:`large_float_tensors` of the checkpoint (nothing is patched when empty).
    """
    if not tensors:
        return
    original = model_base.prepare_tensors

    def prepare_tensors(self: Any) -> None:
        if "modify_tensors" not in vars(self):  # once per instance: subclasses reach here through super()
            self.modify_tensors = passthrough_in_row_blocks(self.modify_tensors, tensors, chunked)
        return original(self)

    model_base.prepare_tensors = prepare_tensors


__all__ = [
    "DEFAULT_MIN_BYTES",
    "MIN_BYTES_ENV",
    "ROW_BLOCK_BYTES",
    "install",
    "large_float_tensors",
    "min_bytes_from_env",
    "passthrough_in_row_blocks",
    "row_block_loaders",
]
