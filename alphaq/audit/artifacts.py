"""The inspect artifacts of a run folder and their one reader (:func:`load_inspect_run`).

``alphaq inspect`` writes ``inspect.json``, ``details.csv``, ``experts.csv`` and ``spectra.npz``
(:func:`alphaq.audit.run.save_inspect`); the plan stage, the eval stage and every report page read them back
through :func:`load_inspect_run` (typed tables, checked schema, one-line errors).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.errors import AlphaQError
from alphaq.runfolder import (
    DETAILS_CSV,
    EXPERTS_CSV,
    INSPECT_JSON,
    INSPECT_SCHEMA_VERSION,
    SPECTRA_NPZ,
    check_schema,
    one_line,
    read_json,
)

if TYPE_CHECKING:
    import pandas as pd

_DETAIL_REQUIRED = ("name", "layer", "expert", "proj", "role", "alpha", "status")
_EXPERT_REQUIRED = ("layer", "expert", "role", "alpha_mean", "quality")
_INT_COLUMNS = ("layer", "expert", "rows", "cols", "params", "num_evals", "n_matrices", "rank_in_layer", "rank_global")
_TEXT_COLUMNS = (
    "name",
    "tensor",
    "proj",
    "role",
    "dtype",
    "fit",
    "status",
    "warning",
    "message",
    "weakest_proj",
    "quality",
)
_FLOAT_COLUMNS = (
    "alpha",
    "alpha_weighted",
    "xmin",
    "xmax",
    "stable_rank",
    "log_norm",
    "alpha_mean",
    "alpha_min",
    "alpha_max",
    "weakest_alpha",
    "alpha_weighted_mean",
    "log_norm_mean",
    "stable_rank_mean",
    "robust_z",
)


@dataclass(frozen=True)
class Spectrum:
    """A saved spectrum: eigenvalues (ascending, possibly compressed) and the fit's xmin and alpha."""

    evals: np.ndarray  # [K]
    xmin: float
    alpha: float


@dataclass(frozen=True, eq=False)
class InspectRun:
    """The artifacts of an inspect run folder.

    Attributes:
        manifest: inspect.json.
        details: details.csv, one row per matrix (layer/expert as nullable Int64, text columns without NaN).
        experts: experts.csv, one row per routed or shared expert.
        spectra: spectra.npz by matrix name (empty when the file is missing or unreadable).
        load_warnings: problems that did not stop loading (e.g. missing spectra), one line each.
    """

    manifest: dict[str, Any]
    details: pd.DataFrame
    experts: pd.DataFrame
    spectra: Mapping[str, Spectrum]
    load_warnings: tuple[str, ...] = ()


def load_inspect_run(run_dir: str | Path) -> InspectRun:
    """Read and validate an inspect run folder.

    Args:
        run_dir: the folder ``alphaq inspect --out`` wrote.

    Returns:
        The :class:`InspectRun`.

    Raises:
        AlphaQError: missing folder or file, unreadable JSON/CSV, wrong stage or schema_version, missing columns.
    """
    folder = Path(run_dir)
    rerun = f"run `alphaq inspect MODEL --out {folder}` to create it"
    if not folder.is_dir():
        raise AlphaQError(f"{folder}: inspect run folder not found; {rerun}")
    manifest_path = folder / INSPECT_JSON
    if not manifest_path.is_file():
        raise AlphaQError(f"{folder}: no {INSPECT_JSON}, not an inspect run folder; {rerun}")
    manifest = read_json(manifest_path, fix="re-run alphaq inspect to rewrite it")
    if manifest.get("stage") != "inspect":
        raise AlphaQError(f"{manifest_path}: not an inspect manifest (stage != 'inspect'); re-run alphaq inspect")
    check_schema(manifest, manifest_path, INSPECT_SCHEMA_VERSION)
    if not isinstance(manifest.get("checkpoint"), dict):
        raise AlphaQError(f"{manifest_path}: no 'checkpoint' block; re-run alphaq inspect")
    details = _read_table(folder / DETAILS_CSV, _DETAIL_REQUIRED)
    experts = _read_table(folder / EXPERTS_CSV, _EXPERT_REQUIRED)
    spectra, problems = _read_spectra(folder, manifest.get("spectra_file") or SPECTRA_NPZ)
    return InspectRun(manifest, details, experts, spectra, tuple(problems))


