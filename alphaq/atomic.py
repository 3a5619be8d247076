"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash or an exception while writing leaves no partial file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    Args:
        path: final file name.

    Yields:
        A temporary path to write to. It is removed if the block raises.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _temporary_beside(final: Path) -> Path:
    """A new empty temporary file ``.NAME.XXXX.tmp`` in ``final``'s folder, with the permissions open() would give."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp creates 0600
    return tmp


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path`` and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON (NaN/Inf written as null, see :func:`json_safe`)."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False)
    return write_text(path, text + "\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Atomically write ``path`` by calling ``writer(tmp_path)``."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


class StagedFiles:
    """Files written under temporary names in one folder and renamed onto their final names together.

    Use :func:`staged_files`. A failure while writing any of them (a full disk, say) leaves none of the new
    files and none of the temporaries; the renames at the end take no space and do not fail for lack of it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def path(self, name: str) -> Path:
        """A temporary path for the file ``name`` of the folder (renamed onto it at commit)."""
        tmp = _temporary_beside(self.folder / name)
        self._pending.append((tmp, self.folder / name))
        return tmp

    def write_with(self, name: str, writer: Callable[[Path], None]) -> Path:
        """Stage ``name`` by calling ``writer(tmp_path)``; returns the final path."""
        writer(self.path(name))
        return self.folder / name

    def write_text(self, name: str, text: str) -> Path:
        """Stage ``name`` with ``text`` (UTF-8)."""
        return self.write_with(name, lambda p: p.write_text(text, encoding="utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        """Stage ``name`` as indented, key-sorted JSON (see :func:`write_json`)."""
        text = json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False)
        return self.write_text(name, text + "\n")

    def commit(self) -> None:
        for tmp, final in self._pending:
            os.replace(tmp, final)
        self._pending.clear()

    def discard(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._pending.clear()


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike[str]) -> Iterator[StagedFiles]:
    """Write several files of ``folder`` as one: all renamed into place when the block succeeds, none if it raises.

    Args:
        folder: the destination folder (created if missing).

    Yields:
        A :class:`StagedFiles`; the files named last are renamed last (put the manifest last).
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    staged = StagedFiles(target)
    try:
        yield staged
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/Inf floats as None and numpy scalars as Python numbers (strict JSON can hold it).

    Args:
        obj: nested dicts, lists and tuples of JSON-like values.

    Returns:
        The cleaned copy (dict keys as strings, tuples as lists).
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):  # numpy scalar
        return json_safe(obj.item())
    return obj
