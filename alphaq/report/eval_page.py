"""eval.html: what ``alphaq eval`` measured, read from eval.json, eval_tensors.csv and eval_experts.csv.

The page recomputes nothing: perplexities, memory, errors and routing shares are shown as the eval stage
recorded them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from alphaq.evaluation.artifacts import load_eval_run
from alphaq.report.page import (
    Section,
    empty_note,
    figure_html,
    fmt_bytes,
    render_page,
    stat_cards,
    table_html,
    write_page,
)
from alphaq.runfolder import EVAL_HTML, EVAL_TENSORS_CSV

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DASH = "\u2014"


def _num(value: Any, fmt: str = "{:.4f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and math.isfinite(value) else _DASH


def error_figure(tensors: pd.DataFrame) -> Figure | None:
    """Measured vs plan-predicted relative error per tensor, coloured by width, with the y = x line."""
    from matplotlib.figure import Figure

    need = {"predicted_error", "rel_error", "bits"}
    if tensors.empty or not need <= set(tensors.columns):
        return None
    rows = tensors.dropna(subset=["predicted_error", "rel_error"])
    if rows.empty:
        return None
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.add_subplot()
    for bits, group in rows.groupby("bits"):
        ax.scatter(group["predicted_error"], group["rel_error"], s=14, alpha=0.75, label=f"{int(bits)} bits")
    low = float(min(rows["predicted_error"].min(), rows["rel_error"].min()))
    high = float(max(rows["predicted_error"].max(), rows["rel_error"].max()))
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--", label="measured = predicted")
    ax.set_xlabel("plan-predicted relative error")
    ax.set_ylabel("measured relative error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def routing_figure(experts: pd.DataFrame) -> Figure | None:
    """Routing share of each expert on the eval text, one panel row per layer, bars coloured by width."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if experts.empty or experts["routing_share"].isna().all():
        return None
    layers = sorted(experts["layer"].unique())
    widths = sorted(experts["bits"].round(2).unique())
    palette = colormaps["viridis"]
    colour = {w: palette(i / max(len(widths) - 1, 1)) for i, w in enumerate(widths)}
    fig = Figure(figsize=(7.0, 1.3 + 1.2 * len(layers)))
    axes = fig.subplots(len(layers), 1, sharex=True, squeeze=False)[:, 0]
    for ax, layer in zip(axes, layers):
        rows = experts[experts["layer"] == layer].sort_values("expert")
        ax.bar(rows["expert"], rows["routing_share"], color=[colour[w] for w in rows["bits"].round(2)])
        ax.set_ylabel(f"L{int(layer)}", rotation=0, labelpad=14, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel("expert")
    axes[0].legend(
        handles=[Patch(color=colour[w], label=f"{w:g} bits") for w in widths],
        loc="lower left",
        bbox_to_anchor=(0.0, 1.02),
        fontsize=8,
        ncols=len(widths),
        frameon=False,
    )
    axes[0].set_title("share of each layer's routed selections", fontsize=9, loc="right")
    fig.tight_layout()
    return fig


def _integer_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Whole-number columns as nullable integers (shown without decimals; missing stays missing)."""
    out = frame.copy()
    for column in columns:
        if column in out.columns:
            values = pd.to_numeric(out[column], errors="coerce")
            if values.dropna().mod(1).eq(0).all():
                out[column] = values.round().astype("Int64")
    return out


def _summary(record: dict[str, Any]) -> str:
    base = record.get("baseline") or {}
    memory = record.get("memory") or {}
    cards = [
        ("Perplexity", _num(record.get("ppl")), f"{record.get('source', {}).get('kind', '?')} model"),
        ("Original perplexity", _num(base.get("ppl")), "same windows" if base else "not evaluated"),
        ("Increase", _num(record.get("ppl_increase"), "{:+.4f}"), "quantized \u2212 original"),
        (
            "Windows",
            record.get("windows", _DASH),
            (f"{record.get('context', '?')} tokens each; {record.get('tokens', 0):,} scored"),
        ),
    ]
    kld = record.get("kld")
    if isinstance(kld, dict):
        interval = kld.get("mean_kld_interval") or {}
        same = kld.get("same_top_interval") or {}
        cards += [
            (
                "Mean KL divergence",
                _num(kld.get("mean_kld"), "{:.5f}"),
                (
                    f"95% CI [{_num(interval.get('low'), '{:.5f}')}, {_num(interval.get('high'), '{:.5f}')}]; "
                    f"median {_num(kld.get('median_kld'), '{:.5f}')}, p99 {_num(kld.get('p99_kld'), '{:.4f}')}; "
                    f"{kld.get('windows', '?')} windows"
                ),
            ),
            (
                "Same top token",
                _num(100 * kld["same_top"], "{:.2f} %") if kld.get("same_top") is not None else _DASH,
                f"95% CI [{_num(100 * same['low'], '{:.2f}')}, {_num(100 * same['high'], '{:.2f}')}] %"
                if same
                else "as the original's",
            ),
        ]
    if memory.get("expert_bytes") is not None:
        cards.append(
            (
                "Expert bytes",
                fmt_bytes(memory["expert_bytes"]),
                f"plan {fmt_bytes(memory.get('plan_expert_bytes'))}"
                + (" (equal)" if memory.get("bytes_match_plan") else ""),
            )
        )
    elif memory.get("plan_expert_bytes") is not None:
        cards.append(("Expert bytes (plan)", fmt_bytes(memory["plan_expert_bytes"]), "simulated run: predicted"))
    if memory.get("checkpoint_bytes") is not None:
        cards.append(
            (
                "Checkpoint on disk",
                fmt_bytes(memory["checkpoint_bytes"]),
                f"original {fmt_bytes(memory.get('original_checkpoint_bytes'))}",
            )
        )
    cards.append(
        (
            "Model in memory",
            fmt_bytes(memory.get("model_bytes")),
            f"original {fmt_bytes(memory.get('original_model_bytes'))}"
            if memory.get("original_model_bytes")
            else "parameters and buffers",
        )
    )
    return stat_cards(cards)


def _verification(record: dict[str, Any], tensors: pd.DataFrame) -> str:
    check = record.get("verification") or {}
    if not check.get("tensors"):
        return empty_note("the original model was evaluated: nothing was quantized")
    from alphaq.planning.costs import prediction_units

    label, number, units = prediction_units((record.get("source") or {}).get("error_model"))
    cards = stat_cards(
        [
            ("Measured error", _num(check.get("mean_rel_error"), "{:.5f}"), "parameter-weighted ||W-W\u0302||/||W||"),
            (label.capitalize(), _num(check.get("mean_predicted_error"), number), f"the plan's error model: {units}"),
            ("Spearman (per tensor)", _num(check.get("error_spearman"), "{:.3f}"), f"{check['tensors']} tensors"),
        ]
    )
    fig = error_figure(tensors)
    return cards + (figure_html(fig, alt="measured vs predicted error per tensor") if fig is not None else "")


def _routing(record: dict[str, Any], experts: pd.DataFrame) -> str:
    by_bits = (record.get("verification") or {}).get("routing_share_by_bits") or {}
    if experts.empty:
        return empty_note("no routed expert was quantized")
    cards = stat_cards([(f"Selections at {k} bits", f"{v:.1%}", "mean over layers") for k, v in by_bits.items()])
    fig = routing_figure(experts)
    table = table_html(
        _integer_columns(experts, ("params", "bytes", "predicted_bytes")),
        float_format="{:.4f}",
        caption="One row per routed expert (eval_experts.csv): "
        "mean width, parameter-weighted errors, bytes, routing share (quantized and original model) "
        "and mean alpha from the inspect stage.",
    )
    return cards + (figure_html(fig, alt="routing share per expert") if fig is not None else "") + table


def eval_page_html(
    record: dict[str, Any], tensors: pd.DataFrame, experts: pd.DataFrame, *, run_dir: str | Path | None = None
) -> str:
    """The eval page's HTML.

    Args:
        record: eval.json content.
        tensors: eval_tensors.csv content.
        experts: eval_experts.csv content.
        run_dir: folder whose sibling pages the nav bar links.

    Returns:
        The HTML text.
    """
    source = record.get("source") or {}
    protocol = record.get("protocol") or {}
    sections = [
        Section("Summary", _summary(record), "Standard protocol: non-overlapping windows, remainder dropped."),
        Section(
            "Plan verification",
            _verification(record, tensors),
            "Each quantized tensor's measured reconstruction error against the plan's data-free prediction.",
        ),
        Section(
            "Routing on the eval text",
            _routing(record, experts),
            "Which experts the text actually uses, by stored width (counted in the perplexity passes).",
        ),
    ]
    if not tensors.empty:
        shown = _integer_columns(
            tensors, ("layer", "expert", "bits", "group_size", "params", "bytes", "predicted_bytes")
        )
        sections.append(Section("Tensors", table_html(shown, float_format="{:.4f}"), EVAL_TENSORS_CSV))
    eval_text = record.get("eval_text") or {}
    checkpoint = record.get("checkpoint") or {}
    path = str(checkpoint.get("path") or source.get("original") or source.get("path") or "")
    provenance = {
        "model": Path(path).name if path else "",
        "model_type": checkpoint.get("model_type"),
        "path": path,
        "fingerprint": checkpoint.get("fingerprint"),
        "alphaq_version": (record.get("versions") or {}).get("alphaq"),
        "created": record.get("created"),
        "Source": f"{source.get('kind', '?')}: {source.get('path', '')}",
        "Plan fingerprint": source.get("plan_fingerprint"),
        "Eval text": eval_text.get("path"),
        "Eval text sha256": eval_text.get("sha256"),
    }
    warnings = []
    if protocol.get("max_windows") is not None:
        warnings.append(f"only the first {protocol['max_windows']} windows of the eval text were evaluated")
    if source.get("baseline_note"):
        warnings.append(source["baseline_note"])
    return render_page(
        f"alphaq eval \u2014 {provenance['model'] or source.get('kind', '')}",
        provenance,
        sections,
        warnings=warnings,
        run_dir=run_dir,
        current=EVAL_HTML,
        subtitle="Perplexity, memory and plan verification",
    )


def render_eval(run_dir: str | Path) -> Path:
    """Write ``run_dir/eval.html`` from the saved eval results.

    Args:
        run_dir: the ``--out`` folder of ``alphaq eval``.

    Returns:
        The written page's path.

    Raises:
        AlphaQError: the folder holds no eval run.
    """
    folder = Path(run_dir)
    record, tensors, experts = load_eval_run(folder)
    return write_page(folder / EVAL_HTML, eval_page_html(record, tensors, experts, run_dir=folder))


__all__ = ["error_figure", "eval_page_html", "load_eval_run", "render_eval", "routing_figure"]
