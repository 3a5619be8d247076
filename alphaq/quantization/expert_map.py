"""Where one routed-expert matrix of a checkpoint lives in transformers' model: module, parameter and slice.

Checkpoint names are mapped to the model's parameter names with transformers' own weight conversion mapping
(:func:`transformers.conversion_mapping.get_model_conversion_mapping`: the renames and the per-expert -> fused
merges that ``from_pretrained`` applies), so no name table is kept here. How an expert's matrix sits inside a
fused parameter is read from the experts class itself when transformers declares it
(``@use_experts_implementation``: ``has_gate``, ``is_transposed``, ``is_concatenated``), else from the layout
alphaq read the checkpoint with (split and orientation of the fused tensor, DBRX's stacked 2-D tensors).

Used by :func:`alphaq.load_quantized` (which module to replace) and by :mod:`alphaq.evaluation.simulate` (which
slice to quantize in place). Importing this module imports nothing heavy; the functions take a loaded model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ExpertSlot",
    "ExpertsFormat",
    "ModelNames",
    "experts_format",
    "expert_slot",
    "moe_block_name",
    "runs_standard_forward",
    "slot_view",
]

_LAYER = re.compile(r"^(?P<layer>.*?(?:^|\.)(?:layers|blocks|h)\.\d+)\.(?P<child>[^.]+)")


@dataclass(frozen=True)
class ExpertsFormat:
    """How a transformers experts class (``@use_experts_implementation``) stores and runs its experts.

    Attributes:
        gated: ``gate_up_proj`` [E, 2I, H] and a gate (``has_gate``); False: ``up_proj`` and ``act_fn`` only.
        concatenated: gate rows then up rows; False: interleaved (gate, up, gate, up...).
        transposed: stored [E, in, out] (``is_transposed``).
        has_bias: ``gate_up_proj_bias`` / ``up_proj_bias`` and ``down_proj_bias`` [E, out].
        post_norm: ``post_expert_norm`` applied to each expert's output.
    """

    gated: bool
    concatenated: bool
    transposed: bool
    has_bias: bool
    post_norm: bool

    def weight_name(self, proj: str) -> str:
        """The parameter that holds projection ``proj`` (gate/up/down)."""
        if proj == "down":
            return "down_proj"
        return "gate_up_proj" if self.gated else "up_proj"


@dataclass(frozen=True)
class ExpertSlot:
    """One expert's [out, in] matrix inside a model parameter.

    Attributes:
        module: name of the module that owns the parameter.
        param: the parameter's attribute name.
        expert: expert index; None for a plain 2-D weight (one nn.Linear per expert).
        part: ``"gate"``, ``"up"`` or ``""`` (the whole expert slice).
        transposed: the expert slice is stored [in, out].
        interleaved: gate and up rows alternate (else gate rows, then up rows).
        stacked: experts stacked along dim 0 of a 2-D parameter [E * out, in] (DBRX); 0 when 3-D.
    """

    module: str
    param: str
    expert: int | None
    part: str = ""
    transposed: bool = False
    interleaved: bool = False
    stacked: int = 0


def slot_view(param: Any, slot: ExpertSlot) -> Any:
    """The writable [out, in] view of ``slot`` in ``param`` (a tensor of the slot's parameter; meta works).

    Args:
        param: the full parameter tensor ([E, a, b], [E * a, b] stacked, or [out, in]).
        slot: where the matrix is.

    Returns:
        A view of ``param`` (no copy), [out, in].
    """
    if slot.expert is None:
        return param
    block = param.view(slot.stacked, -1, param.shape[-1])[slot.expert] if slot.stacked else param[slot.expert]
    matrix = block.transpose(0, 1) if slot.transposed else block  # [out (gate|up), in]
    if not slot.part:
        return matrix
    index = 0 if slot.part == "gate" else 1
    if slot.interleaved:
        return matrix[index::2]
    half = matrix.shape[0] // 2
    return matrix[index * half : (index + 1) * half]


def experts_format(module: Any) -> ExpertsFormat | None:
    """The storage flags of a transformers experts module, or None when its class does not declare them."""
    if not all(hasattr(module, a) for a in ("has_gate", "is_transposed", "is_concatenated")):
        return None
    return ExpertsFormat(
        gated=bool(module.has_gate),
        concatenated=bool(module.is_concatenated),
        transposed=bool(module.is_transposed),
        has_bias=bool(getattr(module, "has_bias", False)),
        post_norm=bool(getattr(module, "has_post_expert_norm", False)),
    )


def runs_standard_forward(module: Any) -> bool:
    """True when ``module``'s forward is the one ``@use_experts_implementation`` dispatches (so any experts
    implementation computes it: sum over the chosen experts of ``down(gate(up))`` times the routing weight),
    not a subclass's own forward around it (ERGO's per-route norm)."""
    if experts_format(module) is None:
        return False
    for klass in type(module).__mro__:
        if "forward" in vars(klass):
            return hasattr(vars(klass)["forward"], "__wrapped__")
    return False


def moe_block_name(module_name: str) -> str:
    """The decoder layer's child that contains ``module_name`` (``model.layers.3.mlp`` for
    ``model.layers.3.mlp.experts``); the module name itself when it is not under a numbered layer."""
    match = _LAYER.match(module_name)
    return f"{match['layer']}.{match['child']}" if match else module_name


class ModelNames:
    """Checkpoint tensor name -> the model's parameter name, by transformers' conversion mapping.

    Args:
        model: a transformers ``PreTrainedModel`` (meta device is fine).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.state_keys: dict[str, Any] = dict(model.state_dict(keep_vars=True))
        self.prefix = getattr(model, "base_model_prefix", None)
        self.renamings: list[Any] = []
        self.converters: list[Any] = []
        try:
            from transformers.conversion_mapping import get_model_conversion_mapping
            from transformers.core_model_loading import WeightConverter, WeightRenaming

            mapping = get_model_conversion_mapping(model)
        except (ImportError, AttributeError, TypeError):  # another transformers: names taken as they are
            return
        self.renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
        self.converters = [m for m in mapping if isinstance(m, WeightConverter)]

    def key(self, tensor: str) -> tuple[str | None, bool]:
        """``(model parameter name or None, converted)``; ``converted`` is True when a merge (per-expert ->
        fused) maps the tensor, so its layout is the model's, not the checkpoint's."""
        if self.renamings or self.converters:
            from transformers.core_model_loading import rename_source_key

            key, pattern = rename_source_key(tensor, self.renamings, self.converters, self.prefix, self.state_keys)
            if key in self.state_keys:
                return key, pattern is not None
        if tensor in self.state_keys:
            return tensor, False
        for candidate in (f"{self.prefix}.{tensor}", tensor.partition(".")[2]):
            if candidate in self.state_keys:
                return candidate, False
        return None, False


