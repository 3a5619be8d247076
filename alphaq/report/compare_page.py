"""compare.html: perplexity against average bits per allocator, read from a compare run folder.

The page reads what ``alphaq compare`` saved (compare.json, compare.csv, optionally expert_verification.csv) and
recomputes no metric.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from alphaq.evaluation.artifacts import load_compare_run
from alphaq.report.page import Section, empty_note, figure_html, render_page, stat_cards, table_html, write_page
from alphaq.runfolder import COMPARE_HTML

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_TABLE_COLUMNS = [
    "entry",
    "seed",
    "budget",
    "status",
    "average_payload_bits",
    "effective_bits",
    "predicted_error",
    "alpha_objective",
    "measured_rel_error",
    "ppl",
    "ppl_increase",
    "ci_low",
    "ci_high",
    "significant",
    "vs_uniform",
    "vs_uniform_low",
    "vs_uniform_high",
    "significant_vs_uniform",
    "mean_kld",
    "kld_low",
    "kld_high",
    "p99_kld",
    "same_top",
    "kld_vs_uniform",
    "kld_vs_uniform_low",
    "kld_vs_uniform_high",
    "kld_significant_vs_uniform",
]
_PREDICTOR_LABELS = {
    "predicted_error": "predicted error",
    "alpha_objective": "alpha objective",
    "abs_sq_error": "absolute squared error",
    "alpha_sq_error": "alpha-weighted squared error",
    "depth_sq_error": "depth-weighted squared error",
    "routed_sq_error": "routing-prior-weighted squared error",
}


def ppl_figure(table: pd.DataFrame) -> Figure | None:
    """Perplexity against average payload bits, one line per allocator entry, the original model dashed.

    Args:
        table: the compare table (``entry``, ``average_payload_bits``, ``ppl``).

    Returns:
        The figure, or None when no plan was evaluated.
    """
    from matplotlib.figure import Figure

    plans = table[(table["entry"] != "original") & table["ppl"].notna()]
    if plans.empty:
        return None
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    for entry, rows in plans.groupby("entry", sort=False):
        rows = rows.sort_values("average_payload_bits")
        ax.plot(rows["average_payload_bits"], rows["ppl"], marker="o", label=str(entry))
    original = table[table["entry"] == "original"]["ppl"]
    if len(original) and math.isfinite(float(original.iloc[0])):
        ax.axhline(float(original.iloc[0]), color="black", linestyle="--", linewidth=1, label="original (bf16)")
    ax.set_xlabel("average payload bits (routed experts)")
    ax.set_ylabel("perplexity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _check_html(meta: dict[str, Any]) -> str:
    check = meta.get("prediction_check") or {}
    cards = []
    for key, label in _PREDICTOR_LABELS.items():
        item = check.get(key)
        if item is None:
            continue
        rho = item.get("rho")
        value = f"{rho:.3f}" if isinstance(rho, (int, float)) and math.isfinite(rho) else "\u2014"
        p = item.get("p_value")
        hint = (
            f"p = {p:.3g}, {item.get('plans', 0)} plans" if isinstance(p, (int, float)) else str(item.get("status", ""))
        )
        cards.append((f"Spearman: {label} vs ppl increase", value, hint))
    prior = meta.get("routing_prior") or {}
    if not prior:
        return stat_cards(cards)
    rho = prior.get("spearman_with_eval_shares")
    agreement = (
        f"; its expert shares rank-correlate {rho:.2f} with the shares on the evaluation text"
        if isinstance(rho, (int, float)) and math.isfinite(rho)
        else ""
    )
    note = (
        f"<p>The routing prior is data-free: {prior.get('windows')} sequences of {prior.get('context')} uniformly "
        f"random token ids (seed {prior.get('seed')}) through the model, counting the routers' top-k{agreement}.</p>"
    )
    return stat_cards(cards) + note


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _kld_text(row: Any) -> str:
    """The row's mean KL divergence from the original with its interval, and its paired difference from uniform."""
    if not _finite(row.get("mean_kld")):
        return ""
    text = f"; mean KLD {float(row['mean_kld']):.5f}"
    if _finite(row.get("kld_low")):
        text += f" [{float(row['kld_low']):.5f}, {float(row['kld_high']):.5f}]"
    text += f", same top token {100 * float(row['same_top']):.2f} %" if _finite(row.get("same_top")) else ""
    vs = row.get("kld_vs_uniform")
    if _finite(vs):
        sig = row.get("kld_significant_vs_uniform") is True or row.get("kld_significant_vs_uniform") == "True"
        better = "lower" if vs < 0 else "higher"
        text += (
            f", {float(vs):+.5f} vs uniform [{float(row['kld_vs_uniform_low']):+.5f}, "
            f"{float(row['kld_vs_uniform_high']):+.5f}], {'significantly ' + better if sig else 'not significant'}"
        )
    return text