def _read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a run-folder CSV: required columns checked, known columns typed, missing optional ones added."""
    import pandas as pd

    if not path.is_file():
        raise AlphaQError(f"{path}: not found; re-run alphaq inspect to write the run folder")
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN", "<NA>", "None", "null"])
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as err:
        raise AlphaQError(f"{path}: unreadable CSV ({one_line(err)}); re-run alphaq inspect") from err
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise AlphaQError(
            f"{path}: missing columns {', '.join(missing)}; re-run alphaq inspect with this alphaq version"
        )
    for column in frame.columns:
        if column in _TEXT_COLUMNS:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
        elif column in _INT_COLUMNS:
            numbers = pd.to_numeric(frame[column], errors="coerce")
            whole = numbers.where(numbers.isna() | (numbers == numbers.round()))
            frame[column] = whole.astype("Int64") if whole.notna().sum() == numbers.notna().sum() else numbers
        elif column in _FLOAT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in (*_TEXT_COLUMNS, *_INT_COLUMNS, *_FLOAT_COLUMNS):
        if column not in frame.columns:
            frame[column] = "" if column in _TEXT_COLUMNS else np.nan
    return frame


def _read_spectra(folder: Path, file_name: str) -> tuple[dict[str, Spectrum], list[str]]:
    path = folder / Path(str(file_name)).name
    if not path.is_file():
        return {}, [f"{path.name} not found in the run folder: ESD plots are omitted"]
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        return {}, [f"{path.name} is unreadable ({one_line(err)}): ESD plots are omitted"]
    spectra: dict[str, Spectrum] = {}
    for key, evals in arrays.items():
        if "::" in key:
            continue
        if evals.ndim != 1 or not np.issubdtype(evals.dtype, np.number):
            continue
        spectra[key] = Spectrum(
            evals.astype(np.float64), _scalar(arrays.get(f"{key}::xmin")), _scalar(arrays.get(f"{key}::alpha"))
        )
    return spectra, []


def _scalar(value: np.ndarray | None) -> float:
    if value is None or value.size != 1 or not np.issubdtype(value.dtype, np.number):
        return math.nan
    return float(value.reshape(()))


def read_experts(run_dir: str | Path) -> pd.DataFrame:
    """The per-expert table (``experts.csv``) of a saved inspect run, typed as :func:`load_inspect_run` types it.

    Args:
        run_dir: a folder holding an inspect run.

    Returns:
        One row per routed or shared expert.

    Raises:
        AlphaQError: the file is missing, unreadable or lacks a required column.
    """
    return _read_table(Path(run_dir) / EXPERTS_CSV, _EXPERT_REQUIRED)


def expert_alphas(run_dir: str | Path) -> dict[tuple[int, int], float]:
    """Mean alpha per routed expert of a saved inspect run (empty when the folder has no ``experts.csv``).

    Args:
        run_dir: a folder holding an inspect run (e.g. beside a plan.json).

    Returns:
        ``{(layer, expert): alpha_mean}`` over routed experts with a finite mean alpha.
    """
    if not (Path(run_dir) / EXPERTS_CSV).is_file():
        return {}
    table = read_experts(run_dir)
    table = table[(table["role"] == "expert") & table["expert"].notna() & table["layer"].notna()]
    return {
        (int(r.layer), int(r.expert)): float(r.alpha_mean)
        for r in table.itertuples()
        if math.isfinite(float(r.alpha_mean))
    }


__all__ = ["InspectRun", "Spectrum", "expert_alphas", "load_inspect_run", "read_experts"]
