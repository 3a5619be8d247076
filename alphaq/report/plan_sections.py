"""The sections of plan.html after the summary: bit-width map, alpha vs bits, histogram, memory and the per-tensor
plan (deployability, budget sweep and failed fits: :mod:`alphaq.report.plan_budget_sections`, re-exported here).

Each ``*_section`` function takes a loaded :class:`alphaq.report.plan_artifacts.PlanArtifacts` and returns a
:class:`Section`; it only reads and arranges what the plan (and inspect) stage saved.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.report.page import Section, empty_note, figure_html, fmt_bytes, table_html
from alphaq.report.plan_budget_sections import deployability_section as deployability_section
from alphaq.report.plan_budget_sections import failed_fits_section as failed_fits_section
from alphaq.report.plan_budget_sections import sweep_section as sweep_section
from alphaq.report.plan_values import as_float as as_float
from alphaq.report.plan_values import as_mapping as as_mapping
from alphaq.report.plan_values import bits_class
from alphaq.report.plan_values import fmt_number as fmt_number

if TYPE_CHECKING:
    import pandas as pd

    from alphaq.report.plan_artifacts import PlanArtifacts

_TENSOR_COLUMNS = [
    "name",
    "layer",
    "expert",
    "proj",
    "role",
    "rows",
    "cols",
    "bits",
    "group_size",
    "bytes",
    "error",
    "alpha",
    "unit",
]
#: Rows of the per-tensor table above which it scrolls in a box of its own.
_SCROLL_ROWS = 25
#: Layers above which the per-layer table starts folded.
_OPEN_LAYER_ROWS = 16


def heatmap_section(run: PlanArtifacts) -> Section:
    """Layer x expert (layer x projection for layer plans) map of the widths, and a per-layer table."""
    from alphaq.report.plan_figures import bits_grid, bits_heatmap

    layer = run.options.get("granularity") == "layer"
    column = "proj" if layer else "expert"
    title = "Bit-width map"
    note = (
        "Planned width per (layer, projection), shared by all experts of the layer."
        if layer
        else "Planned width per routed expert, layer \u00d7 expert"
        + (" (parameter-weighted mean of its matrices)." if run.options.get("granularity") == "matrix" else ".")
    )
    routed = run.routed
    grid = bits_grid(routed, column)
    failed_units = set(str(u) for u in run.plan.provenance.get("failed_fits") or [])
    marked = routed[routed["unit"].isin(failed_units) & routed["layer"].notna() & routed[column].notna()]
    cells = {(int(a), b) for a, b in zip(marked["layer"], marked[column])}
    fig = bits_heatmap(grid, widths=run.options.get("widths") or (), failed=cells, xlabel=column)
    if fig is None:
        return Section(title, empty_note("No routed expert with a layer in this plan: nothing to map."), note)
    html = figure_html(
        fig,
        caption="Brighter = more bits. Red outline: unit without a fitted \u03b1 (importance 1, the median).",
        alt="planned bits, layer by " + column,
    )
    per_layer = _layer_table(run)
    if not per_layer.empty:
        table = table_html(
            per_layer,
            max_rows=400,
            headers={
                "bits_mean": "mean bits",
                "bits_min": "min bits",
                "bits_max": "max bits",
                "alpha_mean": "\u03b1 mean",
                "plan_bytes": "plan bytes",
            },
        )
        html += (
            f"<h3>Per layer</h3>{table}"
            if len(per_layer) <= _OPEN_LAYER_ROWS
            else f"<details><summary>Per layer ({len(per_layer)} layers)</summary>{table}</details>"
        )
    return Section(title, html, note)


def scatter_section(run: PlanArtifacts) -> Section:
    """Expert mean alpha (experts.csv) against planned width; a note when the inspect artifacts are absent."""
    from alphaq.report.plan_figures import alpha_bits_scatter

    title = "Alpha vs bits"
    note = (
        "Each routed expert's mean \u03b1 (experts.csv) against its planned width; lower \u03b1 should get more bits."
    )
    points = _expert_points(run)
    if points is None:
        return Section(
            title,
            empty_note(
                "No inspect artifacts (experts.csv, details.csv, inspect.json) in this "
                "folder: \u03b1 per expert is unknown, the scatter is omitted."
            ),
            note,
        )
    fig = alpha_bits_scatter(points)
    if fig is None:
        return Section(title, empty_note("No routed expert of the plan has a fitted \u03b1."), note)
    ok = points[np.isfinite(points["alpha"])]
    varied = len(ok) > 2 and ok["alpha"].nunique() > 1 and ok["bits"].nunique() > 1
    rho = ok["alpha"].corr(ok["bits"], method="spearman") if varied else math.nan
    caption = (
        f"{len(ok)} experts; Spearman \u03c1(\u03b1, bits) = {fmt_number(rho, '{:.2f}')}. Widths jittered "
        "vertically; white diamonds: median \u03b1 at each width."
        + (f" {len(points) - len(ok)} experts without a fitted \u03b1 are not drawn." if len(ok) < len(points) else "")
    )
    return Section(title, figure_html(fig, caption=caption, alt="expert alpha against planned bits"), note)


def histogram_section(run: PlanArtifacts) -> Section:
    """Parameters per width, stacked by role."""
    from alphaq.report.plan_figures import bits_histogram

    title = "Bit-width histogram"
    note = "Parameters at each width, stacked by role; labels: share of all parameters."
    fig = bits_histogram(run.tensors)
    if fig is None:
        return Section(title, empty_note("The plan has no tensors."), note)
    return Section(title, figure_html(fig, alt="parameters per bit width"), note)


def memory_section(run: PlanArtifacts) -> Section:
    """bf16 against plan bytes: routed experts, each kept role with its widths, and the totals."""
    import pandas as pd

    title = "Memory"
    note = "Stored bytes in bf16 and under the plan (payload plus fp16 scales and zeros), by part of the model."
    tensors = run.tensors
    kept = tensors[~tensors["routed"]]
    rows = [_memory_row("routed experts", run.routed, mean=True)] if not run.routed.empty else []
    rows += [_memory_row(f"kept: {role}", group) for role, group in kept.groupby("role", sort=True)]
    if not kept.empty:
        rows.append(_memory_row("kept, all roles", kept))
    rows.append(_memory_row("total", tensors))
    table = pd.DataFrame(rows)
    table["share"] = 100.0 * table["plan_bytes"] / float(tensors["bytes"].sum())
    table = table[["part", "matrices", "params", "bits", "bf16", "plan", "plan_bytes", "share", "compression"]]
    headers = {
        "bf16": "bf16 size",
        "plan": "plan size",
        "plan_bytes": "plan bytes",
        "share": "share of plan (%)",
        "compression": "compression (\u00d7)",
    }
    html = table_html(
        table,
        max_rows=100,
        float_format="{:.2f}",
        sortable=False,
        headers=headers,
        caption="Kept roles sit outside the budget at the widths of the keep policy (16 = bf16).",
    )
    return Section(title, html, note)


def tensor_section(run: PlanArtifacts, top_n: int) -> Section:
    """The plan's matrices, largest predicted error first (top ``top_n``)."""
    title = "Per-tensor plan"
    tensors = run.tensors
    columns = [c for c in _TENSOR_COLUMNS if c != "alpha" or tensors["alpha"].notna().any()]
    ordered = tensors.sort_values(["error", "name"], ascending=[False, True], na_position="last", kind="mergesort")
    shown = ordered.head(top_n)[columns]
    hidden = len(tensors) - len(shown)
    caption = f"{hidden} not shown; plan.json lists all {len(tensors)} tensors." if hidden else ""
    html = table_html(
        shown,
        max_rows=max(len(shown), 1),
        float_format=lambda v: f"{v:.4g}",
        caption=caption,
        cell_class={"bits": bits_class},
        headers={"group_size": "group", "error": "predicted error"},
    )
    if len(shown) > _SCROLL_ROWS:  # a scroll box of its own; the header row stays in view
        html = f'<div style="max-height: 640px; overflow-y: auto;">{html}</div>'
    note = (
        f"Every matrix with its width, stored bytes and predicted error; the {len(shown)} with the largest "
        "predicted error first (kept bf16 matrices have error 0)."
    )
    return Section(title, html, note)


