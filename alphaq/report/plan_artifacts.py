"""Loading a plan run for plan.html: plan.json with its sweep, layer-plan comparison, inspect tables and gguf export.

:func:`load_plan_run` reads what the plan (and inspect) stages saved into a :class:`PlanArtifacts`; a missing or
unreadable optional file becomes a page warning, not an error. :mod:`alphaq.report.plan_page` renders it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.errors import AlphaQError
from alphaq.report.plan_values import as_mapping
from alphaq.runfolder import (
    DETAILS_CSV,
    EXPERTS_CSV,
    INSPECT_JSON,
    PLAN_COMPARISON_JSON,
    PLAN_JSON,
    SWEEP_CSV,
    one_line,
)

if TYPE_CHECKING:
    import pandas as pd

    from alphaq.planning.plan_file import Plan

#: Inspect-stage files read for alpha when present in the same folder.
INSPECT_FILES = (INSPECT_JSON, DETAILS_CSV, EXPERTS_CSV)
_SWEEP_TEXT = ("allocator", "budget", "budget_kind", "status", "message")


@dataclass(frozen=True, eq=False)
class PlanArtifacts:
    """The artifacts of a plan run folder.

    Attributes:
        plan: plan.json, validated by :func:`alphaq.planning.plan_file.load_plan`.
        tensors: one row per plan tensor (the :class:`PlanTensor` fields; layer/expert/group_size nullable
            Int64) plus ``routed`` (in the budget), ``bf16_bytes`` and ``alpha`` (the matrix's fitted alpha from
            details.csv; NaN without it).
        sweep: sweep.csv (:data:`alphaq.planning.planner.SWEEP_COLUMNS`), None when absent or unreadable.
        comparison: plan_comparison.json, None when absent or unreadable.
        experts: experts.csv (routed and shared experts), None without the inspect artifacts.
        inspect_manifest: inspect.json, None without it.
        gguf_export: gguf_export.json of ``alphaq export --format gguf`` beside the plan, None without it.
        load_warnings: problems that did not stop loading, one line each.
    """

    plan: Plan
    tensors: pd.DataFrame
    sweep: pd.DataFrame | None = None
    comparison: Mapping[str, Any] | None = None
    experts: pd.DataFrame | None = None
    inspect_manifest: Mapping[str, Any] | None = None
    load_warnings: tuple[str, ...] = ()
    gguf_export: Mapping[str, Any] | None = None

    @property
    def options(self) -> Mapping[str, Any]:
        """The plan's options (granularity, allocator, widths, ...); empty when not recorded."""
        return as_mapping(self.plan.provenance.get("options"))

    @property
    def routed(self) -> pd.DataFrame:
        """The routed-expert rows (the matrices the budget covers)."""
        return self.tensors[self.tensors["routed"]]


