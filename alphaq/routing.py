"""Routing statistics on text: how often each routed expert is selected (the calibrated baseline's input).

Works on any transformers MoE whose router is a linear layer named like the pattern table's router rows
(``block_sparse_moe.gate``, ``mlp.gate``, ``mlp.router``): a forward pre-hook takes the router's input,
recomputes the logits with its weight and counts the top-k experts per token. DeepSeek-V3's
score-correction bias and group-limited routing are not modelled (top-k of the plain logits).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from alphaq.errors import AlphaQError

_ROUTER_MODULE = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:mlp|block_sparse_moe|feed_forward|moe)\.(?:gate|router)$")


@dataclass(frozen=True)
class RoutingStats:
    """Top-k selection counts per (layer, expert) on a text.

    Attributes:
        counts: int64 [layers, experts] selections (a token counts once for each of its top-k experts).
        layers: decoder layer index of each row.
        tokens: tokens routed.
        top_k: experts per token.
    """

    counts: np.ndarray
    layers: tuple[int, ...]
    tokens: int
    top_k: int

    def shares(self) -> dict[tuple[int, int], float]:
        """Fraction of a layer's selections that went to each expert (sums to 1 per layer)."""
        totals = self.counts.sum(axis=1, keepdims=True).clip(min=1)
        frac = self.counts / totals
        return {(layer, e): float(frac[i, e]) for i, layer in enumerate(self.layers) for e in range(self.counts.shape[1])}


def routing_stats(model: Any, token_ids: Any, *, context: int, top_k: int | None = None,
                  max_windows: int | None = None) -> RoutingStats:
    """Count expert selections over non-overlapping windows of ``token_ids``.

    Args:
        model: a transformers MoE causal LM (eval mode).
        token_ids: 1-D LongTensor of the whole tokenized text.
        context: window length.
        top_k: experts per token (default: the config's ``num_experts_per_tok``).
        max_windows: stop after this many windows.

    Returns:
        :class:`RoutingStats`.
    """
    import torch

    config = getattr(model.config, "text_config", None) or model.config
    k = int(top_k or getattr(config, "num_experts_per_tok", 0) or getattr(config, "moe_top_k", 0) or 2)
    routers = {int(m.group(1)): module for name, module in model.named_modules()
               if (m := _ROUTER_MODULE.search(name)) and getattr(module, "weight", None) is not None}
    if not routers:
        raise AlphaQError("no router module found in the model; routing statistics need an MoE model "
                          "with mlp.gate / block_sparse_moe.gate / mlp.router layers")
    layers = tuple(sorted(routers))
    num_experts = routers[layers[0]].weight.shape[0]
    counts = np.zeros((len(layers), num_experts), dtype=np.int64)

    def hook(row: int):
        def count(module: Any, args: tuple[Any, ...]) -> None:
            hidden = args[0].reshape(-1, args[0].shape[-1])  # [T, H]
            logits = hidden.to(module.weight.dtype) @ module.weight.T  # [T, E]
            chosen = logits.topk(k, dim=-1).indices.reshape(-1)
            counts[row] += torch.bincount(chosen, minlength=num_experts).cpu().numpy()
        return count

    handles = [routers[layer].register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    windows = token_ids.numel() // context
    if max_windows is not None:
        windows = min(windows, max_windows)
    if windows == 0:
        raise AlphaQError(f"text has {token_ids.numel()} tokens, fewer than one window of {context}; pass a longer text")
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for w in range(windows):
                model(token_ids[w * context:(w + 1) * context].unsqueeze(0).to(device))
    finally:
        for handle in handles:
            handle.remove()
    return RoutingStats(counts=counts, layers=layers, tokens=windows * context, top_k=k)