# -- helpers -----------------------------------------------------------------------------------------


def _expert_points(run: PlanArtifacts) -> pd.DataFrame | None:
    """Per routed expert: layer, expert, planned mean bits and experts.csv mean alpha (None without experts.csv)."""
    import pandas as pd

    if run.experts is None:
        return None
    routed = run.routed
    routed = routed[routed["layer"].notna() & routed["expert"].notna()]
    if routed.empty:
        return pd.DataFrame({"layer": [], "expert": [], "bits": [], "alpha": []}, dtype=float)
    keyed = routed.assign(
        _pb=routed["params"] * routed["bits"], layer=routed["layer"].astype(int), expert=routed["expert"].astype(int)
    )
    sums = keyed.groupby(["layer", "expert"])[["_pb", "params"]].sum()
    points = (sums["_pb"] / sums["params"]).rename("bits").reset_index()
    experts = run.experts
    experts = experts[(experts["role"] == "expert") & experts["layer"].notna() & experts["expert"].notna()]
    alpha = {(int(a), int(b)): float(c) for a, b, c in zip(experts["layer"], experts["expert"], experts["alpha_mean"])}
    points["alpha"] = [alpha.get((a, b), math.nan) for a, b in zip(points["layer"], points["expert"])]
    return points


def _layer_table(run: PlanArtifacts) -> pd.DataFrame:
    import pandas as pd

    routed = run.routed[run.routed["layer"].notna()]
    if routed.empty:
        return pd.DataFrame()
    keyed = routed.assign(layer=routed["layer"].astype(int), _pb=routed["params"] * routed["bits"])
    grouped = keyed.groupby("layer")
    table = pd.DataFrame(
        {
            "units": grouped["unit"].nunique(),
            "bits_mean": grouped["_pb"].sum() / grouped["params"].sum(),
            "bits_min": grouped["bits"].min(),
            "bits_max": grouped["bits"].max(),
        }
    )
    points = _expert_points(run)
    if points is not None:
        table["alpha_mean"] = points.groupby("layer")["alpha"].mean()
    table["plan_bytes"] = grouped["bytes"].sum()
    return table.reset_index()


def _memory_row(part: str, frame: pd.DataFrame, *, mean: bool = False) -> dict[str, Any]:
    widths = sorted(int(b) for b in frame["bits"].unique())
    if mean and widths:
        text = (
            f"{widths[0]}\u2013{widths[-1]}" if len(widths) > 1 else str(widths[0])
        ) + f" (mean {float((frame['params'] * frame['bits']).sum()) / float(frame['params'].sum()):.2f})"
    else:
        text = ", ".join("16 (bf16)" if w == 16 else str(w) for w in widths)
    bf16, plan = int(frame["bf16_bytes"].sum()), int(frame["bytes"].sum())
    return {
        "part": part,
        "matrices": len(frame),
        "params": int(frame["params"].sum()),
        "bits": text,
        "bf16": fmt_bytes(bf16),
        "plan": fmt_bytes(plan),
        "plan_bytes": plan,
        "compression": bf16 / plan if plan else math.nan,
    }
