"""Load a checkpoint written by ``alphaq quantize`` as a runnable transformers model (``alphaq.load_quantized``).

The model is transformers' own class built from its config on the meta device (no weight is allocated twice).
Every other tensor of the checkpoint is loaded with transformers' own renames and merges, then each MoE block's
experts module, whatever it is called, is found from where transformers puts the routed-expert tensors
(:mod:`alphaq.quantization.expert_map`) and replaced:

- a ``@use_experts_implementation`` experts class (nearly every MoE of transformers 5) by a
  :class:`~alphaq.quantization.modules.QuantizedExperts` with one :class:`~alphaq.quantization.modules.QuantLinear`
  (quantized) or ``nn.Linear`` (kept at 16 bits) per expert projection, running the class's own gating;
- a per-expert ``nn.Linear`` by a :class:`~alphaq.quantization.modules.QuantLinear`;
- any other experts class (DBRX, JetMoE, Llama 4, ERGO) keeps its forward: its fused parameters are filled from the
  packed experts while its block runs (:class:`~alphaq.quantization.modules.PackedExpertWeights`).

The router and the rest of each block are transformers' own. Types that cannot be served are
:data:`UNSUPPORTED_MODEL_TYPES`, each with its one-line reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from alphaq.load.checkpoint import Checkpoint

__all__ = ["EXPERT_LAYOUTS", "UNSUPPORTED_MODEL_TYPES", "load_quantized", "supports_model_type"]

_PROJS = ("gate", "up", "down")

#: model_type -> why load_quantized cannot serve it (one line); every other MoE type of transformers is served.
UNSUPPORTED_MODEL_TYPES: dict[str, str] = {}


def supports_model_type(model_type: str) -> bool:
    """True unless ``model_type`` is one of :data:`UNSUPPORTED_MODEL_TYPES`."""
    return model_type not in UNSUPPORTED_MODEL_TYPES


class _ServedTypes:
    """``model_type in EXPERT_LAYOUTS``: the name older callers test (every type but the unsupported ones)."""

    def __contains__(self, model_type: object) -> bool:
        return isinstance(model_type, str) and supports_model_type(model_type)


#: Kept for callers of the former per-type table: ``model_type in EXPERT_LAYOUTS`` is :func:`supports_model_type`.
EXPERT_LAYOUTS = _ServedTypes()


@dataclass(frozen=True)
class _ExpertSource:
    """Where one expert matrix comes from: a quantized base name, a split dense ``{base}.weight``, or a matrix.

    ``tensor`` is the source checkpoint tensor, ``part`` the gate/up half of a fused gate|up slice and ``fused``
    the fused tensor's layout (split, orientation, stacked) as alphaq read it, None for a per-expert tensor.
    """

    kind: str  # "quantized" | "dense" | "matrix"
    name: str  # base name (quantized, dense) or MatrixRef.name (matrix)
    tensor: str
    part: str = ""
    fused: dict[str, Any] | None = None


def load_quantized(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a quantized checkpoint folder (``alphaq quantize --out``) as a causal LM that generates text.

    The routed experts run from their packed weights (:class:`~alphaq.quantization.modules.QuantLinear`: the fused
    Triton dequant-matmul on CUDA, the torch reference on CPU); every other weight is loaded in ``dtype``.

    Args:
        path: the quantized checkpoint folder.
        device: where to place the model.
        dtype: dtype of the unquantized weights and activations; ``None`` means ``torch.float32``.

    Returns:
        ``(model, tokenizer)``, the model in eval mode.

    Raises:
        AlphaQError: not an alphaq checkpoint; CheckpointError: an unsupported architecture, a matrix quantized
            outside the routed experts, or tensors missing from / left over in the checkpoint.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from alphaq.load import open_checkpoint
    from alphaq.load.model import read_config, transformers_load_errors
    from alphaq.quantization.expert_map import ModelNames
    from alphaq.quantization.experts_swap import place_sources, swap_experts
    from alphaq.quantization.shards import read_quantization_config

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} is not a checkpoint folder (no config.json); pass a folder written by `alphaq quantize`"
        )
    quant = read_quantization_config(folder)
    model_type = str(read_config(folder / "config.json").get("model_type"))
    if not supports_model_type(model_type):
        raise CheckpointError(
            f"{folder}: load_quantized cannot serve model_type {model_type!r}: {UNSUPPORTED_MODEL_TYPES[model_type]}"
        )
    _check_experts_only(folder, quant)
    dtype = torch.float32 if dtype is None else dtype
    ckpt = open_checkpoint(folder)
    sources = _expert_sources(ckpt, quant)

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except transformers_load_errors() as exc:  # a config.json field of another type, or sizes that do not fit
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{folder}/config.json: transformers cannot build the model from it ({first_line}); "
            "fix it or re-run alphaq quantize"
        ) from exc
    names = ModelNames(model)
    placed = place_sources(folder, names, sources, model_type)
    consumed = _quantized_tensor_names(quant) | {s.tensor for s in sources.values() if s.kind == "matrix"}
    _load_remaining(model, ckpt, consumed, dtype)
    swap_experts(model, ckpt, folder, placed, dtype)
    _finish(model, ckpt)
    model.to(device)
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{folder}: cannot load the tokenizer ({first_line}); copy the source checkpoint's "
            "tokenizer files into this folder"
        ) from exc
    return model, tokenizer


def _check_experts_only(folder: Path, quant: Mapping[str, Any]) -> None:
    """Refuse quantized or split matrices that are not routed-expert gate/up/down (no runtime module for them yet)."""
    for section in ("tensors", "dense_tensors"):
        for base, entry in quant.get(section, {}).items():
            if entry.get("expert") is None or entry.get("layer") is None or entry.get("proj") not in _PROJS:
                raise CheckpointError(
                    f"{folder}: {base} is quantized but is not a routed-expert gate/up/down matrix; "
                    "load_quantized only runs quantized experts so far, re-plan it at 16 bits"
                )


def _quantized_tensor_names(quant: Mapping[str, Any]) -> set[str]:
    names = {f"{base}.{suffix}" for base in quant.get("tensors", {}) for suffix in ("qweight", "scales", "zeros")}
    return names | {f"{base}.weight" for base in quant.get("dense_tensors", {})}


def _expert_sources(ckpt: Checkpoint, quant: Mapping[str, Any]) -> dict[tuple[int, int, str], _ExpertSource]:
    """(layer, expert, proj) -> where that routed-expert matrix is stored in the quantized checkpoint."""
    sources: dict[tuple[int, int, str], _ExpertSource] = {}
    fused_tensors = quant.get("fused_tensors", {})
    for kind, section in (("quantized", "tensors"), ("dense", "dense_tensors")):
        for base, entry in quant.get(section, {}).items():
            tensor = str(entry.get("tensor") or base)
            layout = fused_tensors.get(tensor)
            origin = str(entry.get("source") or "")
            part = origin.rpartition(".")[2] if origin.endswith((".gate", ".up")) else ""
            fused = None if layout is None else {**layout, "stacked": layout.get("num_experts", 0)}
            key = (int(entry["layer"]), int(entry["expert"]), str(entry["proj"]))
            sources[key] = _ExpertSource(kind, base, tensor, part, fused)
    stored = _quantized_tensor_names(quant)
    for ref in ckpt.matrices:
        if ref.role.value != "expert" or ref.tensor in stored or ref.layer is None or ref.expert is None:
            continue
        fused = None
        if ref.fused:
            fused = {"split": ref.split, "orientation": ref.orientation, "stacked": ckpt.num_experts or 0}
        sources.setdefault(
            (ref.layer, ref.expert, ref.proj), _ExpertSource("matrix", ref.name, ref.tensor, ref.fused_part, fused)
        )
    return sources


def _load_remaining(model: Any, ckpt: Checkpoint, consumed: set[str], dtype: torch.dtype) -> None:
    """Load every tensor not consumed by the experts into ``model`` with transformers' renames and merges."""
    from safetensors import SafetensorError, safe_open

    by_file: dict[Path, list[str]] = {}
    for name, info in ckpt.tensors.items():
        if name not in consumed:
            by_file.setdefault(Path(info.file), []).append(name)
    state: dict[str, torch.Tensor] = {}
    for file, names in sorted(by_file.items()):
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in names:
                    tensor = handle.get_tensor(name)
                    state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        except (OSError, RuntimeError, SafetensorError) as exc:
            raise CheckpointError(f"{file}: cannot read its tensors ({exc}); re-run alphaq quantize") from exc
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import convert_and_load_state_dict_in_model
        from transformers.modeling_utils import LoadStateDictConfig
    except ImportError:  # another transformers: names taken as they are
        unexpected = _assign(model, ckpt, state)
    else:
        config = LoadStateDictConfig(dtype=dtype, weight_mapping=get_model_conversion_mapping(model))
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # its "Loading weights" bar would print on stderr (restored below)
        try:
            info, _ = convert_and_load_state_dict_in_model(model=model, state_dict=state, load_config=config)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        mismatched = sorted(info.mismatched_keys)
        if mismatched or info.conversion_errors:
            first = mismatched[0] if mismatched else next(iter(info.conversion_errors))
            raise CheckpointError(
                f"{ckpt.path}: a tensor does not fit the model its config.json describes ({first}); "
                "re-run alphaq quantize on the source checkpoint"
            )
        ignored = getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []
        unexpected = [k for k in sorted(info.unexpected_keys) if not any(re.search(p, k) for p in ignored)]
    if unexpected:
        raise CheckpointError(
            f"{ckpt.path}: {len(unexpected)} tensor(s) match no model weight (first: "
            f"{unexpected[0]}); the checkpoint does not fit this model class"
        )


