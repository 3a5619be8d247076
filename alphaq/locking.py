"""One writer per output: an exclusive OS lock (``filelock``) beside every folder or file an alphaq command writes.

Every command that writes (``inspect``, ``plan``, ``quantize``, ``eval``, ``run``, ``compare``, ``export``,
``report``, ``gallery``, ``lmeval``) holds :func:`output_lock` on its ``--out`` for as long as it writes. A
second writer fails at once with :class:`OutputLockedError` (one line: which command holds it, its pid, and
what to do). The lock is a :class:`filelock.FileLock` (``flock`` on POSIX, ``msvcrt.locking`` on Windows) on a
small file beside the output (``.NAME.alphaq-lock`` in the output's parent folder, so it also covers outputs that
are built in a temporary folder and renamed onto the final name); the holder writes its pid and command into that
file, which a losing contender leaves alone (filelock 3.30 on). The system releases the lock when its process
dies, so a lock left by a killed run never blocks a rerun; the lock file itself is removed on release (while the
lock is still held: filelock 3.25 on drops a lock it won on an already removed file, so two writers never hold
two files of the same name). Windows locks the file's bytes against other handles, so there (not tested) the
message can name "another alphaq command" instead.

Locks are re-entrant within a process: ``alphaq run`` holds its folder's lock while it calls the stages,
which take the same lock again.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.errors import AlphaQError

if TYPE_CHECKING:
    from filelock import BaseFileLock

LOCK_SUFFIX = ".alphaq-lock"

#: Errors that only a write can raise (the message then says "cannot write").
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EEXIST, errno.EISDIR, errno.ENOTDIR})

#: Locks this process holds: resolved lock path -> (lock, depth).
_HELD: dict[str, tuple[BaseFileLock, int]] = {}


class OutputLockedError(AlphaQError):
    """Another alphaq process is writing to the same output."""


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file that guards ``output`` (a folder or a file): ``PARENT/.NAME.alphaq-lock``.

    Args:
        output: the folder or file a command writes.

    Returns:
        The lock file's path (absolute).
    """
    target = Path(os.path.abspath(Path(output).expanduser()))
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another alphaq command"
    return f"alphaq {info.get('command', '?')} (pid {info.get('pid', '?')})"


def _acquire(path: Path, output: Path, command: str) -> BaseFileLock:
    """Take the lock without waiting and write the holder's pid and command into its file; retry while a releasing
    holder removes the file in between."""
    from filelock import FileLock, Timeout

    for _ in range(20):
        lock = FileLock(str(path), mode=0o644, thread_local=False)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            if path.exists():
                raise OutputLockedError(
                    f"{output} is being written by {_holder(path)}; wait for it to finish or pass another --out "
                    f"(a lock left by a killed run is released by the system, so rerunning then works)"
                ) from None
            continue  # the holder removed its file as we opened it: try the new one
        try:
            with contextlib.suppress(PermissionError):  # Windows: a locked file cannot be written through a path
                path.write_text(
                    json.dumps({"pid": os.getpid(), "command": command, "since": time.time()}), encoding="utf-8"
                )
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            lock.release()
            raise
        return lock
    raise OutputLockedError(f"could not lock {output}: its lock file keeps changing; retry the command")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold the exclusive write lock of ``output`` for the duration of the block.

    Args:
        output: the folder or file the command writes (it need not exist; its parent is created).
        command: the command's name, shown to a second writer.

    Yields:
        The lock file's path.

    Raises:
        OutputLockedError: another process holds the lock.
        AlphaQError: the parent folder cannot be created or written (one line, see :func:`describe_os_error`).
    """
    path = lock_path(output)
    key = str(path)
    if key in _HELD:
        lock, depth = _HELD[key]
        _HELD[key] = (lock, depth + 1)
        try:
            yield path
        finally:
            lock, depth = _HELD[key]
            _HELD[key] = (lock, depth - 1)
        return
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _acquire(path, Path(output), command)
    except OSError as error:  # name the output, not the lock file beside it
        _remove_empty(created)
        named = OSError(error.errno, error.strerror, str(output))
        raise AlphaQError(describe_os_error(named, Path(output))) from None
    except BaseException:
        _remove_empty(created)
        raise
    _HELD[key] = (lock, 1)
    try:
        yield path
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):  # removed while held (see the module's docstring); Windows: on release
            path.unlink()
        lock.release()
        _remove_empty(created)  # folders made only to hold the lock of a command that wrote nothing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this lock created, innermost first, where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def locks_output(parameter: str, command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a library function that writes the output named by its argument ``parameter``: hold
    :func:`output_lock` on it during the call (nothing is locked when the argument is ``None``).

    Args:
        parameter: the name of the function's output argument.
        command: the name shown to a second writer.

    Returns:
        The decorator.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            target = bound.arguments[parameter]
            if target is None:
                return fn(*args, **kwargs)
            with output_lock(target, command):
                return fn(*args, **kwargs)

        return locked

    return decorate


def describe_os_error(error: OSError, output: Path | None = None) -> str:
    """One line for a failed write: which path, what went wrong, and the fix that fits the cause.

    Args:
        error: the ``OSError`` raised while writing.
        output: the command's ``--out`` (named in the advice), when known.

    Returns:
        The message (no trailing newline).
    """
    where = error.filename2 or error.filename or output or "the output"  # a copy's destination is filename2
    reason = error.strerror or str(error)
    verb = "write" if error.errno in _WRITE_ERRNOS else "open"
    out = f" {output}" if output is not None else ""
    advice = {
        errno.ENOSPC: "free space on that disk or pass an --out on another one",
        errno.EDQUOT: "free space within your quota or pass an --out on another disk",
        errno.EROFS: "that file system is read-only; pass a writable --out",
        errno.EACCES: "no permission to write there; pass a writable --out or fix the permissions",
        errno.EPERM: "no permission to write there; pass a writable --out or fix the permissions",
        errno.ENOTDIR: "a part of the path is a file, not a folder; pass a folder path as --out",
        errno.EEXIST: f"--out{out} is an existing file; pass a folder path (or remove the file)",
        errno.EISDIR: "the path is a folder where a file was expected; pass a file path",
        errno.ENOENT: "a folder on the path does not exist; create it or pass another --out",
    }.get(error.errno, "check the path and the disk, then rerun")
    return f"cannot {verb} {where}: {reason}; {advice}"


__all__ = ["LOCK_SUFFIX", "OutputLockedError", "describe_os_error", "lock_path", "locks_output", "output_lock"]
