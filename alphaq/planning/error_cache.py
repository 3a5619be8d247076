"""The plan's measured errors saved in the run folder (``plan_errors.npz``), so later plans skip measuring.

Measuring every routed-expert matrix at every width is the plan stage's one expensive step; the errors depend on
the checkpoint and on the error model's options (widths, group size, quantizer, rows, sampling), not on the budget,
allocator, granularity, gamma or bounds. A later ``alphaq plan`` (another budget, a sweep, ``alphaq run`` again)
into the same folder loads them when the key matches exactly, and measures again otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.atomic import atomic_path

if TYPE_CHECKING:
    from alphaq.planning.config import PlanConfig
    from alphaq.planning.costs import MatrixErrors

#: Bumped when what is measured changes (v4: the nested adaptive row samples of alphaq.planning.error_measure, whole when they fall short).
ERRORS_SCHEMA_VERSION = 4


def errors_key(fingerprint: str, names: list[str], config: PlanConfig) -> dict[str, Any]:
    """What the saved errors depend on: the checkpoint, the matrices and the error model's options."""
    return {
        "schema_version": ERRORS_SCHEMA_VERSION,
        "checkpoint_fingerprint": fingerprint,
        "matrices_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "widths": [int(b) for b in config.widths],  # type: ignore[union-attr]
        "group_size": int(config.group_size),
        "error_model": config.error_model,
        "method": config.quant_method,
        "max_rows": int(config.max_rows),
    }


def load_errors(path: str | Path, key: dict[str, Any]) -> MatrixErrors | None:
    """The saved errors when ``path`` holds them for exactly ``key``, else None (missing, other key, damaged)."""
    from alphaq.planning.costs import MatrixErrors

    file = Path(path)
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            if json.loads(str(data["key"])) != key:
                return None
            rows = data["rows"] if "rows" in data.files else None
            return MatrixErrors(
                names=tuple(str(n) for n in data["names"]),
                widths=tuple(int(b) for b in data["widths"]),
                error=np.array(data["error"], dtype=np.float64),
                sq_norm=np.array(data["sq_norm"], dtype=np.float64),
                model=str(data["model"]),
                rows=None if rows is None else np.array(rows, dtype=np.int64),
            )
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None


def save_errors(path: str | Path, errors: MatrixErrors, key: dict[str, Any]) -> Path:
    """Write the errors with their key atomically (a temporary file renamed into place)."""
    arrays: dict[str, Any] = {
        "key": np.array(json.dumps(key, sort_keys=True)),
        "names": np.array(errors.names, dtype=str),
        "widths": np.array(errors.widths, dtype=np.int64),
        "error": errors.error,
        "sq_norm": errors.sq_norm,
        "model": np.array(errors.model),
    }
    if errors.rows is not None:
        arrays["rows"] = errors.rows
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return Path(path)


__all__ = ["ERRORS_SCHEMA_VERSION", "errors_key", "load_errors", "save_errors"]
