"""How many evaluation windows fit in one forward pass, from the memory one window needs.

One window of ``T`` tokens costs about ``T * V * 4`` bytes per float32 copy of its logits (the model's output, the
float copy that is scored, the log-softmax of the cross entropy: :data:`LOGITS_COPIES` copies) plus the
activations of one layer (``T * H`` per hidden state, ``heads * T * T`` attention scores). For a model with a
large vocabulary the logits dominate: 157k x 2048 x 4 bytes is 1.3 GB per copy, so the default batch of 8 windows
asked for about 20 GB where one window peaked at 7.4 GB. :func:`fit_batch_size` caps the batch so that it fits in
half the memory available on the device (CUDA free memory, else the system's available memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LOGITS_COPIES", "WindowCost", "available_memory", "fit_batch_size", "memory_batch_size"]

#: float32 copies of one window's logits alive at the peak of a pass (output, float copy, log-softmax).
LOGITS_COPIES = 3.0
#: [T, H] float32 hidden states alive at once in one layer (residual, norms, MLP intermediates of width ~4H...).
HIDDEN_COPIES = 16
#: Fraction of the available memory the batch may use.
MEMORY_FRACTION = 0.5


@dataclass(frozen=True)
class WindowCost:
    """The sizes that set the memory of one evaluation window.

    Attributes:
        context: tokens per window ``T``.
        vocab: vocabulary size ``V`` (logits per token).
        hidden: hidden size ``H``.
        heads: attention heads (eager attention keeps ``heads * T * T`` scores); 0 when unknown.
    """

    context: int
    vocab: int
    hidden: int
    heads: int = 0

    def __post_init__(self) -> None:
        for name in ("context", "vocab", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"WindowCost.{name} must be >= 1, got {getattr(self, name)}")
        if self.heads < 0:
            raise ValueError(f"WindowCost.heads must be >= 0, got {self.heads}")

    @property
    def nbytes(self) -> int:
        """Bytes one window needs at the peak of a forward pass and its scoring (float32)."""
        logits = self.context * self.vocab * 4 * LOGITS_COPIES
        activations = self.context * self.hidden * 4 * HIDDEN_COPIES + self.heads * self.context * self.context * 4
        return int(logits + activations)


def fit_batch_size(requested: int, cost: WindowCost, available: int | None, fraction: float = MEMORY_FRACTION) -> int:
    """The batch to run: ``requested`` capped so that ``batch * cost.nbytes <= fraction * available``.

    Args:
        requested: the batch asked for (``--batch-size``).
        cost: one window's sizes.
        available: bytes available on the device; None (unknown) keeps ``requested``.
        fraction: share of ``available`` the batch may use.

    Returns:
        A batch size in ``1..requested`` (at least 1: one window is always tried).
    """
    if available is None:
        return max(1, int(requested))
    fits = int(available * fraction // max(1, cost.nbytes))
    return max(1, min(int(requested), fits))


def available_memory(device: Any) -> int | None:
    """Bytes free for a new allocation on ``device`` (CUDA: free device memory; else the system's available)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_batch_size(model: Any, context: int, requested: int, device: Any) -> int:
    """:func:`fit_batch_size` for a loaded transformers model (sizes from its text config)."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None) or getattr(config, "vocab_size", None)
    hidden = getattr(text, "hidden_size", None) or getattr(config, "hidden_size", None)
    if not vocab or not hidden:
        return max(1, int(requested))
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    cost = WindowCost(context=int(context), vocab=int(vocab), hidden=int(hidden), heads=heads)
    return fit_batch_size(requested, cost, available_memory(device))
