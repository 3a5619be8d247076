"""The evaluation artifacts of a run folder and their one reader each: ``eval.json`` with its two tables
(:func:`load_eval_run`) and a compare folder (:func:`load_compare_run`). The report pages read them here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from alphaq.errors import AlphaQError
from alphaq.runfolder import (
    COMPARE_CSV,
    COMPARE_JSON,
    EVAL_EXPERTS_CSV,
    EVAL_JSON,
    EVAL_SCHEMA_VERSION,
    EVAL_TENSORS_CSV,
    EXPERT_VERIFICATION_CSV,
    check_schema,
    one_line,
    read_json,
)


def load_eval_run(run_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Read eval.json and its two tables (empty frames when a table is absent or empty).

    Raises:
        AlphaQError: the folder holds no readable eval.json.
    """
    folder = Path(run_dir)
    if not (folder / EVAL_JSON).is_file():
        raise AlphaQError(f"{folder}: no {EVAL_JSON}; run `alphaq eval --out {folder}` first")
    record = read_json(folder / EVAL_JSON)
    check_schema(record, folder / EVAL_JSON, EVAL_SCHEMA_VERSION)
    tables = []
    for name in (EVAL_TENSORS_CSV, EVAL_EXPERTS_CSV):
        try:
            tables.append(pd.read_csv(folder / name))
        except (OSError, ValueError, pd.errors.EmptyDataError):
            tables.append(pd.DataFrame())
    return record, tables[0], tables[1]


def load_compare_run(run_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame | None]:
    """Read compare.json, compare.csv and (when present) expert_verification.csv.

    Raises:
        AlphaQError: the folder holds no compare run.
    """
    folder = Path(run_dir)
    if not (folder / COMPARE_JSON).is_file() or not (folder / COMPARE_CSV).is_file():
        raise AlphaQError(f"{folder}: no compare.json/compare.csv; run `alphaq compare --out {folder}` first")
    meta = read_json(folder / COMPARE_JSON)
    try:
        table = pd.read_csv(folder / COMPARE_CSV)
    except (OSError, ValueError) as exc:
        raise AlphaQError(
            f"{folder}: cannot read the compare results ({one_line(exc)}); re-run `alphaq compare`"
        ) from exc
    verification = None
    if (folder / EXPERT_VERIFICATION_CSV).is_file():
        try:
            verification = pd.read_csv(folder / EXPERT_VERIFICATION_CSV)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            verification = None
    return meta, table, verification


__all__ = ["load_compare_run", "load_eval_run"]
