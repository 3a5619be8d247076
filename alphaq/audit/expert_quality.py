"""Data-free quality view: aggregate per-matrix metrics to experts, rank them, flag outliers.

Lower alpha means heavier-tailed, better-trained (HT-SR). The computation is plain Python and numpy on rows
(dicts), :func:`expert_rows`, so the inspect command never waits for pandas; :func:`aggregate_experts` and
:func:`layer_summary` are its DataFrame faces for library users and the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.audit.table_files import is_missing, number_or_nan

if TYPE_CHECKING:
    import pandas as pd

#: alpha below this is labelled over-trained, above UNDER_TRAINED under-trained (weightwatcher's bounds).
OVER_TRAINED_ALPHA = 2.0
UNDER_TRAINED_ALPHA = 6.0
#: |robust z| of an expert's mean alpha within its layer above this makes it an outlier.
OUTLIER_Z = 2.5

EXPERT_COLUMNS = [
    "layer",
    "expert",
    "role",
    "n_matrices",
    "params",
    "alpha_mean",
    "alpha_min",
    "alpha_max",
    "weakest_proj",
    "weakest_alpha",
    "alpha_weighted_mean",
    "log_norm_mean",
    "stable_rank_mean",
    "robust_z",
    "rank_in_layer",
    "rank_global",
    "quality",
    "status",
]
#: Columns of the expert table holding integers or nothing (pandas "Int64").
EXPERT_INT_COLUMNS = ("layer", "expert", "rank_in_layer", "rank_global")
_EXPERT_ROLES = ("expert", "shared_expert")


def robust_z_values(values: Sequence[float]) -> list[float]:
    """(x - median) / (1.4826 * MAD) over the finite values; NaN stays NaN; zero spread gives z = 0."""
    array = np.asarray(values, dtype=np.float64)  # [n]
    present = ~np.isnan(array)
    if not present.any():
        return [math.nan] * len(array)
    median = float(np.median(array[present]))
    mad = float(np.median(np.abs(array[present] - median)))
    if not math.isfinite(mad) or mad == 0:
        return [0.0 if p else math.nan for p in present]
    return [float(z) for z in (array - median) / (1.4826 * mad)]


def robust_z(values: pd.Series) -> pd.Series:
    """:func:`robust_z_values` of a Series, on its index."""
    import pandas as pd

    return pd.Series(robust_z_values(values.astype(float).tolist()), index=values.index, dtype=float)


def expert_rows(details: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per routed expert (and per layer's shared expert) from per-matrix rows.

    Args:
        details: per-matrix rows (dicts) with layer, expert, proj, role, params, alpha, alpha_weighted, log_norm,
            stable_rank, status; a missing metric counts as NaN.

    Returns:
        Rows with :data:`EXPERT_COLUMNS`, sorted by layer, role, then expert (a shared expert's expert is None);
        ranks are 1-based ints or None.
    """
    groups: dict[tuple[Any, str, Any], list[Mapping[str, Any]]] = {}
    for row in details:
        if row.get("role") in _EXPERT_ROLES:
            key = (_int_or_none(row.get("layer")), str(row["role"]), _int_or_none(row.get("expert")))
            groups.setdefault(key, []).append(row)
    rows = [_one_expert(key, group) for key, group in sorted(groups.items(), key=lambda item: _sort_key(item[0]))]
    for row in rows:
        row["robust_z"], row["rank_in_layer"], row["rank_global"] = math.nan, None, None
    routed = [row for row in rows if row["role"] == "expert"]
    for layer in dict.fromkeys(row["layer"] for row in routed):
        members = [row for row in routed if row["layer"] == layer]
        alphas = [row["alpha_mean"] for row in members]
        for row, z, rank in zip(members, robust_z_values(alphas), _ranks(alphas)):
            row["robust_z"], row["rank_in_layer"] = z, rank
    for row, rank in zip(routed, _ranks([row["alpha_mean"] for row in routed])):
        row["rank_global"] = rank
    for row in rows:
        row["quality"] = quality_label(row["alpha_mean"], row["robust_z"])
    return [{column: row[column] for column in EXPERT_COLUMNS} for row in rows]


