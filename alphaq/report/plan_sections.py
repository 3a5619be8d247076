"""The sections of plan.html after the summary: bit-width map, alpha vs bits, histogram, memory, deployability,
budget sweep, failed fits and the per-tensor plan.

Each ``*_section`` function takes a loaded :class:`alphaq.report.plan_page.PlanArtifacts` and returns a
:class:`Section`; it only reads and arranges what the plan (and inspect) stage saved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.report.page import Section, bullet_list, chip, empty_note, figure_html, fmt_bytes, stat_cards, table_html

if TYPE_CHECKING:
    import pandas as pd

    from alphaq.report.plan_page import PlanArtifacts

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


def deployability_section(run: PlanArtifacts) -> Section:
    """Which engines run the plan unchanged, and what the per-expert plan gains over a layer plan."""
    title = "Deployability"
    note = (
        "Layer-granularity engines need one width per (layer, projection); a per-expert plan runs on the "
        "alphaq runtime, or must be rounded up per layer (plan_comparison.json)."
    )
    routed = run.routed[run.routed["layer"].notna()]
    groups = routed.groupby([routed["layer"].astype(int), routed["proj"].astype(str)])["bits"].nunique()
    mixed = int((groups > 1).sum())
    uniform = (
        "The plan has no routed expert with a layer."
        if groups.empty
        else f"Every (layer, projection) of this plan has one width ({len(groups)} groups): layer-granularity "
        "engines can load it as is."
        if mixed == 0
        else f"{mixed} of {len(groups)} (layer, projection) groups mix widths across experts."
    )
    parts = [f"<p>{uniform}</p>"]
    comparison = run.comparison
    if comparison is None:
        parts.append(
            empty_note(
                "No plan_comparison.json in this folder: the per-expert vs layer-plan comparison "
                "and the engine list are omitted."
            )
        )
        return Section(title, "".join(parts), note)
    engines = as_mapping(comparison.get("engines"))
    layer_engines = [str(e) for e in engines.get("layer") or []]
    listed = comparison.get("deployable_on")
    listed = listed if isinstance(listed, list) else engines.get("per_expert") or []
    runs_on = [str(e) for e in listed]
    runs_on += [e for e in layer_engines if mixed == 0 and e not in runs_on]
    blocked = [e for e in layer_engines if e not in runs_on]
    expert_plan, layer_plan = as_mapping(comparison.get("expert_plan")), as_mapping(comparison.get("layer_plan"))
    expert_obj, layer_obj = as_float(expert_plan.get("objective")), as_float(layer_plan.get("objective"))
    gain = (layer_obj - expert_obj) / layer_obj if math.isfinite(expert_obj) and layer_obj > 0 else math.nan
    if not layer_plan:
        gain_hint = "not compared: this plan is itself one width per (layer, projection)"
    elif not math.isfinite(layer_obj):
        gain_hint = f"no layer plan to compare: {layer_plan.get('status') or 'not recorded'}"
    else:
        gain_hint = (
            f"lower objective than the best layer plan: {fmt_number(layer_obj, '{:.4g}')} \u2192 "
            f"{fmt_number(expert_obj, '{:.4g}')}"
        )
    rounded = as_float(comparison.get("rounded_up_per_layer_bytes"))
    basis = "expert_bytes" if "expert_bytes" in expert_plan else "total_bytes"
    reference = as_float(expert_plan.get(basis))
    extra = rounded / reference - 1 if math.isfinite(rounded) and reference > 0 else math.nan
    what = "expert bytes" if basis == "expert_bytes" else "bytes"
    cards = [
        ("Runs unchanged on", ", ".join(runs_on) or "\u2014", "engines that can load this plan's widths as they are"),
        ("Per-expert gain at equal memory", fmt_number(gain * 100, "{:.1f}%"), gain_hint),
        (
            "Rounded up per layer",
            fmt_bytes(rounded if math.isfinite(rounded) else None),
            f"{fmt_number(extra * 100, '{:+.1f}%')} vs this plan's {fmt_bytes(reference if reference > 0 else None)} "
            f"{what}: every expert of a (layer, projection) at its widest",
        ),
    ]
    parts.append(stat_cards(cards))
    chips = "".join(chip(e, "q-ok") for e in runs_on) + "".join(
        chip(f"{e}: round up per layer", "q-warn") for e in blocked
    )
    if chips:
        parts.append(f"<h3>Engines</h3><p>{chips}</p>")
    parts.append("<h3>At equal memory</h3>" + _comparison_table(layer_plan, expert_plan))
    return Section(title, "".join(parts), note)


def _comparison_table(layer_plan: Mapping[str, Any], expert_plan: Mapping[str, Any]) -> str:
    import pandas as pd

    numbers = ("objective", "predicted_error", "average_payload_bits", "expert_bytes", "total_bytes")
    rows = []
    for label, entry in (("best layer plan", layer_plan), ("this plan", expert_plan)):
        if entry:
            rows.append(
                {
                    "plan": label,
                    **{k: as_float(entry.get(k)) for k in numbers},
                    "status": str(entry.get("status") or ""),
                    "message": str(entry.get("message") or ""),
                }
            )
    table = pd.DataFrame(rows)
    shown = [
        c
        for c in table.columns
        if c in ("plan", "status")
        or (c in numbers and table[c].notna().any())
        or (c == "message" and table[c].astype(bool).any())
    ]
    table = table[shown]
    for column in ("expert_bytes", "total_bytes"):
        if column in table and table[column].notna().all():
            table[column] = table[column].astype("Int64")
    return table_html(
        table,
        float_format=lambda v: f"{v:.4g}",
        sortable=False,
        headers={
            "average_payload_bits": "avg payload bits",
            "total_bytes": "total bytes",
            "expert_bytes": "expert bytes",
            "predicted_error": "predicted error",
        },
    )


def sweep_section(run: PlanArtifacts) -> Section:
    """Predicted error against average bits per allocator (sweep.csv): figure, pivot and raw rows."""
    import pandas as pd

    from alphaq.report.plan_figures import ALLOCATOR_LABELS, HIGHLIGHT_ALLOCATOR, sweep_figure

    title = "Budget sweep"
    note = "Predicted error of each allocator over a range of budgets, from the plan's one cost table (sweep.csv)."
    sweep = run.sweep
    if sweep is None or sweep.empty:
        return Section(title, empty_note("No sweep.csv in this folder: the plan stage ran no budget sweep."), note)
    summary = run.plan.summary
    current = (as_float(summary.get("average_payload_bits")), as_float(summary.get("predicted_error")))
    fig = sweep_figure(sweep, current=current)
    parts = [
        figure_html(
            fig,
            alt="predicted error against average bits per allocator",
            caption="Thick line: AlphaQ (\u03b1-guided). Star: this plan.",
        )
        if fig is not None
        else empty_note("No feasible sweep point to plot.")
    ]
    names = sorted(
        dict.fromkeys(sweep["allocator"]),
        key=lambda n: (
            n != HIGHLIGHT_ALLOCATOR,
            list(ALLOCATOR_LABELS).index(n) if n in ALLOCATOR_LABELS else len(ALLOCATOR_LABELS),
            n,
        ),
    )
    rows = []
    for budget, group in sweep.groupby("budget", sort=False):
        error = {str(a): float(e) for a, e in zip(group["allocator"], group["predicted_error"])}
        bits = group["average_payload_bits"].dropna()
        row: dict[str, Any] = {"budget": budget, "avg_bits": float(bits.iloc[0]) if len(bits) else math.nan}
        row.update({ALLOCATOR_LABELS.get(n, n): error.get(n, math.nan) for n in names})
        finite = {n: e for n, e in error.items() if math.isfinite(e)}
        row["best"] = ALLOCATOR_LABELS.get(min(finite, key=finite.get), "") if finite else ""
        others = [e for n, e in finite.items() if n != HIGHLIGHT_ALLOCATOR]
        if HIGHLIGHT_ALLOCATOR in names:
            ours = finite.get(HIGHLIGHT_ALLOCATOR, math.nan)
            row["vs_best_other"] = 100 * (ours / min(others) - 1) if others and min(others) > 0 else math.nan
        rows.append(row)
    pivot = pd.DataFrame(rows)
    parts.append(
        "<h3>Predicted error by budget</h3>"
        + table_html(
            pivot,
            max_rows=200,
            float_format=lambda v: f"{v:.4g}",
            headers={"avg_bits": "avg payload bits", "vs_best_other": "AlphaQ vs best other (%)"},
            caption="Negative percentages: AlphaQ predicts less error than every other allocator at that budget.",
        )
    )
    parts.append(
        f"<details><summary>All sweep rows ({len(sweep)})</summary>"
        + table_html(sweep, max_rows=400, float_format=lambda v: f"{v:.4g}")
        + "</details>"
    )
    return Section(title, "".join(parts), note)


def failed_fits_section(run: PlanArtifacts) -> Section:
    """Units planned without a fitted alpha (importance 1), and the allocator's notes."""
    import pandas as pd

    title = "Failed fits and notes"
    note = "Units whose matrices have no fitted \u03b1 got importance 1 (the median); from plan.json's provenance."
    prov = run.plan.provenance
    failed = [str(u) for u in prov.get("failed_fits") or []]
    notes = [str(n) for n in prov.get("notes") or []]
    parts = []
    if failed:
        routed = run.routed
        rows = []
        for key in failed:
            members = routed[routed["unit"] == key]
            rows.append(
                {
                    "unit": key,
                    "layer": members["layer"].iloc[0] if len(members) else pd.NA,
                    "expert": members["expert"].iloc[0] if len(members) else pd.NA,
                    "matrices": len(members),
                    "params": int(members["params"].sum()),
                    "bits": ", ".join(str(b) for b in sorted(members["bits"].unique())),
                }
            )
        table = pd.DataFrame(rows)
        table[["layer", "expert"]] = table[["layer", "expert"]].astype("Int64")
        parts.append(table_html(table, max_rows=200))
    else:
        parts.append(empty_note("Every unit had a fitted \u03b1."))
    parts.append("<h3>Allocator notes</h3>" + (bullet_list(notes) if notes else empty_note("None.")))
    return Section(title, "".join(parts), note)


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
        cell_class={"bits": _bits_class},
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


def _bits_class(value: Any) -> str:
    return "q-bad" if int(value) <= 2 else "q-warn" if int(value) == 3 else "na" if int(value) == 16 else ""


def as_mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one (for optional JSON blocks)."""
    return value if isinstance(value, Mapping) else {}


def as_float(value: Any) -> float:
    """A float from a JSON value; NaN for None, booleans, text and other non-numbers."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt_number(value: Any, fmt: str) -> str:
    """``fmt.format(value)`` for a finite number, else an em dash."""
    number = as_float(value)
    return fmt.format(number) if np.isfinite(number) else "\u2014"