def _assign(model: Any, ckpt: Checkpoint, state: dict[str, torch.Tensor]) -> list[str]:
    """Plain ``load_state_dict`` (no renames); returns the unexpected keys."""
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # a stored tensor whose shape is not the model's
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:200])
        raise CheckpointError(
            f"{ckpt.path}: a tensor does not fit the model its config.json describes ({detail}); "
            "re-run alphaq quantize on the source checkpoint"
        ) from exc
    return list(result.unexpected_keys)


def _finish(model: Any, ckpt: Checkpoint) -> None:
    """Tie weights, materialize non-persistent buffers, and check that no weight is left on the meta device."""
    import torch

    model.tie_weights()
    # Non-persistent buffers (rotary inv_freq) are not in the checkpoint: materialize them on the CPU and let the
    # model's own initializer recompute them, as transformers' from_pretrained does after a meta-device build.
    owners = set()
    for name, buffer in _non_persistent_buffers(model):
        if buffer.device.type != "meta":
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        owner.register_buffer(attr, torch.empty_like(buffer, device="cpu"), persistent=False)
        owners.add(owner_name)
    for owner_name in sorted(owners):
        model._init_weights(model.get_submodule(owner_name))
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if on_meta:
        raise CheckpointError(
            f"{ckpt.path}: {len(on_meta)} model weight(s) are not in the checkpoint (first: "
            f"{on_meta[0]}); the checkpoint is incomplete"
        )


def _non_persistent_buffers(model: Any) -> list[tuple[str, Any]]:
    out = []
    for module_name, module in model.named_modules():
        for attr in getattr(module, "_non_persistent_buffers_set", ()):
            if getattr(module, attr, None) is not None:
                out.append((f"{module_name}.{attr}" if module_name else attr, getattr(module, attr)))
    return out
