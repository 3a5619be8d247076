"""Simulated quantization: apply a plan to a loaded transformers model in place (quantize-dequantize).

Each planned matrix below 16 bits is replaced by its quantize-dequantized copy, so a forward pass computes what
the quantized checkpoint computes, without writing one (the fast path of a sweep). Plan tensors carry checkpoint
names; :mod:`alphaq.quantization.expert_map` finds the model parameter and slice of each with transformers' own
weight conversion mapping: per-expert checkpoint matrices merged into a fused ``gate_up_proj`` [E, 2I, H] /
``down_proj`` [E, H, I] (laid out as the experts class declares: transposed, gate|up interleaved...), fused 3-D
checkpoint tensors sliced as alphaq read them (GPT-OSS's [E, H, 2I] interleaved, Llama 4's [E, H, 2I]), DBRX's
stacked 2-D [E * I, H], and plain matrices one to one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from alphaq.errors import PlanError

if TYPE_CHECKING:
    from alphaq.planning.plan_file import Plan, PlanTensor


@dataclass(frozen=True)
class TensorCheck:
    """Measured vs predicted error of one simulated matrix.

    Attributes:
        name: plan matrix name.
        tensor: checkpoint tensor name.
        layer: decoder layer (None outside layers).
        expert: expert index (None outside routed experts).
        bits: planned width.
        predicted_error: the plan's predicted error (None when not modelled).
        rel_error: measured ``||W - W_hat||_F / ||W||_F``.
    """

    name: str
    tensor: str
    layer: int | None
    expert: int | None
    bits: int
    predicted_error: float | None
    rel_error: float


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`apply_plan` did.

    Attributes:
        plan_fingerprint: the applied plan's fingerprint.
        method: quantizer (``rtn``, ``rtn_clip``, ``hqq``).
        checks: one :class:`TensorCheck` per quantized matrix.
        kept: matrices left as they are (16 bits).
    """

    plan_fingerprint: str
    method: str
    checks: tuple[TensorCheck, ...]
    kept: int


def _views(model: Any, plan: Plan) -> Callable[[PlanTensor], Any]:
    """``plan tensor -> writable 2-D view`` [out, in] of the model parameter that holds it (fused experts sliced)."""
    from alphaq.load.architectures import match_tensor, spec_for
    from alphaq.load.checkpoint import _orientation
    from alphaq.quantization.expert_map import ModelNames, expert_slot, slot_view

    names = ModelNames(model)
    config = model.config.to_dict()
    text = config.get("text_config") or {}
    spec = spec_for(config.get("model_type"))
    hidden = config.get("hidden_size") or text.get("hidden_size")
    experts: dict[str, int] = {}
    for t in plan.tensors:
        if t.expert is not None:
            experts[t.tensor] = max(experts.get(t.tensor, 0), int(t.expert) + 1)

    def view(t: PlanTensor) -> Any:
        fused, part = None, ""
        if t.name.startswith(t.tensor + "["):  # one expert's slice of a fused checkpoint tensor
            part = t.name.rpartition("].")[2] if "]." in t.name else ""
            match = match_tensor(spec, t.tensor)
            split = match.rule.split if match is not None else "none"
            orientation = "out_in"
            key, _ = names.key(t.tensor)
            if match is not None and key is not None:
                shape = tuple(names.state_keys[key].shape)
                shape3 = shape if len(shape) == 3 else (experts.get(t.tensor, 1), -1, shape[-1])
                orientation = _orientation(match.rule.orientation, match.proj, shape3, hidden)
            fused = {"split": split, "orientation": orientation, "stacked": experts.get(t.tensor, 0)}
        slot, reason = expert_slot(names, t.tensor, t.expert, t.proj, fused, part)
        if slot is None:
            raise PlanError(f"plan tensor {t.name}: {reason}; apply a plan made for this checkpoint and model class")
        param = getattr(model.get_submodule(slot.module), slot.param)
        return slot_view(param.data, slot)

    return view


def apply_plan(model: Any, plan: Plan, *, method: str | None = None) -> SimulationResult:
    """Quantize-dequantize every planned matrix below 16 bits in place.

    Args:
        model: a transformers causal LM loaded from the plan's checkpoint (e.g. :func:`alphaq.load.model.load_model`).
        plan: an :class:`alphaq.planning.plan_file.Plan`.
        method: quantizer; None: the plan's ``provenance.options.quant_method``, else ``rtn``.

    Returns:
        A :class:`SimulationResult` with the measured error of each matrix next to the plan's prediction.

    Raises:
        PlanError: a plan tensor that the model does not hold, or of another shape.
    """
    import torch

    from alphaq.quantization.layout import QuantSpec
    from alphaq.quantization.methods import quantize_dequantize
    from alphaq.quantization.primitives import relative_error

    quant = method or (plan.provenance.get("options") or {}).get("quant_method") or "rtn"
    view = _views(model, plan)
    checks: list[TensorCheck] = []
    kept = 0
    with torch.no_grad():
        for t in plan.tensors:
            if t.bits >= 16:
                kept += 1
                continue
            target = view(t)
            if tuple(target.shape) != (t.rows, t.cols):
                raise PlanError(
                    f"plan tensor {t.tensor} is {t.rows}x{t.cols} but the model holds "
                    f"{tuple(target.shape)}; apply a plan made for this checkpoint"
                )
            w = target.detach().to(torch.float32).clone()  # [R, C]
            w_hat = quantize_dequantize(w, QuantSpec(t.bits, int(t.group_size)), method=quant, dtype=torch.float32)
            target.copy_(w_hat.to(target.dtype))
            checks.append(
                TensorCheck(
                    name=t.name,
                    tensor=t.tensor,
                    layer=t.layer,
                    expert=t.expert,
                    bits=t.bits,
                    predicted_error=t.error,
                    rel_error=relative_error(w, w_hat),
                )
            )
    return SimulationResult(plan_fingerprint=plan.plan_fingerprint, method=quant, checks=tuple(checks), kept=kept)


def checks_frame(result: SimulationResult) -> Any:
    """The per-matrix checks as a DataFrame (name, tensor, layer, expert, bits, predicted_error, rel_error)."""
    import pandas as pd

    return pd.DataFrame([asdict(c) for c in result.checks])


__all__ = ["SimulationResult", "TensorCheck", "apply_plan", "checks_frame"]