def aggregate_experts(details: pd.DataFrame) -> pd.DataFrame:
    """:func:`expert_rows` of a per-matrix DataFrame, as a DataFrame (layer, expert and ranks nullable Int64).

    Args:
        details: per-matrix table with layer, expert, proj, role, params, alpha, alpha_weighted, log_norm,
            stable_rank, status.

    Returns:
        DataFrame with :data:`EXPERT_COLUMNS`, sorted by layer, role, then expert.
    """
    return expert_frame(expert_rows(details.to_dict("records")))


def expert_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The DataFrame of :func:`expert_rows` output, integer columns as nullable Int64."""
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=EXPERT_COLUMNS)
    for column in EXPERT_INT_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    return frame


def quality_label(alpha_mean: float, z: float) -> str:
    """Label an expert: failed, over-/under-trained by alpha bounds, outlier within its layer, or ok."""
    if not np.isfinite(alpha_mean):
        return "failed"
    if alpha_mean < OVER_TRAINED_ALPHA:
        return "over-trained"
    if alpha_mean > UNDER_TRAINED_ALPHA:
        return "under-trained"
    if np.isfinite(z) and z > OUTLIER_Z:
        return "outlier-high"
    if np.isfinite(z) and z < -OUTLIER_Z:
        return "outlier-low"
    return "ok"


def layer_summary(experts: pd.DataFrame) -> pd.DataFrame:
    """Mean / min / max expert alpha and outlier count per layer (routed experts)."""
    import pandas as pd

    routed = experts[experts["role"] == "expert"]
    if routed.empty:
        return pd.DataFrame(columns=["layer", "experts", "alpha_mean", "alpha_min", "alpha_max", "outliers"])
    grouped = routed.groupby("layer")
    return pd.DataFrame(
        {
            "experts": grouped.size(),
            "alpha_mean": grouped["alpha_mean"].mean(),
            "alpha_min": grouped["alpha_mean"].min(),
            "alpha_max": grouped["alpha_mean"].max(),
            "outliers": grouped["quality"].apply(lambda q: int(q.str.startswith("outlier").sum())),
        }
    ).reset_index()


# -- internals ---------------------------------------------------------------------------------------


def _one_expert(key: tuple[Any, str, Any], group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The aggregate of one expert's matrices (in checkpoint order): fitted = status success with an alpha."""
    layer, role, expert = key
    fitted = [row for row in group if row.get("status") == "success" and not is_missing(row.get("alpha"))]
    alphas = [float(row["alpha"]) for row in fitted]
    weakest = fitted[int(np.argmax(alphas))] if fitted else None  # the first of equal maxima
    return {
        "layer": layer,
        "expert": expert,
        "role": role,
        "n_matrices": len(group),
        "params": int(sum(int(row["params"]) for row in group)),
        "alpha_mean": _mean(alphas),
        "alpha_min": min(alphas) if alphas else math.nan,
        "alpha_max": max(alphas) if alphas else math.nan,
        "weakest_proj": weakest["proj"] if weakest is not None else "",
        "weakest_alpha": float(weakest["alpha"]) if weakest is not None else math.nan,
        "alpha_weighted_mean": _mean([number_or_nan(row.get("alpha_weighted")) for row in fitted]),
        "log_norm_mean": _mean([number_or_nan(row.get("log_norm")) for row in group]),
        "stable_rank_mean": _mean([number_or_nan(row.get("stable_rank")) for row in group]),
        "status": "success" if len(fitted) == len(group) else ("failed" if not fitted else "partial"),
    }


def _mean(values: Sequence[float]) -> float:
    """NaN-skipping mean (numpy's summation, as pandas'); NaN when nothing is left."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(array.sum() / array.size) if array.size else math.nan


def _ranks(values: Sequence[float]) -> list[int | None]:
    """1-based ranks ascending, ties in order of appearance, None for NaN (pandas rank(method="first"))."""
    order = sorted((value, index) for index, value in enumerate(values) if not math.isnan(value))
    ranks: list[int | None] = [None] * len(values)
    for rank, (_, index) in enumerate(order, start=1):
        ranks[index] = rank
    return ranks


def _sort_key(key: tuple[Any, str, Any]) -> tuple[Any, ...]:
    layer, role, expert = key
    return (layer is None, layer or 0, role, expert is None, expert or 0)


def _int_or_none(value: Any) -> int | None:
    return None if is_missing(value) else int(value)
