"""A loaded transformers model or a state dict as a :class:`~alphaq.load.checkpoint.Checkpoint`: the same classified
matrices as a checkpoint folder, read from memory (the notebook entry of :func:`alphaq.inspect`).

The matrices are named as the tensors are in memory: transformers 5 holds a layer's experts fused
(``mlp.experts.gate_up_proj`` [E, 2I, H]), so an expert matrix is ``...mlp.experts.gate_up_proj[3].gate`` where the
saved folder has ``...experts.3.w1.weight``; the values, and so every metric, are the same, and the per-expert table is
identical. Nothing is copied up front: each matrix is read (and copied) when it is analysed, as from a folder.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError, CheckpointError, ConfigError
from alphaq.load.architectures import ARCHITECTURES, GENERIC, ArchSpec, check_config, load_pattern_file, spec_for
from alphaq.load.checkpoint import Checkpoint, MatrixRef, SkippedTensor, classify
from alphaq.load.safetensors_files import TensorInfo

#: How an in-memory source is recorded as the checkpoint path (``in-memory:MixtralForCausalLM``).
IN_MEMORY_PREFIX = "in-memory:"

#: torch dtype name -> safetensors dtype string.
_SAFETENSORS_DTYPES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "uint16": "U16",
    "int32": "I32",
    "uint32": "U32",
    "int64": "I64",
    "uint64": "U64",
    "bool": "BOOL",
}
_EXPECTED = "a checkpoint folder, a Hub model id, a transformers PreTrainedModel or a state dict (name -> torch.Tensor)"


def is_in_memory(source: Any) -> bool:
    """True when ``source`` is not a path or model id (None, str, os.PathLike) but an object to read from memory."""
    import os

    return source is not None and not isinstance(source, (str, os.PathLike))


class InMemoryCheckpoint(Checkpoint):
    """A checkpoint whose tensors are in memory. Use :func:`open_in_memory`; do not construct directly."""

    def __init__(
        self,
        label: str,
        config: dict[str, Any],
        source: Mapping[str, Any],
        tensors: dict[str, TensorInfo],
        spec: ArchSpec,
        matrices: list[MatrixRef],
        skipped: list[SkippedTensor],
    ) -> None:
        super().__init__(Path(label), config, tensors, spec, matrices, skipped)
        self._source = source

    @property
    def fingerprint(self) -> str:
        """sha256 over the config (sorted JSON), then each tensor in name order: its name, shape, dtype and every byte.

        Reads all the weights once (about 1 s per GB), so it changes with any weight; the first 16 hex digits.
        It differs from the fingerprint of the same model saved to a folder (which hashes the files).
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(json.dumps(self.config, sort_keys=True, default=str).encode())
            for name in sorted(self.tensors):
                tensor = self._tensor(name)
                digest.update(f"{name}:{list(tensor.shape)}:{self.tensors[name].dtype}".encode())
                flat = tensor.detach().contiguous().reshape(-1).cpu()
                digest.update(flat.view(_torch().uint8).numpy().tobytes() if flat.numel() else b"")
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def read_tensor(self, name: str) -> Any:
        """The tensor as it is in memory (detached; not copied)."""
        return self._tensor(name).detach()

    def read_matrix(self, ref: MatrixRef, *, dtype: Any = None) -> Any:
        """As :meth:`Checkpoint.read_matrix`, always a copy (the model's weights are never handed out)."""
        matrix = super().read_matrix(ref, dtype=dtype)
        source = self._tensor(ref.tensor if ref.tensor in self.tensors else ref.tensor + "_blocks")
        if matrix.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
            matrix = matrix.clone()
        return matrix

    def read_array(self, ref: MatrixRef) -> Any:
        """As :meth:`Checkpoint.read_array`: a float32 numpy copy [out, in], moved to the CPU when needed."""
        import numpy as np

        return np.ascontiguousarray(self.read_matrix(ref).cpu().numpy())

    def _read_slice(self, name: str, index: int) -> Any:
        tensor = self.read_tensor(name)
        rows = self.tensors[name].shape[1]
        if tensor.dim() < len(self.tensors[name].shape):  # experts stacked on dim 0 of a 2-D tensor (DBRX)
            return tensor[index * rows : (index + 1) * rows]
        return tensor[index]

    def _tensor(self, name: str) -> Any:
        try:
            tensor = self._source[name]
        except KeyError as exc:
            raise CheckpointError(f"{self.path}: tensor {name!r} is no longer in the state dict") from exc
        if tensor.device.type == "meta":
            raise CheckpointError(
                f"{self.path}: tensor {name!r} is on the meta device (offloaded); load the model without disk "
                "offload, or inspect its saved folder"
            )
        return tensor


