"""The output folder of a quantize run: resume state, progress file, free space, one-line disk errors.

A run records each finished shard (name, bytes, sha256) in :data:`PROGRESS_FILE`; a stopped run of the same key
(plan, checkpoint, options) resumes from it, any other non-empty folder is refused. Used by
:func:`alphaq.quantization.run.run_quantize`.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alphaq.atomic import write_json
from alphaq.errors import AlphaQError
from alphaq.locking import describe_os_error
from alphaq.quantization import shards as st
from alphaq.quantization import writer as fmt
from alphaq.runfolder import QUANTIZE_JSON

PROGRESS_FILE = ".alphaq-quantize-progress.json"


def resume_state(out: Path, key: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """(finished shards, resuming) for ``out``: ({}, False) for a new or empty folder, or one where a run stopped
    before finishing any shard; the recorded shards and True for an unfinished run of the same key.

    Raises:
        AlphaQError: ``out`` is a file, or a non-empty folder that is not an unfinished run of the same key.
    """
    if out.exists() and not out.is_dir():
        raise AlphaQError(f"{out}: is a file; pass a folder for --out")
    if not out.is_dir() or not any(out.iterdir()):
        return {}, False
    state = _read_progress(out / PROGRESS_FILE)
    if state is None or (out / QUANTIZE_JSON).exists():
        raise AlphaQError(f"{out}: out directory not empty; choose another --out or remove it")
    finished = dict(state.get("shards") or {})
    if state.get("key") == dict(key):
        return finished, True
    leftovers = [p for p in out.iterdir() if p.name != PROGRESS_FILE and not is_temporary(p)]
    if not finished and not leftovers:  # a run that stopped before its first shard: nothing to keep
        return {}, False
    raise AlphaQError(
        f"{out}: out directory holds an unfinished run of another plan, checkpoint or options "
        "(method, device); re-run with the same ones to resume, or choose another --out or remove it"
    )


def is_temporary(path: Path) -> bool:
    """A temporary file of :func:`alphaq.atomic.atomic_path` (``.{name}.XXXX.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def start_output(out: Path, key: Mapping[str, Any], *, resuming: bool) -> None:
    """Create ``out`` (with a fresh progress file unless resuming), removing temporary files a killed run left."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stale in [p for p in out.iterdir() if is_temporary(p)]:
            stale.unlink()
        if not resuming:
            write_json(out / PROGRESS_FILE, {"key": dict(key), "shards": {}})
    except OSError as exc:
        raise disk_error(exc, out) from exc


def _read_progress(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def reusable_shard(out: Path, shard: fmt.OutputShard, record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The recorded shard if its file exists with the recorded sha256, else None."""
    path = out / shard.name
    if record is None or not path.is_file() or path.stat().st_size != record.get("bytes"):
        return None
    return dict(record) if st.sha256_file(path) == record.get("sha256") else None


def check_written_bytes(finished: Mapping[str, Any], layout: Any) -> None:
    """The quantized matrices on disk take exactly the plan's predicted bytes (payload + scales + zeros)."""
    records = [r for shard in layout for r in finished[shard.name]["units"] if r["kind"] == "quantized"]
    written = sum(r["bytes"] for r in records)
    predicted = sum(r["predicted_bytes"] for r in records)
    if written != predicted:
        raise RuntimeError(
            f"quantized tensors take {written} bytes but the plan predicts {predicted} "
            "(bug in alphaq, please report it)"
        )


def check_free_space(out: Path, needed: int) -> None:
    folder = next(p for p in (out, *out.resolve().parents) if p.is_dir())
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise AlphaQError(
            f"{out}: {_gb(free)} free but the quantized checkpoint needs {_gb(needed)} more; free "
            "space or choose another --out"
        )


def disk_error(exc: OSError, out: Path) -> AlphaQError:
    """One line naming the output path that failed (never the source file a copy read from) and the fix that
    fits the cause; the free space is given only when the disk is full."""
    message = describe_os_error(exc, out)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = _gb(shutil.disk_usage(next(p for p in (out, *out.resolve().parents) if p.is_dir())).free)
        except OSError:
            free = "unknown space"
        head, _, advice = message.partition("; ")
        message = f"{head} ({free} free); {advice}"
    return AlphaQError(message)


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB"


__all__ = [
    "PROGRESS_FILE",
    "check_free_space",
    "check_written_bytes",
    "disk_error",
    "is_temporary",
    "resume_state",
    "reusable_shard",
    "start_output",
]
