"""Data-free quality view: aggregate per-matrix metrics to experts, rank them, flag outliers.

Pure pandas on the ``details`` table; lower alpha means heavier-tailed, better-trained (HT-SR).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: alpha below this is labelled over-trained, above UNDER_TRAINED under-trained (weightwatcher's bounds).
OVER_TRAINED_ALPHA = 2.0
UNDER_TRAINED_ALPHA = 6.0
#: |robust z| of an expert's mean alpha within its layer above this makes it an outlier.
OUTLIER_Z = 2.5

EXPERT_COLUMNS = [
    "layer", "expert", "role", "n_matrices", "params", "alpha_mean", "alpha_min", "alpha_max", "weakest_proj",
    "weakest_alpha", "alpha_weighted_mean", "log_norm_mean", "stable_rank_mean", "robust_z", "rank_in_layer",
    "rank_global", "quality", "status",
]


def robust_z(values: pd.Series) -> pd.Series:
    """(x - median) / (1.4826 * MAD), NaN-aware; zero spread gives z = 0."""
    median = values.median()
    mad = (values - median).abs().median()
    if not np.isfinite(mad) or mad == 0:
        return pd.Series(np.where(values.notna(), 0.0, np.nan), index=values.index)
    return (values - median) / (1.4826 * mad)


def aggregate_experts(details: pd.DataFrame) -> pd.DataFrame:
    """One row per routed expert (and per layer's shared expert) from the per-matrix ``details``.

    Args:
        details: per-matrix table with layer, expert, proj, role, params, alpha, alpha_weighted, log_norm,
            stable_rank, status.

    Returns:
        DataFrame with :data:`EXPERT_COLUMNS`, sorted by layer then expert.
    """
    subset = details[details["role"].isin(["expert", "shared_expert"])].copy()
    if subset.empty:
        return pd.DataFrame(columns=EXPERT_COLUMNS)
    subset["expert_key"] = subset["expert"].astype("Int64")
    ok = subset["status"] == "success"
    subset["alpha_ok"] = subset["alpha"].where(ok)
    rows = []
    for (layer, role, expert), group in subset.groupby(["layer", "role", "expert_key"], dropna=False, sort=True):
        fitted = group[group["alpha_ok"].notna()]
        weakest = fitted.loc[fitted["alpha_ok"].idxmax()] if not fitted.empty else None
        rows.append({
            "layer": layer, "expert": expert, "role": role, "n_matrices": len(group),
            "params": int(group["params"].sum()),
            "alpha_mean": fitted["alpha_ok"].mean() if not fitted.empty else np.nan,
            "alpha_min": fitted["alpha_ok"].min() if not fitted.empty else np.nan,
            "alpha_max": fitted["alpha_ok"].max() if not fitted.empty else np.nan,
            "weakest_proj": weakest["proj"] if weakest is not None else "",
            "weakest_alpha": weakest["alpha_ok"] if weakest is not None else np.nan,
            "alpha_weighted_mean": fitted["alpha_weighted"].mean() if not fitted.empty else np.nan,
            "log_norm_mean": group["log_norm"].mean(),
            "stable_rank_mean": group["stable_rank"].mean(),
            "status": "success" if len(fitted) == len(group) else ("failed" if fitted.empty else "partial"),
        })
    experts = pd.DataFrame(rows)
    experts["layer"] = experts["layer"].astype("Int64")
    experts["expert"] = experts["expert"].astype("Int64")
    routed = experts["role"] == "expert"
    experts["robust_z"] = np.nan
    experts["rank_in_layer"] = pd.array([pd.NA] * len(experts), dtype="Int64")
    for _, idx in experts[routed].groupby("layer").groups.items():
        alphas = experts.loc[idx, "alpha_mean"]
        experts.loc[idx, "robust_z"] = robust_z(alphas)
        experts.loc[idx, "rank_in_layer"] = alphas.rank(method="first", na_option="keep").astype("Int64")
    experts["rank_global"] = experts["alpha_mean"].where(routed).rank(method="first", na_option="keep").astype("Int64")
    experts["quality"] = [quality_label(a, z) for a, z in zip(experts["alpha_mean"], experts["robust_z"])]
    return experts[EXPERT_COLUMNS].sort_values(["layer", "role", "expert"], ignore_index=True)


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
    routed = experts[experts["role"] == "expert"]
    if routed.empty:
        return pd.DataFrame(columns=["layer", "experts", "alpha_mean", "alpha_min", "alpha_max", "outliers"])
    grouped = routed.groupby("layer")
    return pd.DataFrame({
        "experts": grouped.size(),
        "alpha_mean": grouped["alpha_mean"].mean(),
        "alpha_min": grouped["alpha_mean"].min(),
        "alpha_max": grouped["alpha_mean"].max(),
        "outliers": grouped["quality"].apply(lambda q: int(q.str.startswith("outlier").sum())),
    }).reset_index()
