"""Load a local Hugging Face causal-LM checkpoint (offline) and tokenize a text: the model-loading edge."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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

    from alphaq.zoo.demo import demo_model_path

    folder = demo_model_path() if path is None else Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} is not a checkpoint folder (no config.json); pass a local Hugging Face "
            "checkpoint directory"
        )
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        found = f" (found {pickled[0]})" if pickled else ""
        raise CheckpointError(
            f"{folder} has no .safetensors weights{found}; alphaq reads safetensors only (it never unpickles): "
            "convert the checkpoint with transformers' save_pretrained(..., safe_serialization=True)"
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


def tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a whole text, without special tokens (no length warning).

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the text.

    Returns:
        The ids.
    """
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


__all__ = ["load_model", "tokenize_text"]
