"""Perplexity with the standard GPTQ-family protocol.

The protocol of the GPTQ reference implementation's WikiText-2 evaluation (https://github.com/IST-DASLab/gptq,
``opt_eval``/``llama_eval``: ``nsamples = numel // seqlen`` windows of ``seqlen`` tokens) that quantization papers
report, which is Hugging Face's fixed-length-model perplexity with the stride equal to the window
(https://huggingface.co/docs/transformers/perplexity).

The text is tokenized whole, cut into non-overlapping windows of the model's context (2048 for real models,
the bundled demo's own context), the remainder shorter than a window is dropped, and
``ppl = exp(mean token NLL)`` over every predicted token (``logits[:, :-1]`` vs ``ids[:, 1:]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from alphaq.errors import ConfigError

#: Window length of the standard protocol for real models.
STANDARD_CONTEXT = 2048


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of a model on one token sequence.

    Attributes:
        nll: mean token NLL (nats); NaN when no window fits.
        ppl: ``exp(nll)``.
        tokens: predicted (scored) tokens.
        windows: windows evaluated.
        context: window length.
        stride: step between window starts (``context`` = the standard non-overlapping protocol).
        dropped_tokens: tokens at the end of the text that fit no window (or past ``max_windows``).
        status: ``ok`` or ``no_window`` (text shorter than one window).
        window_nll: NLL sum (nats) of each window, in order (for paired bootstrap intervals,
            :mod:`alphaq.evaluation.bootstrap`); left out of :meth:`record`.
        window_tokens: scored tokens of each window.
    """

    nll: float
    ppl: float
    tokens: int
    windows: int
    context: int
    stride: int
    dropped_tokens: int
    status: str = "ok"
    window_nll: tuple[float, ...] = field(default=(), repr=False)
    window_tokens: tuple[int, ...] = field(default=(), repr=False)

    def record(self) -> dict[str, Any]:
        """The JSON record of eval.json and compare.json (the per-window lists left out)."""
        out = asdict(self)
        out.pop("window_nll")
        out.pop("window_tokens")
        return out


def model_context(model: Any, *, cap: int = STANDARD_CONTEXT) -> int:
    """The protocol's window length for ``model``: its ``max_position_embeddings``, at most ``cap``.

    Args:
        model: a transformers model (``model.config``).
        cap: upper bound (2048 in the standard protocol).

    Returns:
        The window length.
    """
    config = getattr(model.config, "text_config", None) or model.config
    return min(int(getattr(config, "max_position_embeddings", cap) or cap), cap)


def window_starts(n_tokens: int, context: int, stride: int) -> list[int]:
    """Start offsets of the full windows of ``context`` tokens, ``stride`` apart (remainder dropped)."""
    if n_tokens < context:
        return []
    return list(range(0, n_tokens - context + 1, stride))


def scored_windows(n_tokens: int, context: int, stride: int | None = None, max_windows: int | None = None) -> int:
    """How many windows :func:`perplexity` scores: the full windows of ``context`` tokens, ``stride`` apart
    (``None``: ``context``), at most ``max_windows``."""
    windows = len(window_starts(n_tokens, context, stride or context))
    return min(windows, max_windows) if max_windows else windows


