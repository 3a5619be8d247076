"""A Hugging Face checkpoint folder opened lazily: every weight matrix classified, read one at a time.

Only this module (with :mod:`alphaq.load.safetensors_files`) touches checkpoint files. Opening reads
``config.json`` and the safetensors headers; weights are read on demand, one tensor (or one expert's
slice of a fused 3-D tensor) at a time, so peak memory is about the largest tensor plus its float copy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alphaq.errors import CheckpointError
from alphaq.load.architectures import ArchSpec, Role, check_config, load_pattern_file, match_tensor, spec_for
from alphaq.load.safetensors_files import (
    NUMPY_FLOATS,
    TensorInfo,
    list_shards,
    read_float_array,
    read_header,
    read_index,
)
from alphaq.load.weights import dequantize_tensor, fused_expert_slice


@dataclass(frozen=True)
class MatrixRef:
    """One 2-D weight matrix of the checkpoint, [out, in].

    Attributes:
        name: unique id. The tensor name for plain matrices; ``"{tensor}[{e}]"`` or ``"{tensor}[{e}].gate"``
            / ``".up"`` for one expert's slice of a fused 3-D tensor.
        tensor: the checkpoint tensor that holds it.
        layer: decoder layer index, or None (embeddings, lm_head).
        expert: routed expert index, or None.
        proj: canonical projection (gate, up, down, q, k, v, o, router, embed, lm_head, ...).
        role: what the matrix does.
        shape: (out, in) after splitting and orienting.
        dtype: safetensors dtype of the stored tensor.
        fused_part: for fused tensors, which part of the expert slice (``"gate"``, ``"up"`` or ``""``).
    """

    name: str
    tensor: str
    layer: int | None
    expert: int | None
    proj: str
    role: Role
    shape: tuple[int, int]
    dtype: str
    fused: bool = False
    fused_part: str = ""
    split: str = "none"
    orientation: str = "out_in"

    @property
    def params(self) -> int:
        return self.shape[0] * self.shape[1]


@dataclass(frozen=True)
class SkippedTensor:
    """A tensor that is not analysed, and why (1-D, MTP layer, quantization side data...)."""

    name: str
    reason: str


class Checkpoint:
    """A local checkpoint folder: config, tensor list, classified matrices and lazy reads.

    Use :func:`open_checkpoint`; do not construct directly.
    """

    def __init__(
        self,
        path: Path,
        config: dict[str, Any],
        tensors: dict[str, TensorInfo],
        spec: ArchSpec,
        matrices: list[MatrixRef],
        skipped: list[SkippedTensor],
    ) -> None:
        self.path = path
        self.config = config
        self.tensors = tensors
        self.spec = spec
        self.matrices = matrices
        self.skipped = skipped
        self._fingerprint: str | None = None

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    @property
    def num_layers(self) -> int | None:
        value = _config_value(self.config, ("num_hidden_layers", "n_layer", "num_layers"))
        return int(value) if value is not None else None

    @property
    def num_experts(self) -> int | None:
        value = _config_value(self.config, self.spec.num_experts_keys)
        if value is not None:
            return int(value)
        experts = {m.expert for m in self.matrices if m.expert is not None}
        return max(experts) + 1 if experts else None

    def experts(self) -> list[MatrixRef]:
        """The routed-expert matrices."""
        return [m for m in self.matrices if m.role is Role.EXPERT]

    @property
    def fingerprint(self) -> str:
        """sha256 over config.json, every shard's header, size, and 16 samples of 64 KiB of its bytes.

        Cheap (reads ~1 MiB per shard) yet changes when the weights change, not only the layout.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(json.dumps(self.config, sort_keys=True).encode())
            for shard in sorted({t.file for t in self.tensors.values()}):
                size = shard.stat().st_size
                digest.update(f"{shard.name}:{size}".encode())
                with shard.open("rb") as fh:
                    for i in range(16):
                        fh.seek(size * i // 16)
                        digest.update(fh.read(65536))
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def read_tensor(self, name: str) -> Any:
        """Read one stored tensor as it is in the file (torch tensor, original dtype)."""
        from safetensors import SafetensorError, safe_open

        info = self._info(name)
        try:
            with safe_open(str(info.file), framework="pt") as fh:
                return fh.get_tensor(name)
        except (OSError, RuntimeError, ValueError, SafetensorError) as exc:  # torch cannot hold F6, odd-sized F4
            raise CheckpointError(
                f"{info.file}: cannot read tensor {name!r} ({exc}); the shard may be corrupt"
            ) from exc

    def read_matrix(self, ref: MatrixRef, *, dtype: Any = None) -> Any:
        """Read one matrix as a float tensor [out, in], dequantized (FP8 blocks, MXFP4) and split if fused.

        Args:
            ref: a matrix of :attr:`matrices`.
            dtype: torch dtype of the result (default float32).

        Returns:
            torch.Tensor of shape ``ref.shape``.
        """
        import torch

        dtype = dtype or torch.float32
        if ref.fused:
            raw = self._read_expert_slice(ref)
            matrix = fused_expert_slice(raw, ref.fused_part, ref.split, ref.orientation)
        else:
            matrix = dequantize_tensor(
                ref.tensor, self.read_tensor(ref.tensor), self._scale_for(ref.tensor), self._block_size()
            )
        if tuple(matrix.shape) != ref.shape:
            raise CheckpointError(f"{ref.name}: read shape {tuple(matrix.shape)} differs from header shape {ref.shape}")
        return matrix.to(dtype)

    def read_array(self, ref: MatrixRef) -> Any:
        """Read one matrix as a float32 numpy array [out, in], without importing torch when it can.

        Plain float tensors (F32/F16/BF16/F64, fused or not) are read with :func:`read_float_array`; quantized
        ones (FP8 blocks, MXFP4) go through :meth:`read_matrix` (torch). The values equal ``read_matrix``'s.

        Args:
            ref: a matrix of :attr:`matrices`.

        Returns:
            C-contiguous float32 ``numpy.ndarray`` of shape ``ref.shape``.
        """
        import numpy as np

        info = self.tensors.get(ref.tensor)
        if info is None or info.dtype not in NUMPY_FLOATS or info.offset is None:
            return self.read_matrix(ref, dtype=None).numpy()
        if ref.fused:
            raw = read_float_array(info, ref.expert)  # [out, in] or [in, out]
            matrix = raw if ref.orientation == "out_in" else raw.T  # [out, in]
            if ref.fused_part:
                index = 0 if ref.fused_part == "gate" else 1
                half = matrix.shape[0] // 2
                matrix = matrix[index::2] if ref.split == "interleaved" else matrix[index * half : (index + 1) * half]
            matrix = np.ascontiguousarray(matrix)
        else:
            matrix = read_float_array(info)
        if tuple(matrix.shape) != ref.shape:
            raise CheckpointError(f"{ref.name}: read shape {tuple(matrix.shape)} differs from header shape {ref.shape}")
        return matrix

    # -- internals -------------------------------------------------------------------------------------
    def _info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError as exc:
            raise CheckpointError(f"{self.path}: tensor {name!r} is not in the checkpoint") from exc

    def _scale_for(self, name: str) -> Any:
        for suffix in ("_scale_inv", "_scale"):
            if name + suffix in self.tensors and self.tensors[name].dtype.startswith("F8"):
                return self.read_tensor(name + suffix)
        if name + "_scales" in self.tensors:  # MXFP4: name is the *_blocks tensor's stem
            return self.read_tensor(name + "_scales")
        return None

    def _block_size(self) -> tuple[int, int]:
        quant = self.config.get("quantization_config") or {}
        block = quant.get("weight_block_size") or [128, 128]
        return int(block[0]), int(block[1])

    def _read_expert_slice(self, ref: MatrixRef) -> Any:
        assert ref.expert is not None
        if ref.tensor + "_blocks" in self.tensors:  # MXFP4 fused experts
            blocks = self._read_slice(ref.tensor + "_blocks", ref.expert)
            scales = self._read_slice(ref.tensor + "_scales", ref.expert)
            return dequantize_tensor(ref.tensor + "_blocks", blocks, scales, self._block_size())
        raw = self._read_slice(ref.tensor, ref.expert)
        scale = self._scale_for(ref.tensor)
        if scale is not None and scale.dim() == 3:
            scale = scale[ref.expert]
        return dequantize_tensor(ref.tensor, raw, scale, self._block_size())

    def _read_slice(self, name: str, index: int) -> Any:
        from safetensors import SafetensorError, safe_open

        info = self._info(name)
        try:
            with safe_open(str(info.file), framework="pt") as fh:
                tensor_slice = fh.get_slice(name)
                if len(tensor_slice.get_shape()) < len(info.shape):  # experts stacked on dim 0 of a 2-D tensor
                    return tensor_slice[index * info.shape[1] : (index + 1) * info.shape[1]]
                return tensor_slice[index]
        except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
            raise CheckpointError(
                f"{info.file}: cannot read tensor {name!r} ({exc}); the shard may be corrupt"
            ) from exc


def open_checkpoint(path: str | Path, *, pattern_file: str | Path | None = None) -> Checkpoint:
    """Open a local Hugging Face checkpoint folder from its config and headers (no weights read).

    Args:
        path: folder with ``config.json`` and ``*.safetensors`` (single file or sharded with an index), or a
            Hugging Face model id (``owner/name[@revision]``, :func:`alphaq.load.hub.resolve_model`).
        pattern_file: optional JSON pattern file for architectures the table does not know.

    Returns:
        A :class:`Checkpoint` whose ``matrices`` lists every 2-D weight, fused experts split per expert.

    Raises:
        CheckpointError: missing path, no safetensors, corrupt header, tensor in the index but missing.
    """
    from alphaq.load.hub import resolve_model

    directory = resolve_model(path)  # a folder, or a Hugging Face model id (downloaded, or the offline cache)
    if not directory.exists():
        raise CheckpointError(
            f"{directory}: no such checkpoint folder; pass a local Hugging Face model directory or a "
            "Hub model id (owner/name)"
        )
    if directory.is_file():
        raise CheckpointError(f"{directory}: is a file; pass the checkpoint folder that holds it")
    config = _read_config(directory)
    shards = list_shards(directory)
    tensors: dict[str, TensorInfo] = {}
    for shard in shards:
        shard_tensors, _ = read_header(shard)
        tensors.update(shard_tensors)
    index_files = sorted(directory.glob("*.safetensors.index.json"))
    if index_files:
        missing = [n for n in read_index(index_files[0]) if n not in tensors]
        if missing:
            raise CheckpointError(
                f"{directory}: tensor {missing[0]!r} is listed in {index_files[0].name} but missing from its shard "
                f"({len(missing)} missing in all); re-download the checkpoint"
            )
    spec = load_pattern_file(Path(pattern_file)) if pattern_file else spec_for(config.get("model_type"))
    matrices, skipped = classify(tensors, spec, config)
    if not matrices:
        raise CheckpointError(f"{directory}: no 2-D weight matrix found; is this a model checkpoint?")
    return Checkpoint(directory, config, tensors, spec, matrices, skipped)


def classify(
    tensors: dict[str, TensorInfo], spec: ArchSpec, config: dict[str, Any]
) -> tuple[list[MatrixRef], list[SkippedTensor]]:
    """Turn the tensor list into classified matrices (fused experts split), and the skipped rest."""
    hidden = _config_value(config, ("hidden_size", "d_model", "n_embd"))
    max_layers = _config_value(config, (spec.ignore_layers_from_key,)) if spec.ignore_layers_from_key else None
    matrices: list[MatrixRef] = []
    skipped: list[SkippedTensor] = []
    for name in sorted(tensors, key=_natural_key):
        info = tensors[name]
        logical, shape, dtype = name, info.shape, info.dtype
        if name.endswith(("_scale_inv", "_scales", "weight_scale", "input_scale")) and _is_side_data(name, tensors):
            skipped.append(SkippedTensor(name, "quantization scales"))
            continue
        if name.endswith("_blocks") and name[: -len("_blocks")] + "_scales" in tensors and len(shape) >= 2:  # MXFP4
            logical = name[: -len("_blocks")]
            shape = (*info.shape[:-2], info.shape[-2] * info.shape[-1] * 2)
        if name.endswith(("bias", "_bias")):
            skipped.append(SkippedTensor(name, "bias"))
            continue
        if len(shape) < 2:
            skipped.append(SkippedTensor(name, f"{len(shape)}-D tensor (norm, bias or scalar)"))
            continue
        if name.endswith(".A_log"):  # Mamba-1's [d_inner, d_state] A_log (Jamba): the converter writes -exp(A), F32
            skipped.append(SkippedTensor(name, "state-space decay A_log (kept F32, not a weight matrix)"))
            continue
        if 0 in shape:
            skipped.append(SkippedTensor(name, f"empty tensor {list(shape)}"))
            continue
        if name.startswith(("mtp.", "model.mtp.")):  # Qwen3-Next / Qwen3.5: mtp.layers.0.* is not decoder layer 0
            skipped.append(SkippedTensor(name, "multi-token-prediction layer (not part of the decoder)"))
            continue
        match = match_tensor(spec, logical)
        if match is not None and max_layers is not None and match.layer is not None and match.layer >= int(max_layers):
            skipped.append(SkippedTensor(name, "multi-token-prediction layer (not part of the decoder)"))
            continue
        if match is not None and match.rule.stacked and len(shape) == 2:  # DBRX: [E * out, in] -> [E, out, in]
            num_experts = _config_value(config, spec.num_experts_keys)
            if num_experts and shape[0] % int(num_experts) == 0:
                shape = (int(num_experts), shape[0] // int(num_experts), shape[1])
                tensors[name] = replace(info, shape=shape)
        if match is not None and match.rule.fused and len(shape) == 3:
            orientation = (
                "out_in" if logical != name else _orientation(match.rule.orientation, match.proj, shape, hidden)
            )
            matrices.extend(_split_fused(logical, match, shape, dtype, orientation))
            continue
        if len(shape) != 2:
            skipped.append(SkippedTensor(name, f"{len(shape)}-D tensor that no fused-expert pattern matches"))
            continue
        role = match.rule.role if match else Role.OTHER
        matrices.append(
            MatrixRef(
                name=logical,
                tensor=logical,
                layer=match.layer if match else _layer_of(name),
                expert=match.expert if match else None,
                proj=match.proj if match else "weight",
                role=role,
                shape=(int(shape[0]), int(shape[1])),
                dtype=dtype,
            )
        )
    return matrices, skipped


def _split_fused(tensor: str, match: Any, shape: tuple[int, ...], dtype: str, orientation: str) -> list[MatrixRef]:
    num_experts = shape[0]
    out_dim, in_dim = (shape[1], shape[2]) if orientation == "out_in" else (shape[2], shape[1])
    parts: list[tuple[str, str, int]]
    if match.proj == "gate_up":
        parts = [("gate", "gate", out_dim // 2), ("up", "up", out_dim // 2)]
    else:
        parts = [("", match.proj, out_dim)]
    refs = []
    for e in range(num_experts):
        for part, proj, rows in parts:
            refs.append(
                MatrixRef(
                    name=f"{tensor}[{e}]" + (f".{part}" if part else ""),
                    tensor=tensor,
                    layer=match.layer,
                    expert=e,
                    proj=proj,
                    role=match.rule.role,
                    shape=(int(rows), int(in_dim)),
                    dtype=dtype,
                    fused=True,
                    fused_part=part,
                    split=match.rule.split,
                    orientation=orientation,
                )
            )
    return refs


def _orientation(rule_orientation: str, proj: str, shape: tuple[int, ...], hidden: Any) -> str:
    """Decide [E, out, in] vs [E, in, out] for a fused tensor; out_in (transformers v5) when ambiguous."""
    if rule_orientation != "auto":
        return rule_orientation
    if hidden is None:
        return "out_in"
    _, a, b = shape
    if proj == "gate_up":  # out = 2I, in = H
        return "in_out" if (a == hidden and b != hidden) else "out_in"
    return "in_out" if (b == hidden and a != hidden) else "out_in"  # down: out = H, in = I


def _is_side_data(name: str, tensors: dict[str, TensorInfo]) -> bool:
    for suffix in ("_scale_inv", "_scales", "_scale"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return stem in tensors or stem + "_blocks" in tensors or (stem.endswith("weight") and stem in tensors)
    return name.endswith("input_scale")


def _read_config(directory: Path) -> dict[str, Any]:
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{directory}: no config.json; pass a Hugging Face checkpoint folder (save_pretrained output)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc}); re-download or fix it") from exc
    return check_config(config, str(config_file))  # types and ranges of the fields alphaq reads


def _config_value(config: dict[str, Any], keys: Iterable[str | None]) -> Any:
    for source in (config, config.get("text_config") or {}, config.get("ffn_config") or {}):
        for key in keys:
            if key and source.get(key) is not None:
                return source[key]
    return None


def _layer_of(name: str) -> int | None:
    import re

    m = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def _natural_key(name: str) -> list[Any]:
    import re

    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]
