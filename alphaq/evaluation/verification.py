"""Per-tensor and per-expert verification tables of ``alphaq eval`` (pure: records in, DataFrames out).

What the data-free plan predicted is set next to what was measured:

* per tensor: the plan's predicted relative error vs the measured ``||W - W_hat||_F / ||W||_F`` and, for a real
  quantized checkpoint, the bytes written vs the plan's byte prediction;
* per expert: the same, aggregated (parameter-weighted), with the expert's routing share on the evaluation
  text, so a reader sees which low-bit experts the text actually uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from alphaq.planning.plan_file import Plan

TENSOR_COLUMNS = [
    "name",
    "layer",
    "expert",
    "proj",
    "role",
    "bits",
    "group_size",
    "params",
    "predicted_error",
    "rel_error",
    "bytes",
    "predicted_bytes",
]
EXPERT_COLUMNS = [
    "layer",
    "expert",
    "bits",
    "params",
    "predicted_error",
    "rel_error",
    "bytes",
    "predicted_bytes",
    "routing_share",
    "routing_share_original",
    "alpha",
]


def tensors_from_quantize_manifest(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Per-tensor rows of a quantized checkpoint from its ``quantize.json`` (quantized tensors only).

    Args:
        manifest: the content of ``quantize.json``.

    Returns:
        A frame with :data:`TENSOR_COLUMNS`.
    """
    rows = []
    for t in manifest.get("tensors", []):
        if t.get("kind") != "quantized":
            continue
        rows.append(
            {
                "name": t["name"],
                "layer": t.get("layer"),
                "expert": t.get("expert"),
                "proj": t.get("proj"),
                "role": t.get("role"),
                "bits": t["bits"],
                "group_size": t.get("group_size"),
                "params": int(t["rows"]) * int(t["cols"]),
                "predicted_error": t.get("predicted_error"),
                "rel_error": t.get("rel_error"),
                "bytes": t.get("bytes"),
                "predicted_bytes": t.get("predicted_bytes"),
            }
        )
    return pd.DataFrame(rows, columns=TENSOR_COLUMNS)


def tensors_from_checks(checks: Iterable[Any], plan: Plan) -> pd.DataFrame:
    """Per-tensor rows of a simulated plan (:class:`alphaq.evaluation.simulate.TensorCheck` list).

    Args:
        checks: the simulation's checks.
        plan: the applied :class:`alphaq.planning.plan_file.Plan` (bytes, shapes and roles).

    Returns:
        A frame with :data:`TENSOR_COLUMNS` (``bytes`` is NaN: nothing was written).
    """
    planned = {t.name: t for t in plan.tensors}
    rows = []
    for c in checks:
        t = planned[c.name]
        rows.append(
            {
                "name": c.tensor,
                "layer": c.layer,
                "expert": c.expert,
                "proj": t.proj,
                "role": t.role,
                "bits": c.bits,
                "group_size": t.group_size,
                "params": t.params,
                "predicted_error": c.predicted_error,
                "rel_error": c.rel_error,
                "bytes": math.nan,
                "predicted_bytes": t.bytes,
            }
        )
    return pd.DataFrame(rows, columns=TENSOR_COLUMNS)


