"""plan.html: the bit-width plan of one checkpoint, read from a plan run folder.

The page reads what ``alphaq plan`` saved (plan.json; optionally sweep.csv and plan_comparison.json) and,
when the inspect stage wrote into the same folder, its experts.csv/details.csv for alpha. It recomputes
no metric: widths, bytes, errors and solver figures are shown as the plan stage recorded them. Loading lives in
:mod:`alphaq.report.plan_artifacts` (:class:`PlanArtifacts`, :func:`load_plan_run`, re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alphaq.report.gguf_section import gguf_section, whole_model_section
from alphaq.report.page import (
    Section,
    chip,
    fmt_bytes,
    fmt_count,
    fmt_seconds,
    provenance_from_manifest,
    render_page,
    stat_cards,
    write_page,
)
from alphaq.report.plan_artifacts import INSPECT_FILES as INSPECT_FILES
from alphaq.report.plan_artifacts import PlanArtifacts as PlanArtifacts
from alphaq.report.plan_artifacts import load_plan_run as load_plan_run
from alphaq.report.plan_sections import (
    as_float,
    as_mapping,
    deployability_section,
    failed_fits_section,
    fmt_number,
    heatmap_section,
    histogram_section,
    memory_section,
    scatter_section,
    sweep_section,
    tensor_section,
)
from alphaq.runfolder import PLAN_HTML

#: Rows of the per-tensor table (largest predicted error first).
TOP_TENSORS = 100
_GRANULARITY_HINT = {
    "expert": "one width per expert (gate, up, down together)",
    "matrix": "one width per matrix",
    "layer": "one width per (layer, projection)",
}


def render_plan(run_dir: str | Path) -> Path:
    """Write ``run_dir/plan.html`` from the saved artifacts.

    Args:
        run_dir: a plan run folder.

    Returns:
        The path of the written page.

    Raises:
        AlphaQError: the folder or its plan.json is missing or invalid (see :func:`load_plan_run`).
    """
    folder = Path(run_dir)
    run = load_plan_run(folder)
    return write_page(folder / PLAN_HTML, plan_page_html(run, run_dir=folder))


def plan_page_html(run: PlanArtifacts, *, run_dir: str | Path | None = None, top_n: int = TOP_TENSORS) -> str:
    """The plan page's HTML.

    Args:
        run: loaded artifacts.
        run_dir: folder whose sibling pages the nav bar links (None: no links).
        top_n: rows of the per-tensor table.

    Returns:
        The HTML text.
    """
    provenance, options = run.plan.provenance, run.options
    sections = [
        Section("Summary", _summary_html(run), "The plan's budget, sizes and solver, as recorded in plan.json."),
        *([whole] if (whole := whole_model_section(provenance, run.plan.summary)) is not None else []),
        heatmap_section(run),
        scatter_section(run),
        histogram_section(run),
        memory_section(run),
        deployability_section(run),
        *([gguf] if (gguf := gguf_section(run.gguf_export, run.plan.plan_fingerprint)) is not None else []),
        sweep_section(run),
        failed_fits_section(run),
        tensor_section(run, top_n),
    ]
    budget = as_mapping(provenance.get("budget"))
    described = as_mapping(budget.get("resolved")).get("description") or budget.get("given") or "?"
    subtitle = (
        f"Alpha-guided mixed-precision plan \u00b7 {options.get('allocator', '?')} allocator, "
        f"{options.get('granularity', '?')} granularity, budget {described}"
    )
    return render_page(
        f"alphaq plan \u2014 {_model_name(run)}",
        _provenance(run),
        sections,
        warnings=_page_warnings(run),
        run_dir=run_dir,
        current=PLAN_HTML,
        subtitle=subtitle,
    )


# -- sections ----------------------------------------------------------------------------------------


def _summary_html(run: PlanArtifacts) -> str:
    prov, summary, options = run.plan.provenance, run.plan.summary, run.options
    budget, solver = as_mapping(prov.get("budget")), as_mapping(prov.get("solver"))
    resolved = as_mapping(budget.get("resolved"))
    group = options.get("group_size")
    capacity = as_float(resolved.get("capacity"))
    gap = as_float(solver.get("gap"))
    method = solver.get("method") or ("heuristic" if solver else "not recorded")
    granularity = str(options.get("granularity") or "?")
    widths = ", ".join(str(w) for w in options.get("widths") or []) or "?"
    error_hint = (
        f"{options.get('quant_method', '?')} quantizer"
        if options.get("error_model") == "measured"
        else "Var(W)\u00b72^(\u22122b)"
        if options.get("error_model") == "analytic"
        else ""
    )
    cards = [
        ("Allocator", str(options.get("allocator") or "?"), f"widths {widths}, group size {group or '?'}"),
        (
            "Granularity",
            granularity,
            f"{fmt_count(summary.get('units'))} units: " + _GRANULARITY_HINT.get(granularity, ""),
        ),
        (
            "Budget",
            str(budget.get("given") or budget.get("value") or "?"),
            f"resolved: {resolved.get('description', '?')}"
            + (f"; capacity {capacity:,.0f} {resolved.get('counts', '')}" if math.isfinite(capacity) else ""),
        ),
        (
            "Average payload bits",
            fmt_number(summary.get("average_payload_bits"), "{:.3f}"),
            "parameter-weighted over the routed experts",
        ),
        (
            "Effective bits",
            fmt_number(summary.get("effective_bits"), "{:.3f}"),
            f"payload + fp16 scale and zero per {group or '?'} weights",
        ),
        (
            "Expert bytes",
            fmt_bytes(summary.get("expert_bytes")),
            f"bf16 {fmt_bytes(summary.get('expert_bytes_bf16'))} \u00b7 "
            f"{fmt_number(summary.get('expert_compression_ratio'), '{:.2f}')}\u00d7 smaller",
        ),
        (
            "Compression ratio",
            fmt_number(summary.get("compression_ratio"), "{:.2f}\u00d7"),
            f"whole model: {fmt_bytes(summary.get('total_bytes'))} vs {fmt_bytes(summary.get('total_bytes_bf16'))} bf16",
        ),
        (
            "Solver",
            str(solver.get("status") or "?"),
            f"{method} \u00b7 objective {fmt_number(solver.get('objective'), '{:.4g}')} \u00b7 "
            f"gap {fmt_number(gap * 100, '{:.3g}%')} \u00b7 {fmt_seconds(solver.get('seconds'))}",
        ),
        ("Gamma", fmt_number(options.get("gamma"), "{:g}"), "importance (median \u03b1 / \u03b1)^\u03b3"),
        ("Error model", str(options.get("error_model") or "?"), error_hint),
        (
            "Predicted error",
            fmt_number(summary.get("predicted_error"), "{:.4g}"),
            f"\u03b1-weighted objective {fmt_number(summary.get('alpha_objective'), '{:.4g}')}",
        ),
        (
            "Kept outside the budget",
            str(options.get("keep") or "\u2014"),
            f"{fmt_bytes(summary.get('kept_bytes'))} (bf16 {fmt_bytes(summary.get('kept_bytes_bf16'))})",
        ),
    ]
    shares = as_mapping(summary.get("param_share_by_width"))
    out = [stat_cards(cards)]
    if shares:
        out.append(
            "<h3>Routed-expert parameters by width</h3><p>"
            + "".join(
                chip(f"{k} bits: {100 * as_float(v):.1f}%")
                for k, v in sorted(shares.items(), key=lambda kv: int(kv[0]))
            )
            + "</p>"
        )
    failed = list(prov.get("failed_fits") or [])
    if failed:
        out.append(
            "<p>"
            + chip(f"{_plural(len(failed), 'unit')} without a fitted \u03b1", "q-warn")
            + ' <a href="#failed-fits-and-notes">see below</a></p>'
        )
    return "".join(out)


# -- helpers -----------------------------------------------------------------------------------------


def _page_warnings(run: PlanArtifacts) -> list[str]:
    prov, summary = run.plan.provenance, run.plan.summary
    lines = list(run.load_warnings)
    solver = as_mapping(prov.get("solver"))
    if solver.get("status") not in (None, "optimal", "heuristic"):
        gap = fmt_number(solver.get("gap"), "{:.3g}")
        lines.append(
            f"solver status {solver.get('status')!r} (gap {gap}): the plan is feasible but not proven "
            "optimal; raise --time-limit for a tighter plan"
        )
    failed = list(prov.get("failed_fits") or [])
    if failed:
        lines.append(f"{_plural(len(failed), 'unit')} without a fitted \u03b1 planned with importance 1 (the median)")
    total = int(run.tensors["bytes"].sum())
    recorded = as_float(summary.get("total_bytes"))
    if math.isfinite(recorded) and recorded != total:
        lines.append(
            f"plan.json summary gives {summary['total_bytes']} total bytes but its tensors add up to {total}; "
            "re-create the plan with `alphaq plan`"
        )
    return lines


def _provenance(run: PlanArtifacts) -> dict[str, Any]:
    prov = run.plan.provenance
    ckpt = prov.get("checkpoint")
    ckpt = dict(ckpt) if isinstance(ckpt, Mapping) else ({"path": ckpt} if isinstance(ckpt, str) else {})
    fallback = as_mapping(as_mapping(run.inspect_manifest).get("checkpoint"))
    aliases_of = {
        "path": ("path", "checkpoint_path"),
        "fingerprint": ("fingerprint", "checkpoint_fingerprint"),
        "model_type": ("model_type",),
    }
    for key, aliases in aliases_of.items():
        ckpt.setdefault(key, next((prov[a] for a in aliases if isinstance(prov.get(a), str)), fallback.get(key)))
    diagnostics = as_mapping(prov.get("diagnostics"))
    inspect_fp = diagnostics.get("inspect_fingerprint") or diagnostics.get("fingerprint") or ""
    manifest = {"checkpoint": ckpt, "alphaq_version": prov.get("alphaq_version"), "created": prov.get("created")}
    out = provenance_from_manifest(manifest, plan=run.plan.plan_fingerprint, inspect=str(inspect_fp))
    if diagnostics.get("fit") or diagnostics.get("inspect_created"):
        out["alpha_source"] = " ".join(
            filter(
                None,
                (
                    f"{diagnostics['fit']} fit" if diagnostics.get("fit") else "",
                    f"(inspect run {diagnostics['inspect_created']})" if diagnostics.get("inspect_created") else "",
                ),
            )
        )
    if prov.get("calibration_text"):
        out["calibration_text"] = str(prov["calibration_text"])
    return out


def _model_name(run: PlanArtifacts) -> str:
    path = _provenance(run).get("path")
    return Path(str(path)).name if path else "plan"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
