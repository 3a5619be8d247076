"""The quantized checkpoint on disk (format ``alphaq-groupwise-v1``): tensor names, the shard layout and the
checkpoint's JSON files.

A plan is executed as *work units*, each producing one or three output tensors:

- ``quantize``: one matrix at ``bits`` < 16 -> ``{base}.qweight`` (uint8, packed codes ``[R, ceil(C/8)*bits]``),
  ``{base}.scales`` and ``{base}.zeros`` (float16 ``[R, ceil(C/group_size)]``), see
  ``docs/quantization-format.md``;
- ``dense``: one matrix of a split fused expert tensor kept at 16 bits -> ``{base}.weight`` ``[R, C]``;
- ``copy``: any other stored tensor, written under its own name with its bytes unchanged.

``base`` is the tensor name without ``.weight`` for a plain 2-D matrix, and a per-expert name for one
expert's matrix of a fused 3-D tensor (:func:`base_name`). Every byte of a shard is a pure function of the
checkpoint and the plan: units are sorted by name, shards are cut at a fixed byte size and the safetensors
header holds no timestamp, so re-running (or resuming) gives identical files. The shards themselves are
streamed by :mod:`alphaq.quantization.shards`, which also reads the format back (:func:`read_quantized_tensors`,
re-exported here). See ``docs/quantize.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alphaq._version import __version__
from alphaq.atomic import write_json, write_with
from alphaq.errors import AlphaQError, CheckpointError
from alphaq.quantization.layout import QuantSpec, num_groups, packed_row_bytes, quantized_nbytes
from alphaq.quantization.shards import (
    FORMAT,
    INDEX_FILE,
    QUANT_METHOD,
    PackedTensor,
    check_dtype,
    quantized_names,
    read_quantization_config,
    read_quantized_tensors,
)

if TYPE_CHECKING:
    from alphaq.load.checkpoint import MatrixRef
    from alphaq.load.safetensors_files import TensorInfo

__all__ = [
    "FORMAT",
    "INDEX_FILE",
    "QUANT_METHOD",
    "PackedTensor",
    "read_quantization_config",
    "read_quantized_tensors",
    "quantized_names",
    "base_name",
    "build_layout",
    "OutputTensor",
    "WorkUnit",
    "OutputShard",
    "quantized_config",
    "write_checkpoint_files",
]

#: Width meaning "not quantized" in a plan.
KEEP_BITS = 16
#: Largest output shard (bytes of tensor data); a single larger tensor gets a shard of its own.
DEFAULT_MAX_SHARD_BYTES = 2 * 10**9
#: Files copied from the source folder beside the shards (tokenizer, generation config, remote code).
AUX_FILE_PATTERNS: tuple[str, ...] = (
    "tokenizer*.json",
    "tokenizer.model",
    "*.tiktoken",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "generation_config.json",
    "chat_template.*",
    "preprocessor_config.json",
    "configuration_*.py",
    "modeling_*.py",
    "tokenization_*.py",
)
_DENSE_DTYPES = ("BF16", "F16", "F32")
_ELEMENT_BYTES = {"BF16": 2, "F16": 2, "F32": 4}
_SCALE_SUFFIXES = ("_scale_inv", "_scale", "_scales")
UnitKind = Literal["quantize", "dense", "copy"]


# -- names -------------------------------------------------------------------------------------------


def base_name(ref: MatrixRef) -> str:
    """The output name stem of one matrix.

    Plain matrix ``X.weight`` -> ``X`` (its tensors are ``X.qweight``/``X.scales``/``X.zeros``). One expert's
    matrix of a fused tensor ``P.experts.gate_up_proj`` (``[E, ...]``) -> ``P.experts.{e}.{proj}_proj``
    (``proj`` = gate/up/down...), the per-expert naming of Mixtral/Qwen checkpoints; when the fused tensor's
    parent is not an ``experts`` module (``P.input_linear.weight``) -> ``P.input_linear.{e}.{proj}_proj``.

    Args:
        ref: a matrix of :attr:`alphaq.load.Checkpoint.matrices`.

    Returns:
        The base name (unique per matrix of a checkpoint).
    """
    stem = ref.tensor[: -len(".weight")] if ref.tensor.endswith(".weight") else ref.tensor
    if not ref.fused:
        return stem
    parent, _, last = stem.rpartition(".")
    owner = parent if parent.rpartition(".")[2] == "experts" and last else stem
    return f"{owner}.{ref.expert}.{ref.proj}_proj"


# -- layout ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputTensor:
    """One tensor of an output shard: name, safetensors dtype, shape and byte size."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class WorkUnit:
    """One step of the run: quantize a matrix, write one split expert matrix as is, or copy a tensor.

    Attributes:
        kind: ``quantize``, ``dense`` or ``copy``.
        key: its name (the base name, or the copied tensor's name); units run in natural order of it.
        source: the matrix name (``MatrixRef.name``) for quantize/dense, the tensor name for copy.
        outputs: the tensors it writes.
        source_bytes: bytes of the checkpoint it reads (its share of a fused/FP8/MXFP4 tensor).
        bits: width (quantize), 16 (dense), None (copy).
        group_size: group size (quantize) else None.
    """

    kind: UnitKind
    key: str
    source: str
    outputs: tuple[OutputTensor, ...]
    source_bytes: int
    bits: int | None = None
    group_size: int | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.outputs)