def load_plan_run(run_dir: str | Path) -> PlanArtifacts:
    """Read and validate a plan run folder.

    Args:
        run_dir: the folder ``alphaq plan --out`` wrote.

    Returns:
        The :class:`PlanArtifacts`; unreadable optional files become ``load_warnings``.

    Raises:
        AlphaQError: missing folder or plan.json, or an invalid plan (one-line :class:`PlanError`).
    """
    import pandas as pd

    from alphaq.planning.plan_file import load_plan
    from alphaq.quantization.layout import dense_nbytes

    folder = Path(run_dir)
    rerun = f"run `alphaq plan ... --out {folder}` to create it"
    if not folder.is_dir():
        raise AlphaQError(f"{folder}: plan run folder not found; {rerun}")
    if not (folder / PLAN_JSON).is_file():
        raise AlphaQError(f"{folder}: no {PLAN_JSON}, not a plan run folder; {rerun}")
    plan = load_plan(folder / PLAN_JSON)
    tensors = pd.DataFrame([asdict(t) for t in plan.tensors])
    for column in ("layer", "expert", "group_size"):
        tensors[column] = tensors[column].astype("Int64")
    tensors["error"] = pd.to_numeric(tensors["error"], errors="coerce").astype(float)
    tensors["routed"] = tensors["unit"].notna()
    tensors["bf16_bytes"] = [dense_nbytes(int(r), int(c)) for r, c in zip(tensors["rows"], tensors["cols"])]
    warnings: list[str] = []
    sweep = _read_sweep(folder / SWEEP_CSV, warnings)
    comparison = _read_comparison(folder / PLAN_COMPARISON_JSON, warnings)
    elsewhere = as_mapping(plan.provenance.get("diagnostics")).get("inspect_dir")
    from alphaq.runfolder import resolve_recorded_path  # recorded relative to the plan's folder

    elsewhere = resolve_recorded_path(elsewhere, base=folder) if isinstance(elsewhere, str) else None
    inspect_dir = elsewhere if elsewhere is not None and elsewhere.is_dir() else folder
    experts, details, manifest = _read_inspect(inspect_dir, warnings)
    tensors["alpha"] = np.nan
    if details is not None:
        ours = str(as_mapping(plan.provenance.get("checkpoint")).get("fingerprint") or "")
        theirs = str(as_mapping(as_mapping(manifest).get("checkpoint")).get("fingerprint") or "")
        known = tensors["name"].isin(details["name"])
        if ours and theirs and ours != theirs:
            warnings.append(f"the inspect artifacts are of checkpoint {theirs}, the plan of {ours}: alpha is omitted")
            experts = None
        elif tensors["routed"].any() and not known[tensors["routed"]].any():
            warnings.append("details.csv names none of this plan's matrices (another checkpoint?): alpha is omitted")
            experts = None
        else:
            fitted = details[details["status"] == "success"].drop_duplicates("name")
            tensors["alpha"] = tensors["name"].map(fitted.set_index("name")["alpha"]).astype(float)
    from alphaq.report.gguf_section import read_gguf_export

    gguf = read_gguf_export(folder, warnings)
    return PlanArtifacts(plan, tensors, sweep, comparison, experts, manifest, tuple(warnings), gguf)


def _read_sweep(path: Path, warnings: list[str]) -> pd.DataFrame | None:
    import pandas as pd

    from alphaq.planning.planner import SWEEP_COLUMNS

    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(
            path,
            keep_default_na=False,
            na_values=["", "nan", "NaN", "None", "null"],
            dtype={c: str for c in _SWEEP_TEXT},
        )
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as err:
        warnings.append(f"{path.name} is unreadable ({one_line(err)}): the budget sweep is omitted")
        return None
    missing = [c for c in ("allocator", "average_payload_bits", "predicted_error") if c not in frame.columns]
    if missing:
        warnings.append(
            f"{path.name} lacks column(s) {', '.join(missing)}: the budget sweep is omitted; re-run "
            "`alphaq plan --sweep` with this alphaq version"
        )
        return None
    for column in SWEEP_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    for column in _SWEEP_TEXT:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    for column in (c for c in SWEEP_COLUMNS if c not in _SWEEP_TEXT):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame[SWEEP_COLUMNS]


def _read_comparison(path: Path, warnings: list[str]) -> Mapping[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warnings.append(f"{path.name} is unreadable ({one_line(err)}): the deployability comparison is omitted")
        return None
    if isinstance(data, dict) and data.get("target") == "gguf":  # a whole-model GGUF plan: one type per tensor
        return None
    plans_ok = (
        isinstance(data, dict)
        and isinstance(data.get("expert_plan"), dict)
        and isinstance(data.get("layer_plan", {}), dict)
    )
    if not plans_ok:
        warnings.append(
            f"{path.name} lacks the expert_plan (and layer_plan) objects: the deployability comparison "
            "is omitted; re-run `alphaq plan` with this alphaq version"
        )
        return None
    return data


def _read_inspect(folder: Path, warnings: list[str]) -> tuple[Any, Any, Any]:
    from alphaq.audit.artifacts import load_inspect_run

    if not any((folder / name).is_file() for name in INSPECT_FILES):
        return None, None, None
    try:
        run = load_inspect_run(folder)
    except AlphaQError as err:
        warnings.append(f"inspect artifacts unreadable ({one_line(err)}): \u03b1 is omitted from this page")
        return None, None, None
    return run.experts, run.details, run.manifest