def expert_table(
    tensors: pd.DataFrame,
    shares: Mapping[tuple[int, int], float] | None = None,
    shares_original: Mapping[tuple[int, int], float] | None = None,
    alphas: Mapping[tuple[int, int], float] | None = None,
) -> pd.DataFrame:
    """Aggregate the tensor rows of routed experts per (layer, expert), parameter-weighted.

    Args:
        tensors: a frame with :data:`TENSOR_COLUMNS`.
        shares: routing share of each (layer, expert) on the evaluation text, evaluated model.
        shares_original: the same for the original model (when it was evaluated).
        alphas: mean alpha of each expert from the inspect stage, when known.

    Returns:
        A frame with :data:`EXPERT_COLUMNS`, sorted by layer and expert.
    """
    routed = tensors[tensors["expert"].notna() & (tensors["role"].fillna("expert") == "expert")]
    rows = []
    for (layer, expert), group in routed.groupby(["layer", "expert"], sort=True):
        key = (int(layer), int(expert))
        weight = group["params"].astype(float)
        total = float(weight.sum())

        def mean(column: str, group: pd.DataFrame = group, weight: pd.Series = weight, total: float = total) -> float:
            values = pd.to_numeric(group[column], errors="coerce")
            ok = values.notna()
            return float((values[ok] * weight[ok]).sum() / weight[ok].sum()) if ok.any() and total else math.nan

        rows.append(
            {
                "layer": key[0],
                "expert": key[1],
                "bits": mean("bits"),
                "params": int(total),
                "predicted_error": mean("predicted_error"),
                "rel_error": mean("rel_error"),
                "bytes": _sum(group["bytes"]),
                "predicted_bytes": _sum(group["predicted_bytes"]),
                "routing_share": (shares or {}).get(key, math.nan),
                "routing_share_original": (shares_original or {}).get(key, math.nan),
                "alpha": (alphas or {}).get(key, math.nan),
            }
        )
    return pd.DataFrame(rows, columns=EXPERT_COLUMNS)


def _sum(values: pd.Series) -> float:
    numbers = pd.to_numeric(values, errors="coerce")
    return float(numbers.sum()) if numbers.notna().any() else math.nan


def verification_summary(tensors: pd.DataFrame, experts: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers: mean errors, Spearman of predicted vs measured error, routing share per width.

    Args:
        tensors: per-tensor rows (:data:`TENSOR_COLUMNS`).
        experts: per-expert rows (:data:`EXPERT_COLUMNS`).

    Returns:
        ``mean_rel_error`` / ``mean_predicted_error`` (parameter-weighted), ``error_spearman`` (rank correlation of
        predicted vs measured error over tensors; NaN with fewer than 3 or constant values), ``bytes`` /
        ``predicted_bytes`` totals, and ``routing_share_by_bits`` (mean share of a layer's selections that went
        to experts stored at each width, i.e. how much of the text runs on each precision).
    """
    from scipy.stats import spearmanr

    out: dict[str, Any] = {"tensors": len(tensors), "experts": len(experts)}
    weight = tensors["params"].astype(float) if len(tensors) else pd.Series(dtype=float)
    for column, key in (("rel_error", "mean_rel_error"), ("predicted_error", "mean_predicted_error")):
        values = pd.to_numeric(tensors[column], errors="coerce") if len(tensors) else pd.Series(dtype=float)
        ok = values.notna()
        out[key] = float((values[ok] * weight[ok]).sum() / weight[ok].sum()) if ok.any() else math.nan
    pair = tensors[["predicted_error", "rel_error"]].apply(pd.to_numeric, errors="coerce").dropna()
    if len(pair) >= 3 and pair["predicted_error"].nunique() > 1 and pair["rel_error"].nunique() > 1:
        out["error_spearman"] = float(spearmanr(pair["predicted_error"], pair["rel_error"])[0])
    else:
        out["error_spearman"] = math.nan
    out["bytes"] = _sum(tensors["bytes"]) if len(tensors) else math.nan
    out["predicted_bytes"] = _sum(tensors["predicted_bytes"]) if len(tensors) else math.nan
    by_bits: dict[str, float] = {}
    shared = experts[experts["routing_share"].notna()]
    if len(shared):
        layers = shared["layer"].nunique()
        for bits, group in shared.groupby(shared["bits"].round(3)):
            label = str(int(bits)) if float(bits).is_integer() else f"{bits:g}"
            by_bits[label] = float(group["routing_share"].sum() / layers)
    out["routing_share_by_bits"] = by_bits
    return out


__all__ = [
    "EXPERT_COLUMNS",
    "TENSOR_COLUMNS",
    "expert_table",
    "tensors_from_checks",
    "tensors_from_quantize_manifest",
    "verification_summary",
]
