"""Provenance shared by every saved artifact: file digests, library versions, the record of an input text."""

from __future__ import annotations

import hashlib
import os
import platform
from typing import Any


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 24) -> str:
    """sha256 hex digest of a file, read in 16 MiB chunks.

    Args:
        path: the file.
        chunk: bytes read at a time.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions of alphaq, torch, transformers and Python (imports torch and transformers).

    Returns:
        ``{"alphaq": ..., "torch": ..., "transformers": ..., "python": ...}``.
    """
    import torch
    import transformers

    from alphaq._version import __version__

    return {
        "alphaq": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def text_record(
    path: str | os.PathLike[str] | None, *, base: str | os.PathLike[str] | None = None
) -> dict[str, Any] | None:
    """Path and sha256 of an input text (``None`` for no text).

    The path is recorded as :func:`alphaq.runfolder.record_path` records it: a file of the text-data folder by its
    name there (``data:wikitext-2/test.txt``), another file relative to ``base`` (absolute without one).

    Args:
        path: the text file.
        base: the folder of the artifact that records it.

    Returns:
        ``{"path", "sha256"}`` or ``None``.
    """
    from alphaq.runfolder import record_path

    return None if path is None else {"path": record_path(path, base=base), "sha256": sha256_file(path)}


__all__ = ["sha256_file", "text_record", "versions"]
