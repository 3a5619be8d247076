"""The budget sections of plan.html: deployability (which engines run the plan), the budget sweep and failed fits.

Each ``*_section`` function takes a loaded :class:`alphaq.report.plan_artifacts.PlanArtifacts` and returns a
:class:`~alphaq.report.page.Section`; it only reads and arranges what the plan stage saved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from alphaq.report.page import Section, bullet_list, chip, empty_note, figure_html, fmt_bytes, stat_cards, table_html
from alphaq.report.plan_values import as_float, as_mapping, fmt_number

if TYPE_CHECKING:
    from alphaq.report.plan_artifacts import PlanArtifacts


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
