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

__all__ = ["QuantLinear", "QuantizedExperts", "dense_linear"]

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
    """Routed experts as per-expert gate/up/down linears, with the fused experts module's forward signature.

    ``experts[e]`` is an ``nn.ModuleDict`` with ``gate``, ``up`` and ``down`` (each a :class:`QuantLinear` or an
    ``nn.Linear``). The forward is the one of transformers' ``MixtralExperts`` (also Qwen2-MoE, Qwen3-MoE, OLMoE):
    for each expert hit by the router, ``down(act(gate(x)) * up(x)) * weight``, summed over the chosen experts.

    Args:
        experts: per expert, a mapping ``{"gate", "up", "down"} -> module``.
        act_fn: the activation of the replaced module (``act_fn``).
    """

    def __init__(self, experts: Sequence[dict[str, nn.Module]], act_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.ModuleDict({p: e[p] for p in EXPERT_PROJS}) for e in experts)
        self.num_experts = len(self.experts)
        self.act_fn = act_fn

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """Mixture of the chosen experts.

        Args:
            hidden_states: ``[T, H]``.
            top_k_index: ``[T, K]`` chosen experts (an index ``== num_experts`` is skipped, as in transformers).
            top_k_weights: ``[T, K]`` their routing weights.

        Returns:
            ``[T, H]`` of ``hidden_states.dtype``.
        """
        final = torch.zeros_like(hidden_states)  # [T, H]
        with torch.no_grad():
            mask = nn.functional.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)  # [E+1, K, T]
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()[:, 0].tolist()
        for e in hit:
            if e == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(mask[e])
            expert = self.experts[e]
            x = hidden_states[token_idx]  # [n, H]
            h = self.act_fn(expert["gate"](x)) * expert["up"](x)  # [n, I]
            y = expert["down"](h) * top_k_weights[token_idx, top_k_pos, None]  # [n, H]
            final.index_add_(0, token_idx, y.to(final.dtype))
        return final
