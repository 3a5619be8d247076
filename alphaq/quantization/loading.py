"""Load a checkpoint written by ``alphaq quantize`` as a runnable transformers model (``alphaq.load_quantized``).

The model is built from its config on the meta device (no weight is allocated twice), each MoE layer's fused
experts module is replaced by a :class:`~alphaq.quantization.modules.QuantizedExperts` whose per-expert gate/up/down
are :class:`~alphaq.quantization.modules.QuantLinear` (quantized matrices) or ``nn.Linear`` (matrices kept at 16
bits), and every other tensor of the checkpoint is loaded into the model as in the source. Which architectures
are supported, and how the checkpoint names map onto the model, is the table :data:`EXPERT_LAYOUTS`.
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

    from alphaq.load.checkpoint import Checkpoint, MatrixRef

__all__ = ["ExpertsLayout", "EXPERT_LAYOUTS", "load_quantized"]

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_PROJS = ("gate", "up", "down")


@dataclass(frozen=True)
class ExpertsLayout:
    """How one architecture holds its routed experts in transformers, and how checkpoint names map onto it.

    Attributes:
        experts_classes: class names of the fused experts modules to replace; each must have the forward
            ``(hidden_states [T, H], top_k_index [T, K], top_k_weights [T, K]) -> [T, H]`` of ``MixtralExperts``
            and an ``act_fn``.
        renames: ``(regex, replacement)`` applied in order to every checkpoint tensor name that is loaded as is
            (legacy names of the source checkpoint -> transformers' module names).
    """

    experts_classes: tuple[str, ...]
    renames: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.experts_classes:
            raise ValueError("ExpertsLayout needs at least one experts class name")

    def rename(self, name: str) -> str:
        """The model's name of checkpoint tensor ``name``."""
        for pattern, replacement in self.renames:
            name = re.sub(pattern, replacement, name)
        return name


#: Supported ``model_type`` -> its experts layout.
EXPERT_LAYOUTS: dict[str, ExpertsLayout] = {
    "mixtral": ExpertsLayout(("MixtralExperts",), ((r"\.block_sparse_moe\.", ".mlp."),)),
    "qwen2_moe": ExpertsLayout(("Qwen2MoeExperts",)),
    "qwen3_moe": ExpertsLayout(("Qwen3MoeExperts",)),
    "olmoe": ExpertsLayout(("OlmoeExperts",)),
}


@dataclass(frozen=True)
class _ExpertSource:
    """Where one expert matrix comes from: a quantized base name, a split dense ``{base}.weight``, or a matrix."""

    kind: str  # "quantized" | "dense" | "matrix"
    name: str  # base name (quantized, dense) or MatrixRef.name (matrix)


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
    from alphaq.quantization.shards import read_quantization_config

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} is not a checkpoint folder (no config.json); pass a folder written by `alphaq quantize`"
        )
    quant = read_quantization_config(folder)
    model_type = str(read_config(folder / "config.json").get("model_type"))
    layout = EXPERT_LAYOUTS.get(model_type)
    if layout is None:
        raise CheckpointError(
            f"{folder}: load_quantized does not support model_type {model_type!r} yet (supported: "
            f"{', '.join(sorted(EXPERT_LAYOUTS))}); dequantize it or load the source checkpoint"
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
    experts_modules = [
        (name, module) for name, module in model.named_modules() if type(module).__name__ in layout.experts_classes
    ]
    if not experts_modules:
        raise CheckpointError(
            f"{folder}: no {'/'.join(layout.experts_classes)} module in the {model_type} model of "
            "this transformers version; use the transformers version alphaq supports"
        )

    consumed = _quantized_tensor_names(quant)
    for name, module in experts_modules:
        match = _LAYER_RE.search(name + ".")
        if match is None:
            raise CheckpointError(f"{name}: cannot tell the decoder layer of this experts module; report this model")
        layer = int(match.group(1))
        new_module, used = _build_experts(
            ckpt, folder, quant, sources, layer, int(module.num_experts), module.act_fn, dtype, _expert_shapes(module)
        )
        consumed |= used
        model.set_submodule(name, new_module)

    _load_remaining(model, ckpt, layout, consumed, dtype)
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
    for kind, section in (("quantized", "tensors"), ("dense", "dense_tensors")):
        for base, entry in quant.get(section, {}).items():
            sources[(int(entry["layer"]), int(entry["expert"]), str(entry["proj"]))] = _ExpertSource(kind, base)
    stored = _quantized_tensor_names(quant)
    for ref in ckpt.matrices:
        if ref.role.value != "expert" or ref.tensor in stored or ref.layer is None or ref.expert is None:
            continue
        sources.setdefault((ref.layer, ref.expert, ref.proj), _ExpertSource("matrix", ref.name))
    return sources


def _expert_shapes(module: Any) -> dict[str, tuple[int, int]]:
    """[out, in] of each projection of one expert of a transformers experts module (from its meta parameters
    ``gate_up_proj`` [E, 2I, H] and ``down_proj`` [E, H, I])."""
    gate_up = getattr(module, "gate_up_proj", None)
    if gate_up is not None and gate_up.dim() == 3:
        inter, hidden = int(gate_up.shape[1]) // 2, int(gate_up.shape[2])
    else:
        inter, hidden = int(module.intermediate_dim), int(module.hidden_dim)
    return {"gate": (inter, hidden), "up": (inter, hidden), "down": (hidden, inter)}


def _build_experts(
    ckpt: Checkpoint,
    folder: Path,
    quant: Mapping[str, Any],
    sources: Mapping[tuple[int, int, str], _ExpertSource],
    layer: int,
    num_experts: int,
    act_fn: Any,
    dtype: torch.dtype,
    shapes: Mapping[str, tuple[int, int]],
) -> tuple[Any, set[str]]:
    """The :class:`QuantizedExperts` of one layer and the checkpoint tensors it consumed.

    Raises:
        CheckpointError: a stored expert matrix whose [out, in] is not the one the config gives (hidden_size,
            intermediate_size), checked here so that the model does not fail on its first forward.
    """
    from alphaq.quantization.modules import QuantizedExperts, QuantLinear, dense_linear
    from alphaq.quantization.shards import read_quantized_tensors

    refs: dict[str, MatrixRef] = {r.name: r for r in ckpt.matrices}
    missing = [f"expert {e} {p}" for e in range(num_experts) for p in _PROJS if (layer, e, p) not in sources]
    if missing:
        raise CheckpointError(
            f"{folder}: layer {layer} has no stored matrix for {len(missing)} expert projection(s) "
            f"(first: {missing[0]}); re-run alphaq quantize"
        )
    wanted = [
        sources[(layer, e, p)].name
        for e in range(num_experts)
        for p in _PROJS
        if sources[(layer, e, p)].kind == "quantized"
    ]
    packed = read_quantized_tensors(folder, wanted)
    used: set[str] = set()
    experts = []
    for e in range(num_experts):
        modules = {}
        for proj in _PROJS:
            source = sources[(layer, e, proj)]
            if source.kind == "quantized":
                pt = packed[source.name]
                _check_shape(folder, source.name, tuple(pt.shape), shapes[proj], layer, e, proj)
                try:
                    modules[proj] = QuantLinear(
                        pt.packed, pt.scale, pt.zero, pt.spec.bits, pt.spec.group_size, pt.shape[1]
                    )
                except ValueError as exc:
                    raise CheckpointError(f"{folder}: {source.name}: {exc}; re-run alphaq quantize") from exc
            elif source.kind == "dense":
                weight = _read_tensor(ckpt, f"{source.name}.weight")
                _check_shape(folder, source.name, tuple(weight.shape), shapes[proj], layer, e, proj)
                modules[proj] = dense_linear(weight, dtype)
            else:
                ref = refs[source.name]
                _check_shape(folder, ref.name, ref.shape, shapes[proj], layer, e, proj)
                modules[proj] = dense_linear(ckpt.read_matrix(ref), dtype)
                used.add(ref.tensor)
        experts.append(modules)
    return QuantizedExperts(experts, act_fn), used


def _check_shape(
    folder: Path, name: str, shape: tuple[int, ...], expected: tuple[int, int], layer: int, expert: int, proj: str
) -> None:
    if tuple(shape) != tuple(expected):
        raise CheckpointError(
            f"{folder}: {name} (layer {layer} expert {expert} {proj}) is {list(shape)} but "
            f"config.json (hidden_size, intermediate_size) gives {list(expected)}; the checkpoint does not fit "
            "its config: re-run alphaq quantize on the source checkpoint"
        )


def _read_tensor(ckpt: Checkpoint, name: str) -> torch.Tensor:
    info = ckpt.tensors.get(name)
    if info is None:
        raise CheckpointError(
            f"{ckpt.path}: tensor {name} listed in quantization_config is not stored; re-run alphaq quantize"
        )
    return ckpt.read_tensor(name)


def _load_remaining(
    model: Any, ckpt: Checkpoint, layout: ExpertsLayout, consumed: set[str], dtype: torch.dtype
) -> None:
    """Load every tensor not consumed by the experts into ``model`` (renamed), then tie and materialize buffers."""
    import torch
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
                    state[layout.rename(name)] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        except (OSError, RuntimeError, SafetensorError) as exc:
            raise CheckpointError(f"{file}: cannot read its tensors ({exc}); re-run alphaq quantize") from exc
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # a stored tensor whose shape is not the model's
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:200])
        raise CheckpointError(
            f"{ckpt.path}: a tensor does not fit the model its config.json describes ({detail}); "
            "re-run alphaq quantize on the source checkpoint"
        ) from exc
    if result.unexpected_keys:
        raise CheckpointError(
            f"{ckpt.path}: {len(result.unexpected_keys)} tensor(s) match no model weight (first: "
            f"{result.unexpected_keys[0]}); the checkpoint does not fit this model class"
        )
    model.tie_weights()
    # Non-persistent buffers (rotary inv_freq) are not in the checkpoint: materialize them on the CPU and let the
    # model's own initializer recompute them, as transformers' from_pretrained does after a meta-device build.
    owners = set()
    for name, buffer in _non_persistent_buffers(model):
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
