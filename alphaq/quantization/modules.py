"""Runtime modules of a quantized checkpoint (format ``alphaq-groupwise-v1``, ``docs/quantize.md``).

- :class:`QuantLinear`: ``y = x @ W_hat.T (+ bias)`` with ``W_hat`` kept packed (``qweight`` uint8, ``scales`` and
  ``zeros`` float16 buffers). The forward is :func:`alphaq.kernels.dequant_matmul`: the fused Triton kernel on
  CUDA, the torch reference (unpack + dequantize in float32, then matmul) elsewhere. Nothing is cached, so the
  resident weight memory is the packed size.
- :class:`QuantizedExperts`: a drop-in replacement for the fused experts module of transformers' MoE blocks
  (``MixtralExperts``, ``Qwen2MoeExperts``, ``OlmoeExperts``...): same ``forward(hidden_states, top_k_index,
  top_k_weights)``, with one gate/up/down linear per expert (a :class:`QuantLinear`, or an ``nn.Linear`` for a
  matrix kept at 16 bits).

Importing this module imports torch (it defines ``nn.Module`` subclasses); the CLI never imports it at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from alphaq.quantization.layout import QuantSpec, num_groups, packed_row_bytes

__all__ = ["PackedExpertWeights", "QuantLinear", "QuantizedExperts", "dense_linear"]

#: The projections of one routed expert, in the order of its ``nn.ModuleDict``.
EXPERT_PROJS: tuple[str, ...] = ("gate", "up", "down")


class QuantLinear(nn.Module):
    """A linear layer whose weight ``[out_features, in_features]`` is stored group-wise quantized and packed.

    Buffers (saved in ``state_dict`` under the checkpoint's names): ``qweight`` uint8
    ``[out, ceil(in / 8) * bits]``, ``scales`` and ``zeros`` float16 ``[out, ceil(in / group_size)]``, and
    optionally ``bias`` ``[out]``.

    Args:
        qweight: packed codes.
        scales: per-group scales.
        zeros: per-group float zero points.
        bits: width, 1..8.
        group_size: columns per group.
        in_features: ``C``, the unpacked column count.
        bias: optional bias ``[out]``.
        backend: kernel backend of :func:`alphaq.kernels.dequant_matmul` (``"auto"``: Triton on CUDA, torch
            reference elsewhere).
    """

    def __init__(
        self,
        qweight: torch.Tensor,
        scales: torch.Tensor,
        zeros: torch.Tensor,
        bits: int,
        group_size: int,
        in_features: int,
        bias: torch.Tensor | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        spec = QuantSpec(bits, group_size)
        rows = int(qweight.shape[0])
        expected = {
            "qweight": (torch.uint8, (rows, packed_row_bytes(in_features, bits))),
            "scales": (torch.float16, (rows, num_groups(in_features, group_size))),
            "zeros": (torch.float16, (rows, num_groups(in_features, group_size))),
        }
        for name, tensor in (("qweight", qweight), ("scales", scales), ("zeros", zeros)):
            dtype, shape = expected[name]
            if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                raise ValueError(
                    f"QuantLinear {name}: expected {dtype} {shape} for a {rows}x{in_features} matrix at "
                    f"{bits} bits, group {group_size}; got {tensor.dtype} {tuple(tensor.shape)}"
                )
        self.bits = spec.bits
        self.group_size = spec.group_size
        self.in_features = int(in_features)
        self.out_features = rows
        self.backend = backend
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.register_buffer("zeros", zeros)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in] -> [..., out]`` of ``x.dtype`` (accumulated in float32 by the torch reference)."""
        from alphaq.kernels import dequant_matmul

        y = dequant_matmul(
            x, self.qweight, self.scales, self.zeros, self.bits, self.group_size, self.in_features, backend=self.backend
        )  # [..., out]
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dequantized weight ``[out, in]`` (a fresh tensor; the module keeps only the packed form)."""
        from alphaq.kernels import unpack_dequantize

        return unpack_dequantize(
            self.qweight,
            self.scales,
            self.zeros,
            self.bits,
            self.group_size,
            self.in_features,
            dtype,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"group_size={self.group_size}, bias={self.bias is not None}"
        )


def dense_linear(weight: torch.Tensor, dtype: torch.dtype) -> nn.Linear:
    """An ``nn.Linear`` without bias holding ``weight [out, in]`` (cast to ``dtype``), for 16-bit expert matrices."""
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=False, device="meta")
    layer.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    return layer


class QuantizedExperts(nn.Module):
    """Routed experts as per-expert gate/up/down linears, with the forward of transformers' experts classes.

    ``experts[e]`` is an ``nn.ModuleDict`` with ``gate``, ``up`` and ``down`` (``up`` and ``down`` only for experts
    without a gate), each a :class:`QuantLinear` or an ``nn.Linear``. The forward is the one every
    ``@use_experts_implementation`` class of transformers declares (``MixtralExperts``, ``Qwen3MoeExperts``,
    ``GptOssExperts``...): for each expert hit by the router, ``down(gate_fn(gate_up(x)) + b) * weight`` summed over
    the chosen experts, where ``gate_up(x)`` is laid out as the replaced class lays it out (gate|up concatenated or
    interleaved) so that the class's own ``_apply_gate`` (GPT-OSS's clamped SwiGLU...) applies unchanged.

    Args:
        experts: per expert, a mapping ``{"gate", "up", "down"} -> module`` (no ``gate`` when not gated).
        act_fn: the activation of the replaced module (``act_fn``; None when ``gate_fn`` gates).
        gate_fn: ``gate_up_out [n, 2I] -> [n, I]``, the replaced class's ``_apply_gate``; None: ``act(gate) * up``.
        concatenated: gate|up concatenated (else interleaved) in what ``gate_fn`` receives.
        biases: the replaced module's bias parameters by name (``gate_up_proj_bias`` or ``up_proj_bias`` [E, out],
            ``down_proj_bias`` [E, H]); kept under the same names.
        post_norm: the replaced module's ``post_expert_norm``, applied to each expert's output, or None.
    """

    def __init__(
        self,
        experts: Sequence[dict[str, nn.Module]],
        act_fn: Callable[[torch.Tensor], torch.Tensor] | None,
        *,
        gate_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        concatenated: bool = True,
        biases: dict[str, nn.Parameter] | None = None,
        post_norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.gated = "gate" in experts[0]
        projs = EXPERT_PROJS if self.gated else ("up", "down")
        self.experts = nn.ModuleList(nn.ModuleDict({p: e[p] for p in projs}) for e in experts)
        self.num_experts = len(self.experts)
        self.act_fn = act_fn
        self.concatenated = concatenated
        self._gate_fn = (gate_fn,)  # a tuple: the owner of a bound _apply_gate is not a submodule
        self.bias_names = tuple(sorted(biases or {}))
        for name, value in (biases or {}).items():
            setattr(self, name, value)
        self.post_expert_norm = post_norm

    def _gate_up(self, expert: nn.ModuleDict, x: torch.Tensor, e: int) -> torch.Tensor:
        """``act(gate(x)) * up(x)`` (or the class's gating) of expert ``e`` for ``x`` [n, H] -> [n, I]."""
        bias = getattr(self, "gate_up_proj_bias", None) if self.gated else getattr(self, "up_proj_bias", None)
        gate_fn = self._gate_fn[0]
        if not self.gated:
            up = expert["up"](x)  # [n, I]
            return self.act_fn(up if bias is None else up + bias[e].to(up.dtype))
        gate, up = expert["gate"](x), expert["up"](x)  # [n, I] each
        if gate_fn is None and bias is None and self.concatenated:
            return self.act_fn(gate) * up
        fused = torch.cat((gate, up), -1) if self.concatenated else torch.stack((gate, up), -1).flatten(-2)  # [n, 2I]
        if bias is not None:
            fused = fused + bias[e].to(fused.dtype)
        if gate_fn is None:
            g, u = fused.chunk(2, dim=-1) if self.concatenated else (fused[..., ::2], fused[..., 1::2])
            return self.act_fn(g) * u
        return gate_fn(fused)

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Mixture of the chosen experts.

        Args:
            hidden_states: ``[T, H]`` (any leading shape is flattened).
            top_k_index: ``[T, K]`` chosen experts (an index ``>= num_experts`` is skipped, as in transformers).
            top_k_weights: ``[T, K]`` their routing weights.

        Returns:
            ``[T, H]`` of ``hidden_states.dtype``.
        """
        shape = hidden_states.shape
        hidden_states = hidden_states.reshape(-1, shape[-1])  # [T, H]
        top_k_index = top_k_index.reshape(hidden_states.shape[0], -1)  # [T, K]
        top_k_weights = top_k_weights.reshape(hidden_states.shape[0], -1)  # [T, K]
        final = torch.zeros_like(hidden_states)  # [T, H]
        down_bias = getattr(self, "down_proj_bias", None)
        with torch.no_grad():
            hit = torch.unique(top_k_index).tolist()
        for e in hit:
            if not 0 <= e < self.num_experts:
                continue
            token_idx, top_k_pos = torch.where(top_k_index == e)
            expert = self.experts[e]
            x = hidden_states[token_idx]  # [n, H]
            y = expert["down"](self._gate_up(expert, x, e))  # [n, H]
            if down_bias is not None:
                y = y + down_bias[e].to(y.dtype)
            if self.post_expert_norm is not None:
                y = self.post_expert_norm(y)
            y = y * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, y.to(final.dtype))
        return final.reshape(shape)


class PackedExpertWeights(nn.Module):
    """Fused expert parameters of one MoE block kept packed, written out in full only while the block runs.

    For experts classes whose forward alphaq does not reimplement (DBRX, JetMoE, Llama 4, ERGO): the block keeps
    its own forward; before it runs, each fused parameter (``[E, a, b]`` or stacked ``[E * a, b]``) is filled
    from the per-expert modules and set on its owner; afterwards it is dropped. Resident memory stays the packed
    size plus one block's experts while that block runs.

    Args:
        owners: the modules that own the fused parameters (not registered here: they are in the model already).
        targets: per fused parameter, ``(owner index, attribute, shape, [(slot, module), ...])`` where ``slot`` is
            an :class:`alphaq.quantization.expert_map.ExpertSlot` and ``module`` a :class:`QuantLinear` or an
            ``nn.Linear`` holding that expert matrix.
        dtype: dtype of the filled parameters.
    """

    def __init__(
        self,
        owners: Sequence[nn.Module],
        targets: Sequence[tuple[int, str, tuple[int, ...], Sequence[tuple[object, nn.Module]]]],
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self._owners = tuple(owners)
        self.dtype = dtype
        self.parts = nn.ModuleList(module for _, _, _, pairs in targets for _, module in pairs)
        self._targets = [(o, attr, tuple(shape), [slot for slot, _ in pairs]) for o, attr, shape, pairs in targets]
        for owner, attr in {(self._owners[o], attr) for o, attr, _, _ in self._targets}:
            owner._parameters.pop(attr, None)
            setattr(owner, attr, None)

    def fill(self, *_: object) -> None:
        """Write every fused parameter from the packed experts (a forward pre-hook of the block)."""
        from alphaq.quantization.expert_map import slot_view

        index = 0
        for o, attr, shape, slots in self._targets:
            device = next(iter(self.parts[index].buffers()), None)
            device = device.device if device is not None else next(self.parts[index].parameters()).device
            full = torch.empty(shape, dtype=self.dtype, device=device)
            for slot in slots:
                module = self.parts[index]
                index += 1
                weight = module.dequantized_weight(self.dtype) if isinstance(module, QuantLinear) else module.weight
                slot_view(full, slot).copy_(weight)  # type: ignore[arg-type]
            setattr(self._owners[o], attr, full)

    def clear(self, *_: object) -> None:
        """Drop the filled parameters (a forward hook of the block)."""
        for o, attr, _, _ in self._targets:
            setattr(self._owners[o], attr, None)
