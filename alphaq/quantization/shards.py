"""safetensors shards written as a stream (header first, then each tensor at its offset) and read back.

:func:`write_shard` never holds more than the tensor being written: the header is computed from the tensor
names, dtypes and sizes alone, and each tensor's bytes are written at their offset as they are produced. The
file is byte-identical to ``safetensors.torch.save_file(tensors, metadata={"format": "pt"})``.
:func:`read_quantized_tensors` reads the quantized matrices of a folder written by ``alphaq quantize``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.atomic import atomic_path
from alphaq.errors import AlphaQError
from alphaq.provenance import sha256_file
from alphaq.quantization.layout import QuantSpec, packed_row_bytes

if TYPE_CHECKING:
    import torch

    from alphaq.quantization.primitives import QuantizedTensor
    from alphaq.quantization.writer import OutputTensor

FORMAT = "alphaq-groupwise-v1"
QUANT_METHOD = "alphaq"
INDEX_FILE = "model.safetensors.index.json"
#: The only ``__metadata__`` of every shard (transformers checks ``format``); no timestamps.
SHARD_METADATA = {"format": "pt"}
#: safetensors' dtype order: the library stores tensors by descending rank, then name, which keeps each
#: tensor aligned to its element size. Mirrored so that our shards are byte-identical to ``save_file``'s.
_DTYPE_RANK = {
    name: rank
    for rank, name in enumerate(
        (
            "BOOL",
            "F4",
            "F6_E2M3",
            "F6_E3M2",
            "U8",
            "I8",
            "F8_E5M2",
            "F8_E4M3",
            "F8_E8M0",
            "I16",
            "U16",
            "F16",
            "BF16",
            "I32",
            "U32",
            "F32",
            "C64",
            "F64",
            "I64",
            "U64",
        )
    )
}


def quantized_names(base: str) -> tuple[str, str, str]:
    """``(base.qweight, base.scales, base.zeros)``: the stored tensors of one quantized matrix."""
    return f"{base}.qweight", f"{base}.scales", f"{base}.zeros"


# -- writing --------------------------------------------------------------------------------------------


def shard_header(tensors: Sequence[OutputTensor]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The safetensors header (8-byte length + JSON padded to 8 bytes) and each tensor's absolute byte span.

    Tensors are stored in safetensors' own order (dtype rank descending, then name), so the file is
    byte-identical to ``safetensors.torch.save_file(..., metadata={"format": "pt"})`` of the same tensors.
    """
    ordered = sorted(tensors, key=lambda t: (-check_dtype(t.dtype), t.name))
    entries: dict[str, Any] = {"__metadata__": SHARD_METADATA}
    offset = 0
    for tensor in ordered:
        entries[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    spans = {
        name: (start + e["data_offsets"][0], start + e["data_offsets"][1])
        for name, e in entries.items()
        if name != "__metadata__"
    }
    return len(text).to_bytes(8, "little") + text, spans


#: Bytes a tensor copied from its source file moves at a time (:meth:`ShardWriter.copy_from`).
COPY_CHUNK_BYTES = 64 * 1024 * 1024


class ShardWriter:
    """Writes the tensors of one open shard at their offsets, in any order, each exactly once."""

    def __init__(self, handle: Any, spans: Mapping[str, tuple[int, int]]) -> None:
        self._handle = handle
        self._spans = dict(spans)
        self._written: set[str] = set()

    def write(self, name: str, data: bytes | memoryview) -> None:
        """Write tensor ``name``'s bytes (``len(data)`` must be its size)."""
        if name not in self._spans or name in self._written:
            raise ValueError(f"shard writer: {name!r} is not an unwritten tensor of this shard")
        start, end = self._spans[name]
        size = memoryview(data).nbytes
        if size != end - start:
            raise ValueError(f"shard writer: {name!r} has {size} bytes, its header entry {end - start}")
        self._handle.seek(start)
        self._handle.write(data)
        self._written.add(name)

    def copy_from(self, name: str, file: str | os.PathLike[str], offset: int, nbytes: int) -> None:
        """Write tensor ``name`` from ``nbytes`` bytes of ``file`` at ``offset``, in chunks of
        :data:`COPY_CHUNK_BYTES` (a large tensor is never held whole)."""
        if name not in self._spans or name in self._written:
            raise ValueError(f"shard writer: {name!r} is not an unwritten tensor of this shard")
        start, end = self._spans[name]
        if nbytes != end - start:
            raise ValueError(f"shard writer: {name!r} has {nbytes} bytes, its header entry {end - start}")
        self._handle.seek(start)
        with open(file, "rb") as source:
            source.seek(offset)
            left = nbytes
            while left:
                chunk = source.read(min(COPY_CHUNK_BYTES, left))
                if not chunk:
                    raise ValueError(f"{file}: ends before tensor {name!r} does; the shard is truncated")
                self._handle.write(chunk)
                left -= len(chunk)
        self._written.add(name)

    def missing(self) -> list[str]:
        return sorted(set(self._spans) - self._written)


class LockedWriter:
    """A :class:`ShardWriter` shared by threads: each seek + write runs under one lock."""

    def __init__(self, writer: ShardWriter) -> None:
        import threading

        self._writer = writer
        self._lock = threading.Lock()

    def write(self, name: str, data: bytes | memoryview) -> None:
        """:meth:`ShardWriter.write` under the lock."""
        with self._lock:
            self._writer.write(name, data)

    def copy_from(self, name: str, file: str | os.PathLike[str], offset: int, nbytes: int) -> None:
        """:meth:`ShardWriter.copy_from` under the lock."""
        with self._lock:
            self._writer.copy_from(name, file, offset, nbytes)


def write_shard(
    path: str | os.PathLike[str], tensors: Sequence[OutputTensor], fill: Callable[[ShardWriter], None]
) -> tuple[str, int]:
    """Write one safetensors shard atomically: header first, then ``fill(writer)`` writes every tensor.

    Peak memory is what ``fill`` holds at once (one tensor at a time in :mod:`alphaq.quantization.run`).

    Args:
        path: final file name; a temporary file beside it is renamed onto it when complete.
        tensors: the shard's tensors (the header is derived from them).
        fill: callback that calls ``writer.write(name, bytes)`` once per tensor.

    Returns:
        (sha256 hex digest of the file, file size in bytes).
    """
    header, spans = shard_header(tensors)
    size = len(header) + sum(t.nbytes for t in tensors)
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:
            handle.write(header)
            handle.truncate(size)
            writer = ShardWriter(handle, spans)
            fill(writer)
            if writer.missing():
                raise ValueError(f"{path}: tensors not written: {', '.join(writer.missing()[:3])}")
            handle.flush()
            os.fsync(handle.fileno())
        digest = sha256_file(tmp)
    return digest, size


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a CPU tensor (any dtype, any shape, scalars included)."""
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def check_dtype(dtype: str) -> int:
    """Return the storage rank of a safetensors dtype; raise :class:`AlphaQError` for one the writer lacks."""
    if dtype not in _DTYPE_RANK:
        raise AlphaQError(
            f"safetensors dtype {dtype!r} is not supported by the writer; keep that tensor out of "
            "the checkpoint or convert it"
        )
    return _DTYPE_RANK[dtype]


# -- reading the format back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PackedTensor:
    """One quantized matrix as stored: packed codes, float16 scales and zeros, its spec and shape.

    Attributes:
        packed: uint8 [R, ceil(C / 8) * bits].
        scale: float16 [R, G].
        zero: float16 [R, G].
        spec: width and group size.
        shape: (R, C) of the original matrix.
    """

    packed: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    spec: QuantSpec
    shape: tuple[int, int]

    def unpack(self) -> QuantizedTensor:
        """The :class:`alphaq.quantization.QuantizedTensor` (codes unpacked)."""
        from alphaq.quantization.packing import unpack
        from alphaq.quantization.primitives import QuantizedTensor

        q = unpack(self.packed, self.spec.bits, self.shape[1])
        return QuantizedTensor(q=q, scale=self.scale, zero=self.zero, spec=self.spec, shape=self.shape)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``(q - zero) * scale`` [R, C] (float32 unless ``dtype``)."""
        import torch

        from alphaq.quantization.primitives import dequantize_groupwise

        return dequantize_groupwise(self.unpack(), dtype=dtype or torch.float32)


def read_quantization_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``quantization_config`` of a quantized checkpoint's config.json.

    Raises:
        AlphaQError: no config.json, or it is not an alphaq checkpoint of a known format.
    """
    config_file = Path(directory) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlphaQError(f"{config_file}: cannot read ({exc}); pass a folder written by `alphaq quantize`") from exc
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(quant, dict) or quant.get("quant_method") != QUANT_METHOD:
        raise AlphaQError(f"{config_file}: no alphaq quantization_config; pass a folder written by `alphaq quantize`")
    if quant.get("format") != FORMAT:
        raise AlphaQError(
            f"{config_file}: format {quant.get('format')!r}, this alphaq reads {FORMAT}; "
            "re-quantize with this alphaq version"
        )
    return quant


def read_quantized_tensors(
    directory: str | os.PathLike[str], names: Iterable[str] | None = None
) -> dict[str, PackedTensor]:
    """Read the quantized matrices of a checkpoint written by ``alphaq quantize``.

    Args:
        directory: the quantized checkpoint folder.
        names: base names to read (default: every entry of ``quantization_config["tensors"]``).

    Returns:
        Base name -> :class:`PackedTensor` (call ``.unpack()`` / ``.dequantize()`` on it).

    Raises:
        AlphaQError: not an alphaq checkpoint, an unknown name, or stored tensors that disagree with the config.
    """
    import contextlib

    from safetensors import safe_open

    folder = Path(directory)
    entries = read_quantization_config(folder)["tensors"]
    wanted = list(entries) if names is None else list(names)
    unknown = [n for n in wanted if n not in entries]
    if unknown:
        raise AlphaQError(
            f"{folder}: {unknown[0]!r} is not a quantized tensor of this checkpoint; see "
            "config.json quantization_config.tensors"
        )
    index_file = folder / INDEX_FILE
    weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"] if index_file.is_file() else None
    out: dict[str, PackedTensor] = {}
    with contextlib.ExitStack() as stack:
        handles: dict[str, Any] = {}
        for base in wanted:
            entry = entries[base]
            qweight, scales, zeros = quantized_names(base)
            shard = weight_map[qweight] if weight_map is not None else "model.safetensors"
            if shard not in handles:
                handles[shard] = stack.enter_context(safe_open(str(folder / shard), framework="pt"))
            handle = handles[shard]
            spec = QuantSpec(int(entry["bits"]), int(entry["group_size"]))
            rows, cols = (int(v) for v in entry["shape"])
            packed = handle.get_tensor(qweight)
            scale, zero = handle.get_tensor(scales), handle.get_tensor(zeros)
            if tuple(packed.shape) != (rows, packed_row_bytes(cols, spec.bits)):
                raise AlphaQError(
                    f"{folder}: {qweight} has shape {tuple(packed.shape)}, config says {[rows, cols]} "
                    f"at {spec.bits} bits; the checkpoint is corrupt, re-quantize it"
                )
            out[base] = PackedTensor(packed=packed, scale=scale, zero=zero, spec=spec, shape=(rows, cols))
    return out