def _significance_html(meta: dict[str, Any], table: pd.DataFrame) -> str:
    """Which differences the paired bootstrap calls significant, and the random allocator's seed spread."""
    intervals = meta.get("intervals") or {}
    if "significant" not in table.columns:
        return empty_note("this compare run predates confidence intervals; re-run alphaq compare")
    plans = table[(table["entry"] != "original") & table["ppl"].notna()]
    lines = []
    for _, row in plans.iterrows():
        seed = row.get("seed")
        name = f"{row['entry']}" + (
            f" (seed {int(seed)})" if isinstance(seed, (int, float)) and not math.isnan(seed) else ""
        )
        if not _finite(row.get("ci_low")):
            lines.append(
                f"<li>{name} @ {row['budget']}: +{row['ppl_increase']:.3f} ppl vs the original "
                "(no interval: fewer than 2 windows)</li>"
            )
            continue
        verdict = (
            "significant" if row.get("significant") is True or row.get("significant") == "True" else "not significant"
        )
        text = (
            f"{name} @ {row['budget']}: +{row['ppl_increase']:.3f} ppl vs the original "
            f"[{float(row['ci_low']):.3f}, {float(row['ci_high']):.3f}], {verdict}"
        )
        vs = row.get("vs_uniform")
        if _finite(vs):
            better = "better" if vs < 0 else "worse"
            sig = row.get("significant_vs_uniform") is True or row.get("significant_vs_uniform") == "True"
            text += (
                f"; {vs:+.3f} vs uniform [{float(row['vs_uniform_low']):+.3f}, {float(row['vs_uniform_high']):+.3f}]"
                f", {'significantly ' + better if sig else 'not significantly different'}"
            )
        text += _kld_text(row)
        lines.append(f"<li>{text}</li>")
    spread = meta.get("random_seeds") or {}
    spread_rows = pd.DataFrame(
        [
            {
                "budget": b,
                "seeds": len(v.get("seeds") or []),
                "mean ppl increase": v.get("mean"),
                "std": v.get("std"),
                "min": v.get("min"),
                "max": v.get("max"),
            }
            for b, v in spread.items()
        ]
    )
    level = intervals.get("level", 0.95)
    note = (
        f"<p>{level:.0%} paired-bootstrap intervals over the {table['windows'].iloc[0]} windows "
        f"({intervals.get('resamples', '?')} resamples): a difference is significant when its interval excludes 0."
        "</p>"
    )
    html = note + f"<ul>{''.join(lines)}</ul>"
    if len(spread_rows):
        html += table_html(spread_rows, float_format="{:.4f}", caption="random allocator over its seeds")
    return html


