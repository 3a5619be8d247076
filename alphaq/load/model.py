"""Load a local Hugging Face causal-LM checkpoint (offline) and tokenize a text: the model-loading edge."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.errors import CheckpointError
from alphaq.load.architectures import check_config
from alphaq.load.safetensors_files import list_shards, read_header

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def transformers_load_errors() -> tuple[type[Exception], ...]:
    """What transformers raises on a config.json it cannot build a model from, or one that does not fit the weights:
    a field of another type (huggingface_hub's strict-dataclass error, TypeError), sizes that differ from the
    weights (RuntimeError), a hidden size the heads do not divide (ZeroDivisionError), a missing file (OSError).

    Returns:
        The exception types, for an ``except`` around ``from_pretrained`` / ``from_config``.
    """
    errors: tuple[type[Exception], ...] = (OSError, ValueError, KeyError, TypeError, RuntimeError, ArithmeticError)
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # older huggingface_hub: no strict dataclasses
        return errors
    return (*errors, StrictDataclassError)


def load_model(
    path: str | os.PathLike[str] | None = None, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
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

    from alphaq.load.hub import resolve_model
    from alphaq.zoo.demo import demo_model_path

    folder = demo_model_path() if path is None else resolve_model(path)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder} is not a checkpoint folder (no config.json); pass a local Hugging Face checkpoint directory"
        )
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        found = f" (found {pickled[0]})" if pickled else ""
        raise CheckpointError(
            f"{folder} has no .safetensors weights{found}; alphaq reads safetensors only (it never unpickles): "
            "convert the checkpoint with transformers' save_pretrained(..., safe_serialization=True)"
        )
    read_config(folder / "config.json")
    for shard in list_shards(folder):  # the headers checked here, so that transformers' reads cannot fail on them
        read_header(shard)
    kwargs: dict[str, Any] = {"local_files_only": True}
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would be a second line before a one-line error
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32 if dtype is None else dtype, **kwargs
        )
    except transformers_load_errors() as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "ignore_mismatched_sizes" in first_line:
            first_line = "a size in config.json differs from a stored tensor's"
        raise CheckpointError(
            f"cannot load {folder} as a causal LM ({first_line}); check that it is a complete "
            "local Hugging Face checkpoint whose config.json fits its weights"
        ) from exc
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    model.to(device)
    model.eval()
    return model, tokenizer


def read_config(config_file: Path) -> dict[str, Any]:
    """Read a checkpoint's ``config.json`` and check the fields alphaq reads (:func:`check_config`).

    Args:
        config_file: the file.

    Returns:
        The parsed config.

    Raises:
        CheckpointError: unreadable file, invalid JSON or UTF-8, or a field of the wrong type or range.
    """
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc}); re-download or fix it") from exc
    return check_config(config, str(config_file))


def tokenize_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a whole text, without special tokens (no length warning).

    Args:
        tokenizer: a Hugging Face tokenizer.
        text: the text.

    Returns:
        The ids.
    """
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def check_token_ids(ids: list[int], model: Any, source: str) -> None:
    """Refuse token ids the model's embedding cannot look up (a tokenizer that does not belong to the model).

    Raises:
        CheckpointError: an id at or above ``model.config.vocab_size`` (one line naming both sizes).
    """
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    get_text_config = getattr(getattr(model, "config", None), "get_text_config", None)
    if vocab is None and callable(get_text_config):
        vocab = getattr(get_text_config(), "vocab_size", None)
    if not ids or not isinstance(vocab, int):
        return
    top = max(ids)
    if top >= vocab:
        raise CheckpointError(
            f"{source}: the tokenizer gives token id {top} but the model's vocabulary has {vocab} entries; "
            "the tokenizer files do not belong to this model: put the model's own tokenizer beside its config.json"
        )


__all__ = ["check_token_ids", "load_model", "read_config", "tokenize_text", "transformers_load_errors"]
