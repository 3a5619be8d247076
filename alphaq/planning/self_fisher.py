"""The model's own Fisher information, measured without data: a data-free KL-divergence predictor.

For a small weight change ``d``, the KL divergence of the model's next-token distribution from the original's is
``KL(p || p_d) ~= 1/2 d^T F d`` where ``F`` is the Fisher information of the model's *own* distribution:
``F = E_x E_{y ~ p(.|x)} [g g^T]``, ``g = grad log p(y | x)``. Both expectations can be taken over text the model
writes itself: sequences sampled token by token from the 16-bit model (ancestral sampling, temperature 1, no
truncation) are samples of ``x`` *and* of ``y``. No text is read.

Quantization errors of different weights are nearly uncorrelated, so the cross terms average out and the
expected KL of a quantized model is ``1/2 sum_i F_ii d_i^2``: each weight's squared error weighted by its
Fisher diagonal. Scores of different tokens have zero mean given their prefix (``y_t`` is drawn from the model),
so the squared gradient of a whole sequence's (or batch's) log-likelihood is an unbiased estimate of the sum of
its tokens' Fisher diagonals: one backward pass per batch, no per-token gradients.

This module is pure torch: a model and token ids in, tensors out. :func:`column_fisher` reduces each weight's
Fisher over its rows to one value per input column (``[cols]``, or ``[E, cols]`` for fused experts): what the GGUF
measurements weight each column's squared error with (row permutations by converters do not change it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alphaq.errors import ConfigError

if TYPE_CHECKING:
    import torch

ProgressFn = Callable[[int, str, int], None]


@dataclass(frozen=True)
class SelfFisherConfig:
    """How much self-generated text the Fisher is measured on.

    Args:
        sequences: sequences sampled from the model.
        length: tokens per sequence (including the start token).
        batch_size: sequences per backward pass (1: lowest variance for the same compute).
        seed: sampling seed.
        temperature: sampling temperature (1.0: the model's own distribution, as the Fisher needs).
    """

    sequences: int = 64
    length: int = 256
    batch_size: int = 4
    seed: int = 0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        for name in ("sequences", "length", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"self-Fisher {name}={getattr(self, name)} must be >= 1; pass a positive count")
        if self.length < 2:
            raise ConfigError(f"self-Fisher length={self.length} must be >= 2 tokens; pass e.g. 256")
        if not self.temperature > 0:
            raise ConfigError(f"self-Fisher temperature={self.temperature} must be > 0; pass 1.0")


def sample_sequences(model: torch.nn.Module, config: SelfFisherConfig, start_token: int) -> torch.Tensor:
    """Sequences written by the model itself, starting from ``start_token``.

    Args:
        model: a causal LM (transformers ``*ForCausalLM``), evaluated without gradients.
        config: counts and seed.
        start_token: the first token of every sequence (the BOS/EOS id).

    Returns:
        int64 ``[N, T]`` token ids.
    """
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    out = []
    model.eval()
    with torch.no_grad():
        for first in range(0, config.sequences, config.batch_size * 4):
            n = min(config.batch_size * 4, config.sequences - first)
            ids = torch.full((n, 1), int(start_token), dtype=torch.long)  # [n, 1]
            cache = None
            step_input = ids
            for _ in range(config.length - 1):
                result = model(input_ids=step_input, cache=cache, use_cache=True)
                cache = result.cache
                logits = result.logits[:, -1, :].float() / config.temperature  # [n, V]
                probs = torch.softmax(logits, dim=-1)
                step_input = torch.multinomial(probs, 1, generator=generator)  # [n, 1]
                ids = torch.cat([ids, step_input], dim=1)
            out.append(ids)
    return torch.cat(out, dim=0)


def fisher_diagonal(
    model: torch.nn.Module, ids: torch.Tensor, *, batch_size: int = 4, progress: ProgressFn | None = None
) -> tuple[dict[str, torch.Tensor], int]:
    """Mean per-token Fisher diagonal of every 2-D or 3-D weight, from sequences the model wrote.

    Args:
        model: the causal LM (its parameters get gradients; restored to no-grad state after).
        ids: ``[N, T]`` sequences sampled from ``model`` (:func:`sample_sequences`).
        batch_size: sequences per backward pass.
        progress: ``progress(1, "batch i", batches)``.

    Returns:
        ``(fisher, tokens)``: parameter name -> float32 tensor of its shape, the mean over predicted tokens of
        ``E[g^2]``; and the number of predicted tokens.
    """
    import torch

    params = {n: p for n, p in model.named_parameters() if p.ndim >= 2}
    was = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in params)
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    tokens = 0
    model.eval()
    batches = range(0, ids.shape[0], batch_size)
    try:
        for i, first in enumerate(batches):
            batch = ids[first : first + batch_size]  # [b, T]
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=batch).logits[:, :-1, :].float()  # [b, T-1, V]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
            )
            nll.backward()
            for n, p in params.items():
                if p.grad is not None:
                    sums[n] += p.grad.detach().float().square()
            tokens += batch.shape[0] * (batch.shape[1] - 1)
            if progress is not None:
                progress(1, f"batch {i + 1}", len(batches))
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in model.named_parameters():
            p.requires_grad_(was[n])
    return {n: s / max(tokens, 1) for n, s in sums.items()}, tokens


__all__ = ["SelfFisherConfig", "fisher_diagonal", "sample_sequences"]