def perplexity(
    model: Any,
    ids: Sequence[int] | Any,
    context: int,
    *,
    max_windows: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    on_logits: Callable[[Sequence[int], Any], None] | None = None,
) -> PerplexityResult:
    """Mean next-token NLL and perplexity over full windows of ``context`` tokens.

    Args:
        model: a causal LM returning ``logits``.
        ids: the whole tokenized text, ``[N]``.
        context: window length.
        max_windows: evaluate only the first this many windows; ``None`` for all.
        stride: step between window starts; ``None`` = ``context`` (standard, non-overlapping). With a
            smaller stride every window after the first scores only its last ``stride`` tokens
            (sliding-window evaluation), so every token is still scored once.
        batch_size: windows per forward pass at most; capped to what fits in half the device's available memory
            (:func:`alphaq.evaluation.batch_memory.memory_batch_size`: the logits of a large vocabulary dominate).
        progress: ``progress(windows_done, total_windows)`` after each forward pass.
        on_logits: ``on_logits(window_index, logits)`` after each forward pass, with the index of each window of the
            batch in the pass and its float32 logits at every predicted position, ``[B, T-1, V]`` (KL divergence:
            :mod:`alphaq.evaluation.divergence`).

    Returns:
        A :class:`PerplexityResult`.

    Raises:
        ConfigError: a context, stride or max_windows that is not positive, or a stride above the context.
    """
    import torch
    import torch.nn.functional as F

    from alphaq.evaluation.batch_memory import memory_batch_size

    step = context if stride is None else int(stride)
    if context < 2:
        raise ConfigError(f"context {context} must be >= 2 tokens; pass the model's context length")
    if not 1 <= step <= context:
        raise ConfigError(f"stride {step} must be in 1..context ({context}); leave it unset for the standard protocol")
    if max_windows is not None and max_windows < 1:
        raise ConfigError(f"max_windows {max_windows} must be >= 1 (or unset for all windows)")
    all_ids = torch.as_tensor(ids, dtype=torch.long).flatten()  # [N]
    starts = window_starts(all_ids.numel(), context, step)
    if max_windows is not None:
        starts = starts[:max_windows]
    covered = (starts[-1] + context) if starts else 0
    if not starts:
        return PerplexityResult(
            nll=math.nan,
            ppl=math.nan,
            tokens=0,
            windows=0,
            context=context,
            stride=step,
            dropped_tokens=int(all_ids.numel()),
            status="no_window",
        )
    device = next(model.parameters()).device
    batch_size = memory_batch_size(model, context, batch_size, device)
    total_nll, total_tokens = 0.0, 0
    window_nll: list[float] = []
    window_tokens: list[int] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for first in range(0, len(starts), batch_size):
                group = starts[first : first + batch_size]
                batch = torch.stack([all_ids[s : s + context] for s in group]).to(device)  # [B, T]
                logits = model(input_ids=batch).logits[:, :-1].float()  # [B, T-1, V]
                if on_logits is not None:
                    on_logits(range(first, first + len(group)), logits)
                targets = batch[:, 1:].clone()  # [B, T-1]
                for row, s in enumerate(group):
                    if s > 0 and step < context:  # sliding: score only the new tokens
                        targets[row, : context - 1 - step] = -100
                token_nll = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
                ).view(targets.shape)  # [B, T-1]
                per_window = token_nll.double().sum(dim=1)  # [B]
                counts = (targets != -100).sum(dim=1)  # [B]
                window_nll.extend(float(v) for v in per_window)
                window_tokens.extend(int(c) for c in counts)
                total_nll += float(per_window.sum())
                total_tokens += int(counts.sum())
                if progress is not None:
                    progress(len(group), len(starts))
    finally:
        model.train(was_training)
    mean = total_nll / total_tokens
    return PerplexityResult(
        nll=mean,
        ppl=math.exp(mean),
        tokens=total_tokens,
        windows=len(starts),
        context=context,
        stride=step,
        dropped_tokens=int(all_ids.numel()) - covered,
        window_nll=tuple(window_nll),
        window_tokens=tuple(window_tokens),
    )


def perplexity_and_routing(
    model: Any,
    ids: Sequence[int] | Any,
    context: int,
    *,
    max_windows: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    on_logits: Callable[[Sequence[int], Any], None] | None = None,
) -> tuple[PerplexityResult, Any]:
    """:func:`perplexity` and, for an MoE, the routing of the same forward passes (one pass over the text).

    The one measurement behind ``alphaq eval``, ``alphaq compare``, the model cards and the demo's ``card.json``.

    Args:
        model: a causal LM returning ``logits``.
        ids: the whole tokenized text, ``[N]``.
        context: window length.
        max_windows: evaluate only the first this many windows; ``None`` for all.
        stride: as in :func:`perplexity`.
        batch_size: windows per forward pass.
        progress: ``progress(windows_done, total_windows)`` after each forward pass.
        on_logits: as in :func:`perplexity`.

    Returns:
        ``(result, routing)``: the :class:`PerplexityResult` and the
        :class:`~alphaq.evaluation.routing.RoutingStats` of the evaluated windows (``None`` for a dense model).
    """
    from alphaq.errors import AlphaQError
    from alphaq.evaluation.routing import RoutingCounter

    try:
        counter = RoutingCounter(model)
    except AlphaQError:  # a dense model: perplexity only
        return perplexity(
            model,
            ids,
            context,
            max_windows=max_windows,
            stride=stride,
            batch_size=batch_size,
            progress=progress,
            on_logits=on_logits,
        ), None
    with counter:
        result = perplexity(
            model,
            ids,
            context,
            max_windows=max_windows,
            stride=stride,
            batch_size=batch_size,
            progress=progress,
            on_logits=on_logits,
        )
    return result, counter.stats()


__all__ = [
    "STANDARD_CONTEXT",
    "PerplexityResult",
    "model_context",
    "perplexity",
    "perplexity_and_routing",
    "scored_windows",
    "window_starts",
]
