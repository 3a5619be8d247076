"""Replace the routed experts of a transformers model built on the meta device by modules over packed weights.

:func:`place_sources` finds, for every stored expert matrix of a quantized checkpoint, the model parameter and
slice that holds it (:func:`alphaq.quantization.expert_map.expert_slot`); :func:`swap_experts` groups them by
owning module and replaces each experts module (see :mod:`alphaq.quantization.loading` for the three kinds).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from alphaq.load.checkpoint import Checkpoint
    from alphaq.quantization.expert_map import ExpertSlot, ModelNames

__all__ = ["Placed", "place_sources", "swap_experts"]

#: owner module name -> {(expert, proj): (slot, source)}
Placed = dict[str, dict[tuple[int | None, str], tuple["ExpertSlot", Any]]]


def place_sources(
    folder: Path, names: ModelNames, sources: Mapping[tuple[int, int, str], Any], model_type: str
) -> Placed:
    """Find the model slot of every stored expert matrix, grouped by the module that owns its parameter.

    Args:
        folder: the quantized checkpoint (for messages).
        names: the model's name map.
        sources: ``(layer, expert, proj) -> _ExpertSource`` of :mod:`alphaq.quantization.loading`.
        model_type: for messages.

    Returns:
        owner module name -> ``{(expert, proj): (slot, source)}``.

    Raises:
        CheckpointError: a matrix with no place in transformers' model of this type (one line).
    """
    from alphaq.quantization.expert_map import expert_slot

    placed: Placed = {}
    for (layer, expert, proj), source in sorted(sources.items()):
        slot, reason = expert_slot(names, source.tensor, expert, proj, source.fused, source.part)
        if slot is None:
            raise CheckpointError(
                f"{folder}: layer {layer} expert {expert} {proj}: {reason} of {model_type!r} in this transformers; "
                "load the source checkpoint, or report this model"
            )
        key = (expert, proj) if slot.expert is not None else (None, slot.param)
        placed.setdefault(slot.module, {})[key] = (slot, source)
    return placed


def swap_experts(model: Any, ckpt: Checkpoint, folder: Path, placed: Placed, dtype: torch.dtype) -> None:
    """Replace every experts module of ``placed`` in ``model`` (in place).

    Raises:
        CheckpointError: an expert projection missing from the checkpoint, or a matrix whose shape is not the
            model's.
    """
    from alphaq.quantization.expert_map import experts_format, moe_block_name, runs_standard_forward
    from alphaq.quantization.shards import read_quantized_tensors

    fallback: dict[str, list[str]] = {}
    for owner_name, group in placed.items():
        owner = model.get_submodule(owner_name)
        wanted = [source.name for _, source in group.values() if source.kind == "quantized"]
        packed = read_quantized_tensors(folder, wanted) if wanted else {}
        modules = {
            key: _matrix_module(ckpt, folder, owner, slot, source, packed, dtype)
            for key, (slot, source) in group.items()
        }
        fmt = experts_format(owner)
        if all(slot.expert is None for slot, _ in group.values()):
            _swap_linear(model, owner_name, owner, modules[next(iter(modules))])
        elif fmt is not None and runs_standard_forward(owner) and _native(fmt, group):
            _swap_standard(model, folder, owner_name, owner, fmt, modules)
        else:
            fallback.setdefault(moe_block_name(owner_name), []).append(owner_name)
            owner._alphaq_modules = (group, modules)  # picked up below, per block
    for block_name, owner_names in fallback.items():
        _swap_fused(model, folder, block_name, owner_names, dtype)


def _matrix_module(
    ckpt: Checkpoint, folder: Path, owner: Any, slot: ExpertSlot, source: Any, packed: Mapping[str, Any], dtype: Any
) -> Any:
    """The QuantLinear (quantized) or nn.Linear (16-bit) of one expert matrix, checked against its model slot."""
    from alphaq.quantization.expert_map import slot_view
    from alphaq.quantization.modules import QuantLinear, dense_linear

    expected = tuple(slot_view(getattr(owner, slot.param), slot).shape)
    if source.kind == "quantized":
        pt = packed[source.name]
        _check_shape(folder, source.name, tuple(pt.shape), expected)
        try:
            return QuantLinear(pt.packed, pt.scale, pt.zero, pt.spec.bits, pt.spec.group_size, pt.shape[1])
        except ValueError as exc:
            raise CheckpointError(f"{folder}: {source.name}: {exc}; re-run alphaq quantize") from exc
    if source.kind == "dense":
        name = f"{source.name}.weight"
        if name not in ckpt.tensors:
            raise CheckpointError(
                f"{ckpt.path}: tensor {name} listed in quantization_config is not stored; re-run alphaq quantize"
            )
        weight = ckpt.read_tensor(name)
    else:
        ref = next(r for r in ckpt.matrices if r.name == source.name)
        weight = ckpt.read_matrix(ref)
    _check_shape(folder, source.name, tuple(weight.shape), expected)
    return dense_linear(weight, dtype)


def _check_shape(folder: Path, name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(expected):
        raise CheckpointError(
            f"{folder}: {name} is {list(shape)} but the model its config.json describes holds {list(expected)} "
            "there; the checkpoint does not fit its config: re-run alphaq quantize on the source checkpoint"
        )


def _native(fmt: Any, group: Mapping[tuple[int | None, str], tuple[ExpertSlot, Any]]) -> bool:
    """True when every slot sits where the class's own flags put it (so its standard forward is known)."""
    for (_, proj), (slot, _) in group.items():
        name = fmt.weight_name(proj)
        part = proj if name == "gate_up_proj" else ""
        same = (slot.param, slot.part, slot.transposed, slot.stacked) == (name, part, fmt.transposed, 0)
        if not same or (part and slot.interleaved == fmt.concatenated):
            return False
    return True