def open_in_memory(
    source: Any, *, model_config: Any = None, pattern_file: str | Path | None = None
) -> InMemoryCheckpoint:
    """Classify the weights of a loaded model or a state dict, as :func:`open_checkpoint` does a folder's.

    Args:
        source: a ``transformers.PreTrainedModel`` (its ``config`` and ``state_dict()``), or a mapping of tensor
            names to ``torch.Tensor`` (a state dict). Tied weights (one storage under two names, such as a tied
            ``lm_head``) are analysed once, under the first name, as ``save_pretrained`` stores them.
        model_config: a state dict's model config (dict or ``PretrainedConfig``) whose ``model_type`` picks the
            tensor patterns; without it the names are matched against every architecture of the table and must be
            read the same way by all that find routed experts.
        pattern_file: JSON tensor patterns for an architecture the table does not know.

    Returns:
        An :class:`InMemoryCheckpoint` (path ``in-memory:<class name>`` or ``in-memory:state_dict``).

    Raises:
        AlphaQError: not a transformers model or a mapping of tensors; ConfigError: the model type cannot be told
            from the names and no config is given; CheckpointError: no 2-D weight.
    """
    tensors, config, label = _unpack(source, model_config)
    infos, aliases = _tensor_infos(tensors, label)
    no_matrix = CheckpointError(
        f"{label}: no 2-D float weight matrix among its {len(tensors)} tensors; pass a model's state dict"
    )
    if not any(len(info.shape) >= 2 and not _is_integer(info.dtype) for info in infos.values()):
        raise no_matrix
    if pattern_file is not None:
        spec = load_pattern_file(Path(pattern_file))
    elif config:
        spec = spec_for(config.get("model_type"))
    else:
        spec = _spec_from_names(infos, label)
    matrices, skipped = classify(infos, spec, {**_hidden_size(infos), **config})
    integer = [m for m in matrices if m.tensor in infos and _is_integer(infos[m.tensor].dtype)]  # not MXFP4
    for name in dict.fromkeys(m.tensor for m in integer):
        skipped.append(SkippedTensor(name, f"{infos[name].dtype} tensor (a buffer or packed weights, not floats)"))
    matrices = [m for m in matrices if m not in integer]
    skipped.extend(SkippedTensor(name, f"tied to {first} (same storage)") for name, first in aliases.items())
    if not matrices:
        raise no_matrix
    return InMemoryCheckpoint(label, config, tensors, infos, spec, matrices, skipped)


# -- internals ---------------------------------------------------------------------------------------


def _unpack(source: Any, model_config: Any) -> tuple[Mapping[str, Any], dict[str, Any], str]:
    """(tensors, config dict, label) of a model or a state dict."""
    transformers = sys.modules.get("transformers")  # a PreTrainedModel means transformers is imported already
    if transformers is not None and isinstance(source, transformers.PreTrainedModel):
        if model_config is not None:
            raise ConfigError("model_config is for a state dict; a transformers model's own config is used")
        label = IN_MEMORY_PREFIX + type(source).__name__
        return source.state_dict(), _checked(_config_dict(source.config, label), label), label
    if isinstance(source, Mapping):
        label = IN_MEMORY_PREFIX + "state_dict"
        config = {} if model_config is None else _checked(_config_dict(model_config, "model_config"), label)
        return source, config, label
    torch = sys.modules.get("torch")
    hint = (
        "; pass its state_dict() (with model_config=) instead"
        if torch is not None and isinstance(source, torch.nn.Module)
        else ""
    )
    raise AlphaQError(
        f"cannot inspect a {type(source).__module__}.{type(source).__qualname__}: expected {_EXPECTED}{hint}"
    )


