"""Model names as every tool of the ecosystem takes them: a local folder, or a Hugging Face model id.

``alphaq inspect Qwen/Qwen1.5-MoE-A2.7B`` resolves the id through :mod:`huggingface_hub`: it downloads the
safetensors, configs and tokenizer files when online, and takes the local cache's snapshot when
``HF_HUB_OFFLINE=1`` (or with ``local_files_only``). A path that exists is always a local folder, so a folder
named like an id keeps working. Nothing here runs at import; ``huggingface_hub`` is imported on use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from alphaq.errors import CheckpointError

#: ``owner/name`` or ``owner/name@revision`` (the Hub's repository id grammar: letters, digits, ``-_.``).
_REPO_ID = re.compile(
    r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})(?:@(?P<rev>[\w./-]+))?$"
)

#: Files alphaq reads from a model repository (never pickles, never remote code).
ALLOW_PATTERNS = ("*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "README.md")


def looks_like_model_id(spec: str) -> bool:
    """Whether ``spec`` has the form of a Hub model id (``owner/name[@revision]``) rather than a path.

    Args:
        spec: what the user passed as MODEL.

    Returns:
        True for ``Qwen/Qwen1.5-MoE-A2.7B`` or ``org/model@v1``; False for ``./a/b``, ``/abs/path``, ``a/b/c``, ``~/m``.
    """
    return bool(_REPO_ID.match(spec)) and not spec.startswith((".", "~"))


def resolve_model(
    spec: str | os.PathLike[str],
    *,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The local folder of a model: the path itself when it exists, else the Hub snapshot of a model id.

    Args:
        spec: a checkpoint folder, or a Hub model id ``owner/name[@revision]``.
        local_files_only: only the local cache (``None``: as ``HF_HUB_OFFLINE`` says now).
        cache_dir: the Hub cache (``None``: ``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``).

    Returns:
        A folder with the model's ``config.json`` and safetensors.

    Raises:
        CheckpointError: neither an existing path nor a model id, or an id that is not cached while offline, does not
            exist on the Hub, or fails to download (one line with the fix).
    """
    path = Path(spec).expanduser()
    text = os.fspath(spec)
    if path.exists() or not looks_like_model_id(text):
        return path
    match = _REPO_ID.match(text)
    assert match is not None  # looks_like_model_id
    repo_id, revision = match.group("repo"), match.group("rev")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(ALLOW_PATTERNS),
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise CheckpointError(
            f"{text}: no such folder, and the model id is not in the Hugging Face cache while "
            f"offline; download it first (hf download {repo_id}) or pass a local folder"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(
            f"{text}: no such folder, and no such model on the Hugging Face Hub (or it is private: "
            "log in with `hf auth login`); pass a local folder or a model id that exists"
        ) from exc
    except RevisionNotFoundError as exc:
        raise CheckpointError(
            f"{text}: the Hub model has no revision {revision!r}; pass an existing branch, tag or commit after @"
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise CheckpointError(
            f"{text}: downloading the model from the Hugging Face Hub failed "
            f"({type(exc).__name__}); retry, or download it and pass the local folder"
        ) from exc
    return Path(str(folder))


__all__ = ["ALLOW_PATTERNS", "looks_like_model_id", "resolve_model"]
