"""Safetensors files read from their headers: list tensors without loading weights, stream one at a time.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the header), and the
raw tensor bytes. This module validates the header against the file size so a truncated or corrupt file
gives a one-line error before any weight is read.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphaq.errors import CheckpointError

#: Bits per element of every dtype the safetensors format defines (the ``safetensors`` library refuses others).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
#: Bytes per element of each safetensors dtype.
DTYPE_BYTES: dict[str, float] = {dtype: bits / 8 for dtype, bits in DTYPE_BITS.items()}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as its file header describes it.

    Attributes:
        name: tensor name in the checkpoint.
        dtype: safetensors dtype string (``"BF16"``, ``"F8_E4M3"``, ...).
        shape: tensor shape.
        file: the shard that holds it.
        nbytes: size of its data in the file.
        offset: byte offset of its data from the start of the file (None when unknown).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    nbytes: int
    offset: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_header(file: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate one safetensors header.

    Args:
        file: path of a ``.safetensors`` file.

    Returns:
        (tensors by name, the header's ``__metadata__`` dict).

    Raises:
        CheckpointError: the file is truncated, the header is not valid JSON, an entry has an unknown dtype, a
            shape or offsets that are not non-negative integers, a size other than its shape's, or the entries
            overlap, leave gaps or run past the end of the file. Each message names the file and the tensor.
    """
    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{file}: truncated safetensors file ({size} bytes); re-download or re-save it")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
                raise CheckpointError(
                    f"{file}: corrupt safetensors header (length {header_len} for a {size}-byte file); "
                    "re-download or re-save the shard"
                )
            header_bytes = fh.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read ({exc.strerror}); check the path and permissions") from exc
    if not header_bytes.startswith(b"{"):
        raise CheckpointError(f"{file}: safetensors header does not start with '{{'; re-download or re-save the shard")
    try:
        header: dict[str, Any] = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"{file}: safetensors header is not valid JSON; re-download or re-save the shard"
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: safetensors header is not a JSON object; re-download or re-save the shard")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{file}: safetensors __metadata__ must map names to strings; re-save the shard")
    tensors = {name: _entry(file, name, entry, 8 + header_len) for name, entry in header.items()}
    _check_coverage(file, tensors, 8 + header_len, size)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _entry(file: Path, name: str, entry: Any, data_start: int) -> TensorInfo:
    """One header entry checked field by field: known dtype, non-negative integer shape, size = elements x dtype."""

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(
            f"{file}: tensor {name!r} {problem} in the safetensors header; re-download or re-save the shard"
        )

    if not isinstance(entry, dict):
        raise bad("is not an object with dtype, shape and data_offsets")
    missing = [key for key in ("dtype", "shape", "data_offsets") if key not in entry]
    if missing:
        raise bad(f"lacks {', '.join(missing)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise bad(f"has unknown dtype {dtype!r} (known: {', '.join(sorted(DTYPE_BITS))})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise bad(f"has shape {shape!r}; a shape is a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise bad(f"has data_offsets {offsets!r}; they are two non-negative integers [begin, end]")
    begin, end = offsets
    if begin > end:
        raise bad(f"has data_offsets {offsets!r} that end before they begin")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        raise bad(f"has {end - begin} bytes but its shape {shape} of {dtype} needs {bits / 8:g}")
    return TensorInfo(
        name=name, dtype=dtype, shape=tuple(shape), file=file, nbytes=end - begin, offset=data_start + begin
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _check_coverage(file: Path, tensors: dict[str, TensorInfo], data_start: int, size: int) -> None:
    """The tensors' data, sorted by offset, tile the data section exactly: no overlap, no gap, nothing past the end
    (the rules of the ``safetensors`` library, checked here so that its reads cannot fail on the header)."""
    data_size = size - data_start
    position = 0
    for info in sorted(tensors.values(), key=lambda t: (t.offset or 0, t.nbytes)):
        begin = (info.offset or 0) - data_start
        if begin + info.nbytes > data_size:
            raise CheckpointError(
                f"{file}: tensor {info.name!r} lies beyond the end of the file (truncated "
                "download?); re-download the shard"
            )
        if begin != position:
            problem = "overlaps the tensor before it" if begin < position else "leaves a gap before it"
            raise CheckpointError(
                f"{file}: tensor {info.name!r} {problem} (data_offsets begin at {begin}, the "
                f"previous tensor ends at {position}); the shard is corrupt: re-download or re-save "
                "it"
            )
        position = begin + info.nbytes
    if position != data_size:
        raise CheckpointError(
            f"{file}: the tensors cover {position} of the {data_size} data bytes (truncated or "
            "padded file?); re-download or re-save the shard"
        )


#: Plain float safetensors dtypes that :func:`read_float_array` reads without torch (little-endian numpy dtypes).
NUMPY_FLOATS: dict[str, str] = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8"}


def read_float_array(info: TensorInfo, index: int | None = None, *, rows: tuple[int, int] | None = None) -> Any:
    """Read a plain float tensor (F32, F16, BF16, F64) straight from its file as a float32 numpy array.

    One ``numpy.fromfile`` of its bytes (no torch import, no memory map); BF16 is widened by a 16-bit shift.

    Args:
        info: the tensor, with a known ``offset`` and a dtype in :data:`NUMPY_FLOATS`.
        index: read only ``tensor[index]`` (one expert of a fused [E, ...] tensor), or the whole tensor.
        rows: ``(start, stop)``: read only those rows of a 2-D tensor (a block of a matrix larger than memory
            should hold at once); not with ``index``.

    Returns:
        float32 ``numpy.ndarray`` of shape ``info.shape`` (or ``info.shape[1:]`` with ``index``).

    Raises:
        CheckpointError: the dtype is not a plain float, or the file is shorter than its header says.
    """
    import numpy as np

    if info.dtype not in NUMPY_FLOATS or info.offset is None:
        raise CheckpointError(
            f"{info.file}: tensor {info.name!r} ({info.dtype}) is not a plain float tensor; "
            "read it with Checkpoint.read_matrix"
        )
    shape = info.shape if index is None else info.shape[1:]
    item = np.dtype(NUMPY_FLOATS[info.dtype]).itemsize
    offset = info.offset + (0 if index is None else index * math.prod(shape) * item)
    if rows is not None:
        start, stop = rows
        if index is not None or len(shape) != 2 or not 0 <= start <= stop <= shape[0]:
            raise ValueError(f"rows {rows} do not select rows of a 2-D tensor of shape {tuple(shape)}")
        offset += start * shape[1] * item
        shape = (stop - start, shape[1])
    count = math.prod(shape)
    try:
        raw = np.fromfile(info.file, dtype=NUMPY_FLOATS[info.dtype], count=count, offset=offset)
    except OSError as exc:
        raise CheckpointError(f"{info.file}: cannot read tensor {info.name!r} ({exc}); check the file") from exc
    if raw.size != count:
        raise CheckpointError(
            f"{info.file}: tensor {info.name!r} is truncated ({raw.size} of {count} values); re-download the shard"
        )
    if info.dtype == "BF16":  # widened in place: one float32 copy besides the raw bytes
        wide = raw.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32).reshape(shape)
    return (raw if info.dtype == "F32" else raw.astype(np.float32)).reshape(shape)


def list_shards(directory: Path) -> list[Path]:
    """Return the safetensors shards of a checkpoint folder, following the index when present.

    Raises:
        CheckpointError: no safetensors file, a bad index, or a shard named by the index is missing.
    """
    index_files = sorted(directory.glob("*.safetensors.index.json"))
    if index_files:
        index = read_index(index_files[0])
        shards = sorted({directory / shard for shard in index.values()})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(
                f"{directory}: shard(s) {', '.join(missing[:3])} named in {index_files[0].name} are missing; "
                "download every shard"
            )
        return shards
    shards = sorted(directory.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(
            f"{directory}: no *.safetensors file found; alphaq reads Hugging Face safetensors checkpoints "
            "(convert .bin/.pt weights with save_pretrained(safe_serialization=True))"
        )
    return shards


def read_index(index_file: Path) -> dict[str, str]:
    """Read ``model.safetensors.index.json`` and return its ``weight_map`` (tensor name -> shard file)."""
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{index_file}: not a valid safetensors index (needs a 'weight_map'); re-download it"
        ) from exc
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_file}: 'weight_map' is not an object; re-download it")
    return {str(k): str(v) for k, v in weight_map.items()}