def expert_slot(
    names: ModelNames, tensor: str, expert: int | None, proj: str, fused: Mapping[str, Any] | None, part: str
) -> tuple[ExpertSlot | None, str]:
    """Where the checkpoint matrix (``tensor``, ``expert``, ``proj``) is in the model.

    Args:
        names: the model's name map.
        tensor: the checkpoint tensor holding the matrix.
        expert: its expert index (None for a non-expert matrix).
        proj: canonical projection (gate/up/down...).
        fused: for one expert's slice of a fused checkpoint tensor, its layout ``{"split", "orientation",
            "stacked"}`` as alphaq read it; None for a per-expert 2-D checkpoint tensor.
        part: ``gate``/``up``/``""`` of a fused gate|up slice.

    Returns:
        ``(slot, "")``, or ``(None, reason)``: one line saying why the matrix has no place in the model.
    """
    key, converted = names.key(tensor)
    if key is None:
        return None, f"{tensor} has no parameter in the model"
    owner_name, _, attr = key.rpartition(".")
    param = names.state_keys[key]
    owner = names.model.get_submodule(owner_name)
    fmt = experts_format(owner)
    if fused is not None and converted:
        return None, (
            f"transformers converts the fused tensor {tensor} when it loads it (into {key}), so the gate/up halves "
            "alphaq split from the stored tensor are not the model's"
        )
    if expert is not None and fmt is not None and fused is None and param.dim() == 3:
        # per-expert checkpoint matrices merged by transformers: the class's flags give the layout
        name = fmt.weight_name(proj)
        sub = proj if name == "gate_up_proj" else ""
        return ExpertSlot(owner_name, name, expert, sub, fmt.transposed, not fmt.concatenated), ""
    if fused is not None and expert is not None:
        stacked = int(fused.get("stacked") or 0) if param.dim() == 2 else 0
        if param.dim() != 3 and not stacked:
            return None, f"{tensor} is fused in the checkpoint but {key} is {param.dim()}-D in the model"
        transposed = fused.get("orientation") == "in_out"
        interleaved = fused.get("split") == "interleaved"
        return ExpertSlot(owner_name, attr, expert, part, transposed, interleaved, stacked), ""
    if param.dim() == 2:
        return ExpertSlot(owner_name, attr, None), ""
    return None, f"{tensor} is 2-D in the checkpoint but {key} is {param.dim()}-D in the model"
