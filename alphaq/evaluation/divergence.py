"""KL divergence of a model's next-token distributions from a reference model's, on the same windows.

The measure that llama.cpp users compare quantizations by (``llama-perplexity --kl-divergence``): for every scored
token, ``KL(P_ref || P) = sum_v P_ref(v) (log P_ref(v) - log P(v))`` with ``P_ref`` the original (16-bit) model's
next-token distribution, summarised by its mean, median and 99th percentile, and the share of tokens whose most
likely next token is the same under both models. Perplexity moves too little to tell quantizations apart; the
divergence from the original does not.

Two passes, one model in memory at a time: :class:`ReferenceLogprobs` keeps the reference model's log-probabilities
(float16, as llama.cpp keeps its base logits in 16 bits; in memory, or in a memory-mapped file for long texts) while the original is evaluated, and
:class:`DivergenceMeter` scores the candidate's logits against them batch by batch (both are ``on_logits`` hooks of
:func:`alphaq.evaluation.perplexity.perplexity`, so the divergence comes from the perplexity passes themselves).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alphaq.errors import ConfigError

#: Above this many stored values (float16) the reference log-probabilities go to a memory-mapped file.
IN_MEMORY_VALUES = 256 * 1024 * 1024


def token_divergence(reference_logprobs: Any, logits: Any) -> tuple[Any, Any]:
    """Per-token ``KL(P_ref || P)`` and whether the top token agrees.

    Args:
        reference_logprobs: log-probabilities of the reference model, ``[..., V]`` (any float dtype).
        logits: the candidate model's logits at the same positions, ``[..., V]``.

    Returns:
        ``(kld, same_top)``: ``[...]`` float64 divergences (nats, >= 0) and ``[...]`` booleans.
    """
    import torch

    ref = torch.log_softmax(reference_logprobs.double(), dim=-1)  # [..., V] (renormalised after any rounding)
    cand = torch.log_softmax(logits.double(), dim=-1)  # [..., V]
    kld = (ref.exp() * (ref - cand)).sum(dim=-1).clamp_min(0.0)  # [...]
    same_top = ref.argmax(dim=-1) == cand.argmax(dim=-1)  # [...]
    return kld, same_top


class ReferenceLogprobs:
    """The reference model's next-token log-probabilities of the first ``windows`` scored windows, as float16.

    Use :meth:`record` as the ``on_logits`` hook of the reference model's perplexity pass, then give the object to
    a :class:`DivergenceMeter`. The store is allocated at the first batch, from its logits' shape; windows past
    ``windows`` are not stored (and not scored by the meter).

    Args:
        windows: windows to store (the first of the pass).
        spill_dir: folder for a memory-mapped file when the store is larger than :data:`IN_MEMORY_VALUES`
            values (``None``: always in memory).
    """

    def __init__(self, windows: int, *, spill_dir: str | Path | None = None) -> None:
        if windows < 1:
            raise ConfigError(f"reference log-probabilities need at least 1 window, got {windows}")
        self.windows = int(windows)
        self._spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._file: Path | None = None
        self.values: np.ndarray | None = None  # [W, T, V] once the first batch arrived
        self.filled = np.zeros(self.windows, dtype=bool)  # [W]

    def _allocate(self, positions: int, vocab: int) -> np.ndarray:
        shape = (self.windows, positions, vocab)
        if self._spill_dir is not None and math.prod(shape) > IN_MEMORY_VALUES:
            self._file = self._spill_dir / "reference_logprobs.f16"
            return np.memmap(self._file, dtype=np.float16, mode="w+", shape=shape)
        return np.zeros(shape, dtype=np.float16)

    def record(self, window_index: Sequence[int], logits: Any) -> None:
        """Store the log-probabilities of a batch of windows.

        Args:
            window_index: index of each window of the batch in the whole pass, ``[B]``.
            logits: the reference model's logits, ``[B, T, V]``.
        """
        import torch

        rows = [(row, index) for row, index in enumerate(window_index) if index < self.windows]
        if not rows:
            return
        if self.values is None:
            self.values = self._allocate(int(logits.shape[1]), int(logits.shape[2]))
        if tuple(logits.shape[1:]) != self.values.shape[1:]:
            raise ConfigError(
                f"reference logits of shape {tuple(logits.shape[1:])} do not match the store's "
                f"{tuple(self.values.shape[1:])}; score both models with the same context and tokenizer"
            )
        for row, index in rows:
            self.values[index] = torch.log_softmax(logits[row].float(), dim=-1).to(torch.float16).cpu().numpy()
            self.filled[index] = True

    def window(self, index: int) -> np.ndarray:
        """The stored log-probabilities of one window, ``[T, V]``.

        Raises:
            ConfigError: the reference pass did not score this window.
        """
        if self.values is None or not 0 <= index < self.windows or not self.filled[index]:
            raise ConfigError(
                f"window {index} has no reference log-probabilities; evaluate the original model on "
                "the same windows first"
            )
        return np.asarray(self.values[index])

    def close(self) -> None:
        """Drop the stored values (and the memory-mapped file, if any)."""
        self.values = None
        self.filled[:] = False
        if self._file is not None:
            self._file.unlink(missing_ok=True)
            self._file = None


@dataclass(frozen=True)
class DivergenceResult:
    """KL divergence of a model from the reference over the scored tokens.

    Attributes:
        mean_kld: mean per-token ``KL(P_ref || P)`` (nats).
        median_kld: its median.
        p99_kld: its 99th percentile.
        max_kld: its maximum.
        same_top: share of tokens whose most likely next token is the reference's.
        tokens: scored tokens.
        windows: scored windows.
        window_kld: per-window sums of the divergence (for paired bootstrap intervals); left out of :meth:`record`.
        window_same_top: per-window counts of agreeing top tokens; left out of :meth:`record`.
        window_tokens: per-window scored tokens; left out of :meth:`record`.
    """

    mean_kld: float
    median_kld: float
    p99_kld: float
    max_kld: float
    same_top: float
    tokens: int
    windows: int
    window_kld: tuple[float, ...] = field(default=(), repr=False)
    window_same_top: tuple[int, ...] = field(default=(), repr=False)
    window_tokens: tuple[int, ...] = field(default=(), repr=False)

    def record(self) -> dict[str, Any]:
        """The JSON record of eval.json and compare.json (the per-window lists left out)."""
        out = asdict(self)
        for key in ("window_kld", "window_same_top", "window_tokens"):
            out.pop(key)
        return out


class DivergenceMeter:
    """Scores a candidate model's logits against :class:`ReferenceLogprobs`, batch by batch.

    Use :meth:`record` as the ``on_logits`` hook of the candidate's perplexity pass over the same windows, then
    :meth:`result`.

    Args:
        reference: the reference model's stored log-probabilities of the same windows.
    """

    def __init__(self, reference: ReferenceLogprobs) -> None:
        self.reference = reference
        self._token_kld: list[np.ndarray] = []
        self._window: dict[int, tuple[float, int, int]] = {}

    def record(self, window_index: Sequence[int], logits: Any) -> None:
        """Score a batch of windows.

        Args:
            window_index: index of each window of the batch in the whole pass, ``[B]``.
            logits: the candidate's logits, ``[B, T, V]``.
        """
        import torch

        for row, index in enumerate(window_index):
            if index >= self.reference.windows:
                continue  # past the stored windows: perplexity only
            ref = torch.from_numpy(self.reference.window(index))  # [T, V]
            if ref.shape != logits.shape[1:]:
                raise ConfigError(
                    f"candidate logits of shape {tuple(logits.shape[1:])} do not match the reference's "
                    f"{tuple(ref.shape)}; score both models with the same context and tokenizer"
                )
            # the candidate's log-probabilities take the reference's float16 rounding, so a model scores exactly
            # 0 against itself and the rounding (<= 5e-4 relative) cancels to first order
            rounded = torch.log_softmax(logits[row].float(), dim=-1).to(torch.float16).cpu()  # [T, V]
            kld, same = token_divergence(ref, rounded)  # [T], [T]
            values = kld.numpy()
            self._token_kld.append(values)
            self._window[index] = (float(values.sum()), int(same.sum()), int(values.size))

    def result(self) -> DivergenceResult:
        """The summary over every scored token.

        Raises:
            ConfigError: no window was scored.
        """
        if not self._token_kld:
            raise ConfigError("no window was scored for KL divergence; the text is shorter than one window")
        values = np.concatenate(self._token_kld)  # [N]
        order = sorted(self._window)
        sums = tuple(self._window[i][0] for i in order)
        same = tuple(self._window[i][1] for i in order)
        counts = tuple(self._window[i][2] for i in order)
        return DivergenceResult(
            mean_kld=float(values.mean()),
            median_kld=float(np.median(values)),
            p99_kld=float(np.quantile(values, 0.99)),
            max_kld=float(values.max()),
            same_top=float(sum(same) / sum(counts)),
            tokens=int(values.size),
            windows=len(order),
            window_kld=sums,
            window_same_top=same,
            window_tokens=counts,
        )


def divergence_between(
    reference_model: Any,
    model: Any,
    ids: Sequence[int] | Any,
    context: int,
    *,
    max_windows: int | None = None,
    batch_size: int = 8,
    spill_dir: str | Path | None = None,
) -> DivergenceResult:
    """KL divergence of ``model`` from ``reference_model`` on the same full windows (two perplexity passes).

    Args:
        reference_model: the original causal LM.
        model: the candidate (quantized or simulated) causal LM with the same vocabulary.
        ids: the whole tokenized text, ``[N]``.
        context: window length.
        max_windows: only the first this many windows; ``None`` for all.
        batch_size: windows per forward pass.
        spill_dir: folder for the reference's log-probabilities when they are large (see :class:`ReferenceLogprobs`).

    Returns:
        The :class:`DivergenceResult`.
    """
    import torch

    from alphaq.evaluation.perplexity import perplexity, scored_windows

    n_windows = scored_windows(torch.as_tensor(ids).numel(), context, max_windows=max_windows)
    if n_windows == 0:
        raise ConfigError(f"the text is shorter than one window of {context} tokens; pass a longer text")
    store = ReferenceLogprobs(n_windows, spill_dir=spill_dir)
    try:
        perplexity(reference_model, ids, context, max_windows=n_windows, batch_size=batch_size, on_logits=store.record)
        meter = DivergenceMeter(store)
        perplexity(model, ids, context, max_windows=n_windows, batch_size=batch_size, on_logits=meter.record)
        return meter.result()
    finally:
        store.close()


__all__ = [
    "IN_MEMORY_VALUES",
    "DivergenceMeter",
    "DivergenceResult",
    "ReferenceLogprobs",
    "divergence_between",
    "token_divergence",
]
