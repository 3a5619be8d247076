"""inspect.html: the data-free HT-SR audit of one checkpoint, read from an inspect run folder.

The page only reads what ``alphaq inspect`` saved (inspect.json, details.csv, experts.csv, spectra.npz);
it recomputes no metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.audit.artifacts import InspectRun, load_inspect_run
from alphaq.report.page import (
    Section,
    bullet_list,
    chip,
    empty_note,
    figure_html,
    fmt_count,
    fmt_seconds,
    provenance_from_manifest,
    render_page,
    stat_cards,
    table_html,
    write_page,
)
from alphaq.runfolder import INSPECT_HTML

if TYPE_CHECKING:
    import pandas as pd

#: Rows shown at each end of the expert ranking.
TOP_N = 10
_QUALITY_CLASS = {
    "ok": "q-ok",
    "outlier-low": "q-warn",
    "outlier-high": "q-warn",
    "over-trained": "q-warn",
    "under-trained": "q-bad",
    "failed": "q-bad",
}
_STATUS_CLASS = {"success": "q-ok", "partial": "q-warn", "skipped": "na", "failed": "q-bad", "nonfinite": "q-bad"}
_HEADERS = {
    "rank_global": "rank",
    "alpha_mean": "\u03b1 mean",
    "alpha_min": "\u03b1 min",
    "alpha_max": "\u03b1 max",
    "alpha_median": "\u03b1 median",
    "weakest_proj": "weakest proj",
    "weakest_alpha": "weakest \u03b1",
    "robust_z": "robust z",
    "rank_in_layer": "rank in layer",
    "stable_rank_mean": "stable rank",
    "non_expert_alpha_mean": "non-expert \u03b1 mean",
    "in_2_6": "share in [2, 6]",
    "flagged_matrices": "flagged matrices",
}
_RANK_COLUMNS = [
    "rank_global",
    "layer",
    "expert",
    "alpha_mean",
    "alpha_min",
    "alpha_max",
    "weakest_proj",
    "weakest_alpha",
    "robust_z",
    "rank_in_layer",
    "stable_rank_mean",
    "quality",
    "status",
]


def render_inspect(run_dir: str | Path) -> Path:
    """Write ``run_dir/inspect.html`` from the saved artifacts.

    Args:
        run_dir: an inspect run folder.

    Returns:
        The path of the written page.

    Raises:
        AlphaQError: the folder is missing or invalid (see :func:`load_inspect_run`).
    """
    folder = Path(run_dir)
    run = load_inspect_run(folder)
    return write_page(folder / INSPECT_HTML, inspect_page_html(run, run_dir=folder))


def inspect_page_html(run: InspectRun, *, run_dir: str | Path | None = None, top_n: int = TOP_N) -> str:
    """The inspect page's HTML.

    Args:
        run: loaded artifacts.
        run_dir: folder whose sibling pages the nav bar links (None: no links).
        top_n: experts shown at each end of the ranking.

    Returns:
        The HTML text.
    """
    manifest = run.manifest
    ckpt = manifest["checkpoint"]
    sections = [
        Section("Summary", _summary_html(run), "What was analysed, how long it took, and the headline numbers."),
        _heatmap_section(run),
        _distribution_section(run),
        _esd_section(run),
        _ranking_section(run, top_n),
        _layer_section(run),
        _warnings_section(run),
    ]
    warnings = [str(w) for w in manifest.get("warnings") or []] + list(run.load_warnings)
    name = Path(str(ckpt.get("path") or "checkpoint")).name
    options = manifest.get("options") or {}
    subtitle = (
        f"Data-free heavy-tailed self-regularization audit \u00b7 fit {options.get('fit', '?')}, "
        f"{options.get('dtype', '?')}, {options.get('device', '?')}"
    )
    return render_page(
        f"alphaq inspect \u2014 {name}",
        provenance_from_manifest(manifest),
        sections,
        warnings=warnings,
        run_dir=run_dir,
        current=INSPECT_HTML,
        subtitle=subtitle,
    )


# -- sections ----------------------------------------------------------------------------------------


def _summary_html(run: InspectRun) -> str:
    manifest, details, experts = run.manifest, run.details, run.experts
    ckpt, options, timing = manifest["checkpoint"], manifest.get("options") or {}, manifest.get("timing") or {}
    routed = _routed(experts)
    shared = experts[experts["role"] == "shared_expert"]
    alphas = routed["alpha_mean"].astype(float)
    alphas = alphas[np.isfinite(alphas)]
    counts = details["status"].value_counts()
    n_ok = int(counts.get("success", 0))
    num_experts = ckpt.get("num_experts")
    layers = options.get("layers")
    cards = [
        ("Model", Path(str(ckpt.get("path") or "?")).name, str(ckpt.get("model_type") or "")),
        (
            "Layers",
            fmt_count(ckpt.get("num_layers")),
            f"analysed: {', '.join(map(str, layers))}" if layers else "all analysed",
        ),
        (
            "Experts per layer",
            fmt_count(num_experts) if num_experts else "none (dense)",
            f"{len(routed)} routed" + (f" + {len(shared)} shared" if len(shared) else "") + " experts scored",
        ),
        ("Matrices", fmt_count(timing.get("matrices", len(details))), f"{n_ok} fitted successfully"),
        (
            "Fit",
            str(options.get("fit", "?")),
            f"{options.get('dtype', '?')} on {options.get('device', '?')}"
            + (", experts only" if options.get("experts_only") else "")
            + (", computed by weightwatcher" if options.get("engine") == "weightwatcher" else ""),
        ),
        ("Time", fmt_seconds(timing.get("seconds")), ""),
    ]
    if alphas.size:
        cards.append(
            (
                "Expert alpha (median)",
                f"{alphas.median():.2f}",
                f"min {alphas.min():.2f} \u00b7 max {alphas.max():.2f} (mean \u03b1 per routed expert)",
            )
        )
    else:
        cards.append(("Expert alpha", "\u2014", "no routed expert with a fit"))
    out = [stat_cards(cards)]
    if not experts.empty:
        quality = experts["quality"].value_counts()
        chips = "".join(
            chip(f"{count} {label}", _QUALITY_CLASS.get(str(label), ""))
            for label, count in sorted(quality.items(), key=lambda kv: (kv[0] != "ok", str(kv[0])))
        )
        out.append(f"<h3>Expert quality flags</h3><p>{chips}</p>")
    status_chips = "".join(
        chip(f"{count} {label}", _STATUS_CLASS.get(str(label), ""))
        for label, count in sorted(counts.items(), key=lambda kv: (kv[0] != "success", str(kv[0])))
    )
    out.append(f"<h3>Matrix fits</h3><p>{status_chips}</p>")
    bad = details[details["status"] != "success"]
    if not bad.empty:
        shown = [
            f"{name} \u2014 {status}" + (f": {message}" if message else "")
            for name, status, message in zip(bad["name"].head(8), bad["status"].head(8), bad["message"].head(8))
        ]
        if len(bad) > 8:
            shown.append(f"\u2026 and {len(bad) - 8} more (see Warnings)")
        out.append("<h3>Failed / skipped fits</h3>" + bullet_list(shown))
    return "".join(out)


def _heatmap_section(run: InspectRun) -> Section:
    from alphaq.report.figures import alpha_heatmap

    title, note = "Alpha heatmap", "Mean \u03b1 of each routed expert's matrices, layer \u00d7 expert."
    fig = alpha_heatmap(run.experts)
    if fig is None:
        return Section(
            title,
            empty_note(
                "No routed experts in this checkpoint (dense model, or experts not "
                "recognised): there is no layer \u00d7 expert map."
            ),
            note,
        )
    caption = (
        "Lower \u03b1 (darker) = heavier-tailed spectrum = better trained. Grey cells: no successful fit. "
        "Red outline: expert flagged (outlier, over- or under-trained)."
    )
    return Section(title, figure_html(fig, caption=caption, alt="alpha heatmap, layer by expert"), note)


def _distribution_section(run: InspectRun) -> Section:
    from alphaq.report.figures import alpha_distribution

    title = "Alpha distribution"
    note = "Fitted \u03b1 of every matrix by role and, for the expert matrices, by projection."
    details = run.details
    fig = alpha_distribution(details)
    if fig is None:
        return Section(title, empty_note("No successful fit: nothing to plot."), note)
    ok = details[details["status"] == "success"].copy()
    ok["alpha"] = ok["alpha"].astype(float)
    grouped = ok.groupby(["role", "proj"], dropna=False)["alpha"]
    table = grouped.agg(matrices="size", alpha_median="median", alpha_min="min", alpha_max="max").reset_index()
    low, high = 2.0, 6.0
    table["in_2_6"] = grouped.apply(lambda a: float(((a >= low) & (a <= high)).mean())).to_numpy()
    html = figure_html(
        fig,
        caption="Dashed lines: \u03b1 = 2 and \u03b1 = 6, weightwatcher's over-/under-trained bounds.",
        alt="alpha distribution by role and projection",
    )
    html += "<h3>By role and projection</h3>" + table_html(table, max_rows=60, headers=_HEADERS)
    return Section(title, html, note)


def _esd_section(run: InspectRun) -> Section:
    from alphaq.report.figures import esd_figure, esd_panels

    title = "Spectra (ESD)"
    which = (
        "the best, median and worst routed experts' matrices"
        if not _routed(run.experts).empty
        else "the saved matrices"
    )
    note = (
        f"Eigenvalue CCDF on log-log axes for {which}; dashed: the fitted power-law tail from xmin (dot) "
        "with slope 1 \u2212 \u03b1."
    )
    if not run.spectra:
        return Section(title, empty_note("No spectra saved (spectra.npz missing or empty): ESD plots omitted."), note)
    fig = esd_figure(esd_panels(run.details, run.experts, run.spectra))
    if fig is None:
        return Section(title, empty_note("No spectrum to plot."), note)
    return Section(title, figure_html(fig, alt="eigenvalue spectra on log-log axes"), note)


def _ranking_section(run: InspectRun, top_n: int) -> Section:
    title = "Expert ranking"
    note = "Routed experts ranked by mean \u03b1 over all layers (rank 1 = lowest \u03b1 = best)."
    routed = _routed(run.experts)
    if routed.empty:
        return Section(title, empty_note("No routed experts to rank."), note)
    columns = [c for c in _RANK_COLUMNS if c in routed.columns]
    ranked = routed.sort_values(["rank_global", "layer", "expert"], na_position="last", kind="mergesort")[columns]
    styles = {"quality": _quality_class, "status": _status_class}
    with_rank = ranked[ranked["rank_global"].notna()]
    if len(ranked) <= 2 * top_n + 5:
        html = table_html(ranked, max_rows=len(ranked) + 1, cell_class=styles, headers=_HEADERS)
    else:
        html = (
            f"<h3>Top {top_n} (lowest \u03b1)</h3>"
            + table_html(with_rank.head(top_n), cell_class=styles, headers=_HEADERS)
            + f"<h3>Bottom {top_n} (highest \u03b1, worst first)</h3>"
            + table_html(with_rank.tail(top_n).iloc[::-1], cell_class=styles, headers=_HEADERS)
            + f'<p class="tablecap">{len(ranked)} routed experts in all; the full table is experts.csv.</p>'
        )
        unranked = ranked[ranked["rank_global"].isna()]
        if not unranked.empty:
            html += "<h3>Not ranked (no successful fit)</h3>" + table_html(
                unranked, cell_class=styles, headers=_HEADERS
            )
    shared = run.experts[run.experts["role"] == "shared_expert"]
    if not shared.empty:
        shared_cols = [
            c
            for c in _RANK_COLUMNS
            if c in shared.columns and c not in ("rank_global", "rank_in_layer", "robust_z", "expert")
        ]
        html += "<h3>Shared experts</h3>" + table_html(
            shared.sort_values("layer")[shared_cols], max_rows=80, cell_class=styles, headers=_HEADERS
        )
    return Section(title, html, note)


def _layer_section(run: InspectRun) -> Section:
    title = "Per-layer summary"
    routed = _routed(run.experts)
    if not routed.empty:
        from alphaq.audit.expert_quality import layer_summary

        table = layer_summary(routed)
        flagged = routed[~routed["quality"].isin(["ok"])].groupby("layer").size()
        failed = routed[routed["quality"] == "failed"].groupby("layer").size()
        table["flagged"] = table["layer"].map(flagged).fillna(0).astype(int)
        table["failed"] = table["layer"].map(failed).fillna(0).astype(int)
        other = _layer_alpha(run.details[~run.details["role"].isin(["expert", "shared_expert"])])
        if not other.empty:
            table["non_expert_alpha_mean"] = table["layer"].map(other).astype(float)
        note = (
            "Mean / min / max of the routed experts' mean \u03b1 per layer; outliers: |robust z| > 2.5 "
            "within the layer; flagged: any quality label other than ok."
        )
    else:
        ok = run.details[(run.details["status"] == "success") & run.details["layer"].notna()].copy()
        ok["alpha"] = ok["alpha"].astype(float)
        grouped = ok.groupby("layer")["alpha"]
        table = grouped.agg(matrices="size", alpha_mean="mean", alpha_min="min", alpha_max="max").reset_index()
        flags = ok[ok["warning"] != ""].groupby("layer").size()
        table["flagged_matrices"] = table["layer"].map(flags).fillna(0).astype(int)
        note = "No routed experts: mean / min / max \u03b1 over each layer's fitted matrices."
    if table.empty:
        return Section(title, empty_note("No layer with a successful fit."), note)
    return Section(title, table_html(table, max_rows=400, headers=_HEADERS), note)


def _warnings_section(run: InspectRun) -> Section:
    title = "Warnings"
    note = "Warnings recorded by the inspect stage and every matrix whose fit did not succeed."
    lines = [str(w) for w in run.manifest.get("warnings") or []] + list(run.load_warnings)
    parts = [bullet_list(lines) if lines else empty_note("The inspect stage recorded no warning.")]
    details = run.details
    flags = details.loc[details["warning"] != "", "warning"].value_counts()
    if not flags.empty:
        parts.append(
            "<h3>Matrix flags</h3><p>" + "".join(chip(f"{n} {label}", "q-warn") for label, n in flags.items()) + "</p>"
        )
    bad = details[details["status"] != "success"]
    columns = [
        c for c in ("name", "layer", "expert", "proj", "role", "rows", "cols", "status", "message") if c in bad.columns
    ]
    parts.append("<h3>Matrices without a successful fit</h3>")
    parts.append(
        table_html(bad[columns], max_rows=200, cell_class={"status": _status_class})
        if not bad.empty
        else empty_note("None: every selected matrix was fitted.")
    )
    return Section(title, "".join(parts), note)


# -- helpers -----------------------------------------------------------------------------------------


def _layer_alpha(details: pd.DataFrame) -> pd.Series:
    ok = details[(details["status"] == "success") & details["layer"].notna()]
    return ok["alpha"].astype(float).groupby(ok["layer"]).mean()


def _routed(experts: pd.DataFrame) -> pd.DataFrame:
    return experts[experts["role"] == "expert"]


def _quality_class(value: Any) -> str:
    return _QUALITY_CLASS.get(str(value), "")


def _status_class(value: Any) -> str:
    return _STATUS_CLASS.get(str(value), "")
