"""Load a local Hugging Face causal-LM checkpoint (offline), locate the bundled demo model, and
measure a causal LM's perplexity on a text (standard non-overlapping-window protocol)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEMO_MODEL_NAME = "demo-moe"


def demo_model_dir() -> Path:
    """Where the bundled demo checkpoint lives inside the package (it may be missing).

    Returns:
        ``alphaq/data/demo-moe``.
    """
    return Path(__file__).resolve().parent / "data" / DEMO_MODEL_NAME


def demo_model_path() -> Path:
    """The bundled, trained demo MoE checkpoint folder (Mixtral layout, bf16 safetensors).

    Returns:
        The existing checkpoint directory.

    Raises:
        CheckpointError: when the bundled checkpoint is missing from the installation.
    """
    path = demo_model_dir()
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise CheckpointError(
            f"bundled demo model not found at {path}; reinstall alphaq or rebuild it with "
            "`python -m alphaq.zoo.train_demo`"
        )
    return path


def load_model(
    path: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local causal-LM checkpoint and its tokenizer, offline, in eval mode.

    Args:
        path: checkpoint directory (``config.json`` + safetensors + tokenizer files);
            ``None`` loads the bundled demo model.
        dtype: parameter dtype; ``None`` means ``torch.float32``.
        device: where to place the model.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.

    Raises:
        CheckpointError: when the folder is missing or cannot be loaded as a causal LM.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = demo_model_path() if path is None else Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} is not a checkpoint folder (no config.json); pass a local Hugging Face "
            "checkpoint directory"
        )
    kwargs: dict[str, Any] = {"local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32 if dtype is None else dtype, **kwargs
        )
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot load {folder} as a causal LM ({first_line}); check that it is a complete "
            "local Hugging Face checkpoint"
        ) from exc
    model.to(device)
    model.eval()
    return model, tokenizer


@dataclass(frozen=True)
class TextEval:
    """Next-token NLL of a model on one text (non-overlapping windows).

    Attributes:
        nll: mean token NLL (nats).
        ppl: ``exp(nll)``.
        tokens: number of predicted tokens.
        windows: number of windows.
        routing_counts: top-k assignments per layer and expert, ``[L, E]``; empty for dense models.
    """

    nll: float
    ppl: float
    tokens: int
    windows: int
    routing_counts: tuple[tuple[int, ...], ...]


def evaluate_ids(
    model: Any,
    ids: Sequence[int] | torch.Tensor,
    context: int,
    *,
    max_windows: int | None = None,
    batch_size: int = 8,
    count_routing: bool = False,
) -> TextEval:
    """Mean next-token NLL over non-overlapping windows of ``context`` tokens.

    Args:
        model: a causal LM returning ``logits`` (and ``router_logits`` when asked).
        ids: the whole tokenized text.
        context: window length (the model's context).
        max_windows: evaluate only the first this many windows; ``None`` for all (the last,
            shorter window included when it has at least 2 tokens).
        batch_size: windows per forward pass.
        count_routing: also count top-k router assignments per layer/expert.

    Returns:
        A :class:`TextEval`.
    """
    import torch
    import torch.nn.functional as F

    all_ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    n_full = all_ids.numel() // context
    windows = [all_ids[i * context : (i + 1) * context] for i in range(n_full)]
    tail = all_ids[n_full * context :]
    if tail.numel() >= 2:
        windows.append(tail)
    if max_windows is not None:
        windows = windows[:max_windows]
    device = next(model.parameters()).device
    top_k = int(getattr(model.config, "num_experts_per_tok", 0) or 0)
    total_nll, total_tokens = 0.0, 0
    counts: torch.Tensor | None = None  # [L, E]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            group = windows[start : start + batch_size]
            for length in sorted({w.numel() for w in group}):
                batch = torch.stack([w for w in group if w.numel() == length]).to(device)  # [B, T]
                out = model(input_ids=batch, output_router_logits=count_routing and top_k > 0)
                logits = out.logits[:, :-1].float()  # [B, T-1, V]
                nll = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
                )
                total_nll += float(nll)
                total_tokens += batch.shape[0] * (length - 1)
                if count_routing and top_k > 0 and out.router_logits is not None:
                    per_layer = []
                    for layer_logits in out.router_logits:  # each [B*T, E]
                        chosen = layer_logits.float().topk(top_k, dim=-1).indices.flatten()
                        per_layer.append(torch.bincount(chosen.cpu(), minlength=layer_logits.shape[-1]))
                    step = torch.stack(per_layer)  # [L, E]
                    counts = step if counts is None else counts + step
    model.train(was_training)
    mean = total_nll / max(total_tokens, 1)
    routing = () if counts is None else tuple(tuple(int(c) for c in row) for row in counts.tolist())
    return TextEval(nll=mean, ppl=math.exp(mean), tokens=total_tokens, windows=len(windows), routing_counts=routing)


def tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a whole text, without special tokens (no length warning).

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the text.

    Returns:
        The ids.
    """
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