@dataclass(frozen=True)
class OutputShard:
    """One output safetensors file: its name, the source shard it comes from and its units in write order."""

    name: str
    source_file: str
    units: tuple[WorkUnit, ...]

    @property
    def tensors(self) -> tuple[OutputTensor, ...]:
        return tuple(t for unit in self.units for t in unit.outputs)

    @property
    def nbytes(self) -> int:
        return sum(unit.nbytes for unit in self.units)


def build_layout(
    tensors: Mapping[str, TensorInfo],
    matrices: Sequence[MatrixRef],
    widths: Mapping[str, tuple[int, int | None]],
    scale_tensors: Iterable[str],
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> tuple[OutputShard, ...]:
    """Decide every output tensor and shard (pure: depends on headers and the plan only).

    A stored tensor whose matrices are all planned at 16 bits (or not planned) is copied, with its FP8/MXFP4
    scales. Otherwise its matrices become quantize units (dense units for the 16-bit ones of a fused tensor)
    in the output shard of the source shard that holds it, and the stored tensor and its scales are dropped.
    Each source shard (in sorted order) gives one output shard, cut into several when it exceeds
    ``max_shard_bytes``.

    Args:
        tensors: the checkpoint's stored tensors (``Checkpoint.tensors``).
        matrices: its matrices (``Checkpoint.matrices``).
        widths: matrix name -> (bits, group_size); missing names are kept at 16 bits.
        scale_tensors: stored tensors that are FP8/MXFP4 side data (skipped as "quantization scales").
        max_shard_bytes: largest tensor data per output shard.

    Returns:
        The output shards in write order.

    Raises:
        AlphaQError: two outputs would share a name.
    """
    scales = set(scale_tensors)
    by_tensor: dict[str, list[MatrixRef]] = {}
    for ref in matrices:
        by_tensor.setdefault(ref.tensor, []).append(ref)
    units: dict[Path, list[WorkUnit]] = {}
    consumed: set[str] = set()
    for logical, refs in by_tensor.items():
        if all(widths.get(r.name, (KEEP_BITS, None))[0] == KEEP_BITS for r in refs):
            continue
        stored = [logical] if logical in tensors else [logical + "_blocks"]
        stored += [logical + s for s in _SCALE_SUFFIXES if logical + s in scales]
        if stored[0] not in tensors:
            raise CheckpointError(f"{logical}: stored tensor not found; re-open the checkpoint")
        consumed.update(stored)
        home, dtype = tensors[stored[0]].file, tensors[stored[0]].dtype
        shares = _apportion(sum(tensors[n].nbytes for n in stored), [r.params for r in refs])
        for ref, share in zip(refs, shares):
            bits, group = widths.get(ref.name, (KEEP_BITS, None))
            unit = (
                _quantize_unit(ref, bits, int(group or 0), share)
                if bits != KEEP_BITS
                else _dense_unit(ref, dtype if dtype in _DENSE_DTYPES else "BF16", share)
            )
            units.setdefault(home, []).append(unit)
    for name, info in tensors.items():
        if name not in consumed:
            out = OutputTensor(name, info.dtype, tuple(info.shape), info.nbytes)
            units.setdefault(info.file, []).append(WorkUnit("copy", name, name, (out,), info.nbytes))
    _check_unique(u for group in units.values() for u in group)
    for group in units.values():
        for unit in group:
            check_dtype(unit.outputs[0].dtype)
    chunks: list[tuple[Path, list[WorkUnit]]] = []
    for file in sorted(units):
        current: list[WorkUnit] = []
        size = 0
        for unit in sorted(units[file], key=lambda u: natural_key(u.key)):
            if current and size + unit.nbytes > max_shard_bytes:
                chunks.append((file, current))
                current, size = [], 0
            current.append(unit)
            size += unit.nbytes
        chunks.append((file, current))
    count = len(chunks)
    return tuple(
        OutputShard(shard_file_name(i, count), file.name, tuple(group)) for i, (file, group) in enumerate(chunks)
    )


def shard_file_name(index: int, count: int) -> str:
    """``model.safetensors`` for a single shard, else ``model-{i:05d}-of-{n:05d}.safetensors`` (1-based)."""
    return "model.safetensors" if count == 1 else f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def layout_fingerprint(shards: Sequence[OutputShard]) -> str:
    """sha256 (16 hex) of every shard's name and tensors: resuming requires the same layout."""
    described = [[s.name, [[t.name, t.dtype, list(t.shape)] for t in s.tensors]] for s in shards]
    return hashlib.sha256(json.dumps(described, separators=(",", ":")).encode()).hexdigest()[:16]


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``layers.2`` before ``layers.10``."""
    return [(0, int(tok)) if tok.isdigit() else (1, tok) for tok in re.split(r"(\d+)", name)]


def _quantize_unit(ref: MatrixRef, bits: int, group_size: int, source_bytes: int) -> WorkUnit:
    rows, cols = ref.shape
    base = base_name(ref)
    sizes = quantized_nbytes(rows, cols, QuantSpec(bits, group_size))
    groups = num_groups(cols, group_size)
    qweight, scales, zeros = quantized_names(base)
    outputs = (
        OutputTensor(qweight, "U8", (rows, packed_row_bytes(cols, bits)), sizes.payload),
        OutputTensor(scales, "F16", (rows, groups), sizes.scales),
        OutputTensor(zeros, "F16", (rows, groups), sizes.zeros),
    )
    return WorkUnit("quantize", base, ref.name, outputs, source_bytes, bits, group_size)


def _dense_unit(ref: MatrixRef, dtype: str, source_bytes: int) -> WorkUnit:
    rows, cols = ref.shape
    base = base_name(ref)
    out = OutputTensor(f"{base}.weight", dtype, (rows, cols), rows * cols * _ELEMENT_BYTES[dtype])
    return WorkUnit("dense", base, ref.name, (out,), source_bytes, KEEP_BITS, None)


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights`` that add up to ``total``."""
    whole = sum(weights) or 1
    shares = [total * w // whole for w in weights]
    shares[-1] += total - sum(shares)
    return shares


def _check_unique(units: Iterable[WorkUnit]) -> None:
    seen: dict[str, str] = {}
    for unit in units:
        for tensor in unit.outputs:
            if tensor.name in seen:
                raise AlphaQError(
                    f"output tensor {tensor.name!r} would be written for both {seen[tensor.name]!r} "
                    f"and {unit.source!r}; rename one in the checkpoint or keep it at 16 bits"
                )
            seen[tensor.name] = unit.source


# -- config.json, the index and the copied files -------------------------------------------------------


def quantized_config(
    source_config: Mapping[str, Any],
    shards: Sequence[OutputShard],
    refs: Mapping[str, MatrixRef],
    *,
    method: str,
    plan_fingerprint: str,
    checkpoint_fingerprint: str,
) -> dict[str, Any]:
    """The output ``config.json``: the source config with an alphaq ``quantization_config``.

    ``quantization_config`` holds ``quant_method`` ("alphaq"), ``format``, ``method``, ``alphaq_version``, the plan
    and checkpoint fingerprints, ``tensors`` (base name -> bits, group_size, shape [rows, cols] and where it comes
    from), ``dense_tensors`` (split fused-expert matrices kept at 16 bits, stored as ``{base}.weight``),
    ``fused_tensors`` (each fused source tensor that was split: experts, parts, split, orientation) and, when the
    source was itself quantized (FP8, MXFP4), its original config as ``source_quantization_config``.
    """
    tensors: dict[str, Any] = {}
    dense: dict[str, Any] = {}
    fused: dict[str, Any] = {}
    for unit in (u for shard in shards for u in shard.units if u.kind != "copy"):
        ref = refs[unit.source]
        origin = {"source": ref.name, "tensor": ref.tensor, "layer": ref.layer, "expert": ref.expert, "proj": ref.proj}
        if unit.kind == "quantize":
            tensors[unit.key] = {"bits": unit.bits, "group_size": unit.group_size, "shape": list(ref.shape), **origin}
        else:
            dense[unit.key] = {"dtype": unit.outputs[0].dtype, "shape": list(ref.shape), **origin}
        if ref.fused:
            entry = fused.setdefault(
                ref.tensor, {"split": ref.split, "orientation": ref.orientation, "parts": [], "num_experts": 0}
            )
            if ref.fused_part not in entry["parts"]:
                entry["parts"].append(ref.fused_part)
            entry["num_experts"] = max(entry["num_experts"], int(ref.expert or 0) + 1)
    quant: dict[str, Any] = {
        "quant_method": QUANT_METHOD,
        "format": FORMAT,
        "method": method,
        "alphaq_version": __version__,
        "plan_fingerprint": plan_fingerprint,
        "checkpoint_fingerprint": checkpoint_fingerprint,
        "tensors": tensors,
        "dense_tensors": dense,
        "fused_tensors": fused,
    }
    if source_config.get("quantization_config"):
        quant["source_quantization_config"] = source_config["quantization_config"]
    return {**dict(source_config), "quantization_config": quant}


def index_json(shards: Sequence[OutputShard]) -> dict[str, Any]:
    """``model.safetensors.index.json``: ``metadata.total_size`` (tensor bytes) and the ``weight_map``."""
    weight_map = {t.name: shard.name for shard in shards for t in shard.tensors}
    return {"metadata": {"total_size": sum(s.nbytes for s in shards)}, "weight_map": weight_map}


def write_checkpoint_files(
    source_dir: Path, out: Path, config: Mapping[str, Any], shards: Sequence[OutputShard]
) -> list[str]:
    """Copy the tokenizer/generation files, then write config.json and the index (each atomically).

    Returns:
        Names of the copied files.
    """
    copied = []
    for pattern in AUX_FILE_PATTERNS:
        for source in sorted(source_dir.glob(pattern)):
            if source.is_file() and source.name not in copied:
                write_with(out / source.name, lambda path, src=source: shutil.copyfile(src, path))
                copied.append(source.name)
    write_json(out / "config.json", dict(config))
    write_json(out / INDEX_FILE, index_json(shards))
    return sorted(copied)
