"""The headline facts of a run folder, read from its saved artifacts (shared by index.html and the model card).

A run folder (``alphaq run --out DIR``, or the gallery) holds ``inspect.json`` + ``experts.csv``, ``plan.json``,
``quantized/quantize.json``, ``eval.json`` and ``compare/compare.json``; any of them may be missing. Nothing is
recomputed: every number is one the stage wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from alphaq.audit.artifacts import read_experts
from alphaq.errors import AlphaQError
from alphaq.report.page import RUN_SUBFOLDERS
from alphaq.runfolder import COMPARE_JSON, EVAL_JSON, EXPERTS_CSV, INSPECT_JSON, PLAN_JSON, QUANTIZE_JSON, read_json

QUANTIZED_DIR, COMPARE_DIR = RUN_SUBFOLDERS


@dataclass(frozen=True)
class RunSummary:
    """The artifacts of one run folder (None where a stage did not run).

    Attributes:
        folder: the run folder.
        inspect: inspect.json content.
        experts: experts.csv content (routed experts only).
        plan: plan.json content.
        quantize: quantize.json content (from ``quantized/`` or the folder itself).
        quantize_dir: the folder holding quantize.json.
        eval: eval.json content.
        compare: compare.json content (from ``compare/`` or the folder itself).
        compare_dir: the folder holding compare.json.
    """

    folder: Path
    inspect: dict[str, Any] | None = None
    experts: pd.DataFrame | None = None
    plan: dict[str, Any] | None = None
    quantize: dict[str, Any] | None = None
    quantize_dir: Path | None = None
    eval: dict[str, Any] | None = None
    compare: dict[str, Any] | None = None
    compare_dir: Path | None = None
    unreadable: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> dict[str, Any]:
        """The source checkpoint block (path, fingerprint, model_type) of the first stage that has one."""
        for record in (self.inspect, self.plan and self.plan.get("provenance"), self.quantize, self.compare):
            if record and record.get("checkpoint"):
                return dict(record["checkpoint"])
        return {}

    @property
    def stages(self) -> list[str]:
        """Stages present, in pipeline order."""
        present = {
            "inspect": self.inspect,
            "plan": self.plan,
            "quantize": self.quantize,
            "eval": self.eval,
            "compare": self.compare,
        }
        return [name for name, record in present.items() if record is not None]


def _json(path: Path, unreadable: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except AlphaQError:
        unreadable.append(path.name)
        return None


def _plan_json(path: Path, unreadable: list[str]) -> dict[str, Any] | None:
    """plan.json's content once :func:`alphaq.planning.plan_file.plan_from_dict` accepts it (else listed unreadable)."""
    from alphaq.errors import PlanError
    from alphaq.planning.plan_file import plan_from_dict

    data = _json(path, unreadable)
    if data is None:
        return None
    try:
        plan_from_dict(data, source=str(path))
    except PlanError:
        unreadable.append(path.name)
        return None
    return data


def _first(folder: Path, sub: str, name: str) -> Path | None:
    for candidate in (folder / sub, folder):
        if (candidate / name).is_file():
            return candidate
    return None


def read_run(run_dir: str | Path) -> RunSummary:
    """Read whatever stage artifacts ``run_dir`` holds (an unreadable file is listed, not fatal).

    Args:
        run_dir: the run folder.

    Returns:
        A :class:`RunSummary`.
    """
    folder = Path(run_dir)
    bad: list[str] = []
    experts = None
    if (folder / EXPERTS_CSV).is_file():
        try:
            table = read_experts(folder)
            experts = table[table["role"] == "expert"]
        except AlphaQError:
            bad.append(EXPERTS_CSV)
    quantize_dir = _first(folder, QUANTIZED_DIR, QUANTIZE_JSON)
    compare_dir = _first(folder, COMPARE_DIR, COMPARE_JSON)
    return RunSummary(
        folder=folder,
        inspect=_json(folder / INSPECT_JSON, bad),
        experts=experts,
        plan=_plan_json(folder / PLAN_JSON, bad),
        quantize=_json(quantize_dir / QUANTIZE_JSON, bad) if quantize_dir else None,
        quantize_dir=quantize_dir,
        eval=_json(folder / EVAL_JSON, bad),
        compare=_json(compare_dir / COMPARE_JSON, bad) if compare_dir else None,
        compare_dir=compare_dir,
        unreadable=bad,
    )


def alpha_summary(experts: pd.DataFrame | None) -> dict[str, Any]:
    """Expert count, alpha min/median/max, quality-flag counts, best and weakest experts (by mean alpha)."""
    if experts is None or experts.empty or "alpha_mean" not in experts.columns:
        return {}
    fitted = experts.dropna(subset=["alpha_mean"]).sort_values("alpha_mean")
    label = [f"L{int(r.layer)}.E{int(r.expert)} ({r.alpha_mean:.2f})" for r in fitted.itertuples()]
    flags = experts["quality"].value_counts().to_dict() if "quality" in experts.columns else {}
    return {
        "experts": len(experts),
        "fitted": len(fitted),
        "alpha_min": float(fitted["alpha_mean"].min()) if len(fitted) else math.nan,
        "alpha_median": float(fitted["alpha_mean"].median()) if len(fitted) else math.nan,
        "alpha_max": float(fitted["alpha_mean"].max()) if len(fitted) else math.nan,
        "quality": {str(k): int(v) for k, v in flags.items()},
        "best": label[:3],
        "weakest": label[-3:][::-1],
    }


def compare_rows(compare: dict[str, Any] | None) -> pd.DataFrame:
    """The compare results as a table (entry, budget, average bits, ppl, increase); empty without a compare run."""
    columns = ["entry", "budget", "average_payload_bits", "ppl", "ppl_increase"]
    if not compare:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(compare.get("rows") or [])
    return frame[[c for c in columns if c in frame.columns]] if not frame.empty else pd.DataFrame(columns=columns)


__all__ = ["COMPARE_DIR", "QUANTIZED_DIR", "RunSummary", "alpha_summary", "compare_rows", "read_run"]
