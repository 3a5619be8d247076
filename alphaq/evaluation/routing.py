"""Routing statistics: how often each routed expert is selected, on a text (the calibrated baseline's input) or
on uniformly random tokens (:func:`random_token_routing`, a data-free prior).

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
        return {
            (layer, e): float(frac[i, e]) for i, layer in enumerate(self.layers) for e in range(self.counts.shape[1])
        }


def routing_stats(
    model: Any, token_ids: Any, *, context: int, top_k: int | None = None, max_windows: int | None = None
) -> RoutingStats:
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

    windows = token_ids.numel() // context
    if max_windows is not None:
        windows = min(windows, max_windows)
    if windows == 0:
        raise AlphaQError(
            f"text has {token_ids.numel()} tokens, fewer than one window of {context}; pass a longer text"
        )
    device = next(model.parameters()).device
    with RoutingCounter(model, top_k=top_k) as counter, torch.no_grad():
        for w in range(windows):
            model(token_ids[w * context : (w + 1) * context].unsqueeze(0).to(device))
    return counter.stats()


#: Windows of uniformly random token ids behind :func:`random_token_routing` (on the bundled model its shares, 0 to
#: 0.49, move by at most 0.014 between 8, 32 and 64 windows) and the seed of their draw.
PRIOR_WINDOWS = 32
PRIOR_SEED = 0


def random_token_routing(
    model: Any, *, context: int, windows: int = PRIOR_WINDOWS, seed: int = PRIOR_SEED, top_k: int | None = None
) -> RoutingStats:
    """Routing of uniformly random token sequences: a data-free prior of each expert's routing share.

    No text is read: ``windows`` sequences of ``context`` token ids drawn uniformly from the vocabulary (seeded
    ``torch.Generator``) go through the model and the routers' top-k choices are counted. Experts that the router
    favours whatever the input get large shares. On the bundled model the prior's shares rank-correlate 0.83 with
    the shares on WikiText-2 (router weight norms: 0.18), and weighting each expert's squared quantization error by
    them ranks plans by measured damage better than any alpha-only predictor (``docs/results.md``).

    Args:
        model: a transformers MoE causal LM (eval mode).
        context: tokens per sequence (the model's evaluation window).
        windows: sequences.
        seed: seed of the token draw (equal seeds give identical counts).
        top_k: experts per token (default: the config's).

    Returns:
        :class:`RoutingStats` of ``windows * context`` tokens.

    Raises:
        AlphaQError: the model has no router module or no vocabulary size in its config.
    """
    import torch

    config = getattr(model.config, "text_config", None) or model.config
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if vocab < 1 or windows < 1 or context < 1:
        raise AlphaQError(
            f"random-token routing needs a vocabulary size and windows/context >= 1 (got vocab {vocab}, "
            f"windows {windows}, context {context})"
        )
    generator = torch.Generator().manual_seed(int(seed))
    ids = torch.randint(0, vocab, (windows * context,), generator=generator)  # [windows * context]
    return routing_stats(model, ids, context=context, top_k=top_k)


class RoutingCounter:
    """Context manager counting the experts each router selects during whatever forward passes run inside it.

    Lets an evaluation record routing shares in the same forward passes that measure perplexity.

    Args:
        model: a transformers MoE causal LM.
        top_k: experts per token (default: the config's ``num_experts_per_tok``).

    Raises:
        AlphaQError: the model has no router module.
    """

    def __init__(self, model: Any, *, top_k: int | None = None) -> None:
        config = getattr(model.config, "text_config", None) or model.config
        self.top_k = int(top_k or getattr(config, "num_experts_per_tok", 0) or getattr(config, "moe_top_k", 0) or 2)
        self._routers = {
            int(m.group(1)): module
            for name, module in model.named_modules()
            if (m := _ROUTER_MODULE.search(name)) and getattr(module, "weight", None) is not None
        }
        if not self._routers:
            raise AlphaQError(
                "no router module found in the model; routing statistics need an MoE model "
                "with mlp.gate / block_sparse_moe.gate / mlp.router layers"
            )
        self.layers = tuple(sorted(self._routers))
        num_experts = int(self._routers[self.layers[0]].weight.shape[0])
        self.counts = np.zeros((len(self.layers), num_experts), dtype=np.int64)  # [layers, E]
        self._tokens = np.zeros(len(self.layers), dtype=np.int64)
        self._handles: list[Any] = []

    def _hook(self, row: int) -> Any:
        import torch

        def count(module: Any, args: tuple[Any, ...]) -> None:
            hidden = args[0].reshape(-1, args[0].shape[-1])  # [T, H]
            logits = hidden.to(module.weight.dtype) @ module.weight.T  # [T, E]
            chosen = logits.topk(self.top_k, dim=-1).indices.reshape(-1)  # [T * k]
            self.counts[row] += torch.bincount(chosen, minlength=self.counts.shape[1]).cpu().numpy()
            self._tokens[row] += hidden.shape[0]

        return count

    def __enter__(self) -> RoutingCounter:  # noqa: PYI034 (Self needs Python 3.11)
        self._handles = [
            self._routers[layer].register_forward_pre_hook(self._hook(i)) for i, layer in enumerate(self.layers)
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def stats(self) -> RoutingStats:
        """The counts so far (tokens: those seen by the first router)."""
        return RoutingStats(
            counts=self.counts.copy(), layers=self.layers, tokens=int(self._tokens[0]), top_k=self.top_k
        )
