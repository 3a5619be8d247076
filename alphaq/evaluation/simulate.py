"""Simulated quantization: apply a plan to a loaded transformers model in place (quantize-dequantize).

Each planned matrix below 16 bits is replaced by its quantize-dequantized copy, so a forward pass computes what
the quantized checkpoint computes, without writing one (the fast path of a sweep). Plan tensors carry checkpoint
names; transformers 5.x Mixtral holds the routed experts fused in memory:

* ``model.layers.L.mlp.experts.gate_up_proj`` ``[E, 2I, H]``: ``w1`` (gate) is rows ``[:I]``, ``w3`` (up) ``[I:]``
  (``MixtralExperts.forward``: ``gate, up = linear(x, gate_up_proj[e]).chunk(2, dim=-1)``);
* ``model.layers.L.mlp.experts.down_proj`` ``[E, H, I]``: ``w2``.

Checkpoints whose names are also the model's parameter names (unfused models) map one to one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from alphaq.errors import PlanError

if TYPE_CHECKING:
    from alphaq.planning.plan_file import Plan

_EXPERT_TENSOR = re.compile(
    r"^(?P<prefix>.*\.layers\.(?P<layer>\d+))\.(?:block_sparse_moe|mlp)\.experts\."
    r"(?P<expert>\d+)\.(?P<proj>w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$"
)
_GATE = ("w1", "gate_proj")
_UP = ("w3", "up_proj")


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


def _views(model: Any) -> Callable[[str], Any]:
    """``checkpoint tensor name -> writable 2-D view`` of the model's parameter (fused experts sliced)."""
    params = dict(model.named_parameters())

    def view(tensor: str) -> Any:
        if tensor in params and params[tensor].dim() == 2:
            return params[tensor].data
        m = _EXPERT_TENSOR.match(tensor)
        if m is not None:
            base, e, proj = f"{m['prefix']}.mlp.experts", int(m["expert"]), m["proj"]
            if proj in ("w2", "down_proj") and f"{base}.down_proj" in params:
                return params[f"{base}.down_proj"].data[e]  # [H, I]
            fused = params.get(f"{base}.gate_up_proj")
            if fused is not None and proj in _GATE + _UP:
                half = fused.shape[1] // 2
                return fused.data[e, :half] if proj in _GATE else fused.data[e, half:]  # [I, H]
        raise PlanError(
            f"plan tensor {tensor} has no parameter in the loaded model; apply a plan made for this "
            "checkpoint (fused experts supported: mlp.experts.gate_up_proj / down_proj)"
        )

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
    view = _views(model)
    checks: list[TensorCheck] = []
    kept = 0
    with torch.no_grad():
        for t in plan.tensors:
            if t.bits >= 16:
                kept += 1
                continue
            target = view(t.tensor)
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