def _checked(config: dict[str, Any], label: str) -> dict[str, Any]:
    """:func:`check_config` on a config in memory: its error as a ConfigError that names the model config."""
    try:
        return check_config(config, f"{label} model config")
    except CheckpointError as exc:
        raise ConfigError(str(exc).replace("fix config.json or re-download the checkpoint", "fix the config")) from exc


def _config_dict(config: Any, label: str) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise ConfigError(
        f"{label}: model_config must be a dict or a transformers PretrainedConfig, not {type(config).__name__}"
    )


def _tensor_infos(tensors: Mapping[str, Any], label: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """TensorInfo per distinct tensor (integer buffers left out), and the tied aliases (name -> first name)."""
    torch = _torch()
    if not tensors:
        raise CheckpointError(f"{label}: the state dict is empty; pass model.state_dict() of a loaded model")
    infos: dict[str, TensorInfo] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise AlphaQError(f"{label}: key {name!r} is not a string; a state dict maps tensor names to tensors")
        if not isinstance(tensor, torch.Tensor):
            raise AlphaQError(
                f"{label}: {name!r} is a {type(tensor).__name__}, not a torch.Tensor; pass a mapping of names to "
                "torch tensors (torch.from_numpy for arrays)"
            )
        key = (tensor.device, tensor.dtype, tuple(tensor.shape), tensor.stride(), _storage_address(tensor))
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        dtype = _SAFETENSORS_DTYPES.get(str(tensor.dtype).removeprefix("torch."), str(tensor.dtype))
        infos[name] = TensorInfo(
            name, dtype, tuple(int(d) for d in tensor.shape), Path(label), tensor.numel() * tensor.element_size()
        )
    return infos, aliases


def _storage_address(tensor: Any) -> int | None:
    if tensor.device.type == "meta" or tensor.numel() == 0:
        return None  # no storage to share: never an alias (same-shaped meta tensors are distinct weights)
    return tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size()


def _spec_from_names(infos: dict[str, TensorInfo], label: str) -> ArchSpec:
    """The architecture row that reads the routed experts, when every row that finds them reads them alike."""
    readings: dict[tuple[MatrixRef, ...], list[ArchSpec]] = {}
    hidden = _hidden_size(infos)
    for spec in (*ARCHITECTURES, GENERIC):
        matrices, _ = classify(dict(infos), spec, hidden)  # a copy: classify reshapes stacked tensors' entries
        experts = tuple(m for m in matrices if m.role.value == "expert")
        if experts:
            readings.setdefault(experts, []).append(spec)
    if len(readings) == 1:
        specs = next(iter(readings.values()))
        return GENERIC if GENERIC in specs else specs[0]
    fix = "pass model_config= (the model's config, or a dict with its model_type)"
    if not readings:
        raise ConfigError(f"{label}: no routed expert recognised from the tensor names alone; {fix}")
    types = [specs[0].model_types[0] for specs in readings.values()]  # one architecture per way of reading them
    raise ConfigError(f"{label}: the {' and '.join(types)} patterns read its experts differently; {fix}")


def _is_integer(dtype: str) -> bool:
    return dtype == "BOOL" or dtype.startswith(("U", "I"))


def _hidden_size(infos: dict[str, TensorInfo]) -> dict[str, int]:
    """``hidden_size`` from the embedding [vocab, hidden] (decides fused experts' orientation without a config)."""
    for name, info in infos.items():
        if name.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight")) and len(info.shape) == 2:
            return {"hidden_size": info.shape[1]}
    return {}


def _torch() -> Any:
    import torch

    return torch