def _swap_linear(model: Any, owner_name: str, owner: Any, module: Any) -> None:
    """A per-expert ``nn.Linear`` -> its QuantLinear (the bias, if any, kept)."""
    bias = getattr(owner, "bias", None)
    if bias is not None and hasattr(module, "qweight"):
        module.register_buffer("bias", bias.detach())
    elif bias is not None:
        module.bias = bias
    model.set_submodule(owner_name, module)


def _swap_standard(model: Any, folder: Path, owner_name: str, owner: Any, fmt: Any, modules: Mapping) -> None:
    """A ``@use_experts_implementation`` module -> :class:`QuantizedExperts` with its gating, biases and norm."""
    from transformers.integrations import moe as hf_moe

    from alphaq.quantization.modules import QuantizedExperts

    num_experts = int(getattr(owner, "num_experts", 0) or getattr(owner, fmt.weight_name("down")).shape[0])
    projs = ("gate", "up", "down") if fmt.gated else ("up", "down")
    missing = [f"expert {e} {p}" for e in range(num_experts) for p in projs if (e, p) not in modules]
    if missing:
        raise CheckpointError(
            f"{folder}: {owner_name} has no stored matrix for {len(missing)} expert projection(s) "
            f"(first: {missing[0]}); re-run alphaq quantize"
        )
    experts = [{p: modules[(e, p)] for p in projs} for e in range(num_experts)]
    biases = {}
    for name in ("gate_up_proj_bias", "up_proj_bias", "down_proj_bias"):
        value = getattr(owner, name, None)
        if value is not None and value.device.type != "meta":
            biases[name] = value
    for name in ("gate_up_proj", "up_proj", "down_proj"):
        owner._parameters.pop(name, None)
    apply_gate = getattr(type(owner), "_apply_gate", None)
    default = getattr(hf_moe, "_default_apply_gate", None)
    gate_fn = partial(apply_gate, owner) if fmt.gated and apply_gate is not None and apply_gate is not default else None
    post_norm = getattr(owner, "post_expert_norm", None) if fmt.post_norm else None
    new = QuantizedExperts(
        experts,
        getattr(owner, "act_fn", None),
        gate_fn=gate_fn,
        concatenated=fmt.concatenated,
        biases=biases,
        post_norm=post_norm,
    )
    model.set_submodule(owner_name, new)


def _swap_fused(model: Any, folder: Path, block_name: str, owner_names: list[str], dtype: Any) -> None:
    """Other experts classes keep their forward: their fused parameters are filled while the block runs."""
    from alphaq.quantization.expert_map import slot_view
    from alphaq.quantization.modules import PackedExpertWeights

    owners, targets = [], []
    for owner_name in owner_names:
        owner = model.get_submodule(owner_name)
        group, modules = owner._alphaq_modules
        del owner._alphaq_modules
        by_param: dict[str, list[tuple[Any, Any]]] = {}
        for key, (slot, _) in sorted(
            group.items(), key=lambda kv: (kv[1][0].param, kv[1][0].expert or 0, kv[1][0].part)
        ):
            by_param.setdefault(slot.param, []).append((slot, modules[key]))
        for attr, pairs in by_param.items():
            param = getattr(owner, attr)
            covered = sum(int(slot_view(param, s).numel()) for s, _ in pairs)
            if covered != param.numel():
                raise CheckpointError(
                    f"{folder}: {owner_name}.{attr} is not covered by the stored expert matrices "
                    f"({covered} of {param.numel()} values); re-run alphaq quantize"
                )
            targets.append((len(owners), attr, tuple(param.shape), pairs))
        owners.append(owner)
    block = model.get_submodule(block_name)
    packed = PackedExpertWeights(owners, targets, dtype)
    block.alphaq_packed_experts = packed
    block.register_forward_pre_hook(packed.fill)
    block.register_forward_hook(packed.clear)