def _verification_html(verification: pd.DataFrame | None) -> str:
    if verification is None or verification.empty:
        return empty_note("no per-expert verification was recorded")
    frame = verification.assign(abs_gap=(verification["rel_error"] - verification["predicted_error"]).abs())
    grouped = (
        frame.groupby(["entry", "budget"], sort=False)
        .agg(
            matrices=("name", "size"),
            predicted_error=("predicted_error", "mean"),
            measured_rel_error=("rel_error", "mean"),
            max_abs_gap=("abs_gap", "max"),
        )
        .reset_index()
    )
    return table_html(
        grouped,
        float_format="{:.4f}",
        caption="Mean plan-predicted vs measured relative error of the quantized matrices; "
        "per-matrix rows and each expert's routing share on the eval text are in "
        "expert_verification.csv.",
    )


def compare_page_html(
    meta: dict[str, Any], table: pd.DataFrame, verification: pd.DataFrame | None, *, run_dir: str | Path | None = None
) -> str:
    """The compare page's HTML.

    Args:
        meta: compare.json content.
        table: compare.csv content.
        verification: expert_verification.csv content or None.
        run_dir: folder whose sibling pages the nav bar links.

    Returns:
        The HTML text.
    """
    fig = ppl_figure(table)
    protocol = meta.get("protocol") or {}
    original = meta.get("original_ppl")
    summary = stat_cards(
        [
            (
                "Original perplexity",
                f"{original:.3f}" if isinstance(original, (int, float)) else "\u2014",
                "bf16 weights",
            ),
            (
                "Windows",
                protocol.get("windows", "\u2014"),
                f"{protocol.get('context', '?')} tokens each, remainder dropped",
            ),
            ("Scored tokens", protocol.get("tokens", "\u2014"), "next-token predictions"),
        ]
    )
    shown = [c for c in _TABLE_COLUMNS if c in table.columns]
    sections = [
        Section("Summary", summary, "Standard protocol: non-overlapping windows of the model's context."),
        Section(
            "Perplexity vs bits",
            figure_html(fig, alt="perplexity vs average bits")
            if fig is not None
            else empty_note("no plan was evaluated"),
            "Simulated quantization (weights quantize-dequantized in place).",
        ),
        Section("Results", table_html(table[shown], float_format="{:.4f}"), "One row per plan; see compare.csv."),
        Section(
            "Significance",
            _significance_html(meta, table),
            "Which differences are real: paired bootstrap over windows, against the original and against uniform.",
        ),
        Section(
            "Data-free prediction check",
            _check_html(meta),
            "Rank correlation of the plans' data-free predictions with the measured perplexity increase.",
        ),
        Section("Per-expert verification", _verification_html(verification)),
    ]
    checkpoint = meta.get("checkpoint") or {}
    eval_text = meta.get("eval_text") or {}
    provenance = {
        "model": Path(str(checkpoint.get("path", "?"))).name,
        "model_type": checkpoint.get("model_type"),
        "path": checkpoint.get("path"),
        "fingerprint": checkpoint.get("fingerprint"),
        "alphaq_version": (meta.get("versions") or {}).get("alphaq"),
        "created": meta.get("created"),
        "Eval text": eval_text.get("path"),
        "Eval text sha256": eval_text.get("sha256"),
    }
    warnings = (
        []
        if protocol.get("max_windows") is None
        else [f"only the first {protocol.get('max_windows')} windows of the eval text were evaluated"]
    )
    return render_page(
        f"alphaq compare \u2014 {provenance['model']}",
        provenance,
        sections,
        warnings=warnings,
        run_dir=run_dir,
        current=COMPARE_HTML,
        subtitle="Perplexity of mixed-precision plans per allocator and budget",
    )


def render_compare(run_dir: str | Path) -> Path:
    """Write ``run_dir/compare.html`` from the saved compare results.

    Args:
        run_dir: a compare run folder.

    Returns:
        The written page's path.

    Raises:
        AlphaQError: the folder holds no compare run.
    """
    folder = Path(run_dir)
    meta, table, verification = load_compare_run(folder)
    return write_page(folder / COMPARE_HTML, compare_page_html(meta, table, verification, run_dir=folder))


__all__ = ["compare_page_html", "load_compare_run", "ppl_figure", "render_compare"]
