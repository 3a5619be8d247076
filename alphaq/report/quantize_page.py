"""quantize.html: what ``alphaq quantize`` wrote, read from the quantized checkpoint folder's quantize.json.

The page recomputes nothing: widths, bytes (written and predicted by the plan), reconstruction errors and
timings are shown as the quantize stage recorded them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.report.page import (
    Section,
    chip,
    empty_note,
    figure_html,
    fmt_bytes,
    fmt_count,
    fmt_seconds,
    provenance_from_manifest,
    render_page,
    stat_cards,
    table_html,
    write_page,
)
from alphaq.report.plan_sections import as_float, as_mapping, fmt_number
from alphaq.runfolder import QUANTIZE_HTML

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: Rows of the per-tensor table (largest reconstruction error first).
TOP_TENSORS = 200
#: Seed of the horizontal jitter of the error-vs-bits figure (pages are reproducible).
JITTER_SEED = 0
_TENSOR_COLUMNS = [
    "name",
    "role",
    "layer",
    "expert",
    "proj",
    "rows",
    "cols",
    "bits",
    "group_size",
    "rel_error",
    "predicted_error",
    "bytes",
    "predicted_bytes",
    "seconds",
    "shard",
]


def render_quantize(out_dir: str | Path) -> Path:
    """Write ``quantize.html`` into a quantized checkpoint folder from its ``quantize.json``.

    Args:
        out_dir: the folder ``alphaq quantize --out`` wrote.

    Returns:
        The page's path.

    Raises:
        AlphaQError: no folder, no or unreadable quantize.json, or another schema version.
    """
    folder = Path(out_dir)
    manifest = load_quantize_manifest(folder)
    return write_page(folder / QUANTIZE_HTML, quantize_page_html(manifest, run_dir=folder))


def load_quantize_manifest(folder: Path) -> dict[str, Any]:
    """Read and check ``quantize.json`` (:func:`alphaq.quantization.manifest.read_manifest`)."""
    from alphaq.quantization.manifest import read_manifest

    return read_manifest(folder)


def quantize_page_html(manifest: Mapping[str, Any], *, run_dir: str | Path | None = None) -> str:
    """The quantize page's HTML.

    Args:
        manifest: quantize.json's content.
        run_dir: folder whose sibling pages the nav bar links (None: no links).

    Returns:
        The HTML text.
    """
    tensors = tensor_frame(manifest)
    options, plan = as_mapping(manifest.get("options")), as_mapping(manifest.get("plan"))
    sections = [
        Section("Summary", _summary_html(manifest), "Method, sizes, errors and speed as recorded in quantize.json."),
        _totals_section(manifest, tensors),
        _error_section(tensors),
        _tensor_section(tensors),
        _shard_section(manifest),
    ]
    provenance = provenance_from_manifest(manifest, plan=str(plan.get("fingerprint") or ""))
    provenance["plan"] = str(plan.get("path") or "")
    model = Path(str(as_mapping(manifest.get("checkpoint")).get("path") or "checkpoint")).name
    subtitle = (
        f"Plan executed with {options.get('method', '?')} on {options.get('device', '?')} "
        f"({options.get('backend', '?')} backend) \u00b7 format {manifest.get('format', '?')}"
    )
    return render_page(
        f"alphaq quantize \u2014 {model}",
        provenance,
        sections,
        warnings=_warnings(manifest),
        run_dir=run_dir,
        current=QUANTIZE_HTML,
        subtitle=subtitle,
    )


def tensor_frame(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """One row per quantized (and split dense) matrix of quantize.json, numeric columns typed."""
    import pandas as pd

    frame = pd.DataFrame(list(manifest.get("tensors") or []))
    for column in (*_TENSOR_COLUMNS, "kind"):
        if column not in frame.columns:
            frame[column] = np.nan
    for column in ("layer", "expert", "group_size", "bits", "rows", "cols", "bytes", "predicted_bytes"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in ("rel_error", "predicted_error", "seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


# -- sections ----------------------------------------------------------------------------------------


def _summary_html(manifest: Mapping[str, Any]) -> str:
    totals, timing = as_mapping(manifest.get("totals")), as_mapping(manifest.get("timing"))
    options, plan = as_mapping(manifest.get("options")), as_mapping(manifest.get("plan"))
    written, predicted = as_float(totals.get("quantized_bytes")), as_float(totals.get("predicted_bytes"))
    match = totals.get("bytes_match_plan")
    output, source = as_float(totals.get("output_bytes")), as_float(totals.get("source_bytes"))
    shards = list(manifest.get("shards") or [])
    resumed = sum(1 for s in shards if s.get("resumed"))
    from alphaq.planning.costs import prediction_units

    plan_error_model = plan.get("error_model")
    cards = [
        (
            "Method",
            str(options.get("method") or "?"),
            f"{options.get('backend', '?')} on {options.get('device', '?')}; plan error model used "
            f"{plan.get('quant_method') or '?'}",
        ),
        (
            "Tensors quantized",
            fmt_count(totals.get("quantized_tensors")),
            f"{fmt_count(totals.get('copied_tensors'))} copied unchanged, {fmt_count(totals.get('dense_tensors'))} "
            "split experts kept at 16 bits",
        ),
        (
            "Quantized bytes",
            fmt_bytes(written),
            ("= plan to the byte" if match else f"plan predicts {fmt_bytes(predicted)}")
            + f" ({fmt_count(written)} B: payload + fp16 scales and zeros)",
        ),
        (
            "Average payload bits",
            fmt_number(totals.get("average_payload_bits"), "{:.3f}"),
            "parameter-weighted over the quantized matrices",
        ),
        (
            "Checkpoint size",
            fmt_bytes(output),
            f"source {fmt_bytes(source)} \u00b7 {fmt_number(source / output if output > 0 else math.nan, '{:.2f}')}"
            "\u00d7 smaller",
        ),
        (
            "Reconstruction error",
            fmt_number(totals.get("mean_rel_error"), "{:.4g}"),
            f"parameter-weighted ||W \u2212 \u0174||/||W||; plan {prediction_units(plan_error_model)[0]} "
            f"{fmt_number(totals.get('mean_predicted_error'), '{:.4g}')}",
        ),
        (
            "Time",
            fmt_seconds(timing.get("wall_seconds")),
            f"quantizing {fmt_seconds(timing.get('quantize_seconds'))}"
            + (f"; {resumed} of {len(shards)} shards resumed" if resumed else ""),
        ),
        (
            "Throughput",
            fmt_number(timing.get("throughput_mb_s"), "{:,.1f} MB/s"),
            f"of source weights; quantizer alone {fmt_number(timing.get('quantize_throughput_mb_s'), '{:,.1f} MB/s')}",
        ),
    ]
    out = [stat_cards(cards)]
    out.append(
        "<p>"
        + (chip("bytes = plan", "q-ok") if match else chip("bytes differ from the plan", "q-bad"))
        + f" {chip(str(len(shards)) + ' shard' + ('' if len(shards) == 1 else 's'))}"
        + (f" {chip(str(resumed) + ' resumed', 'q-warn')}" if resumed else "")
        + "</p>"
    )
    return "".join(out)


def _totals_section(manifest: Mapping[str, Any], tensors: pd.DataFrame) -> Section:
    import pandas as pd

    totals = as_mapping(manifest.get("totals"))
    quantized = tensors[tensors["kind"] == "quantized"]
    rows = []
    for role, group in quantized.groupby("role", sort=True):
        rows.append(
            {
                "part": f"quantized: {role}",
                "tensors": len(group),
                "written": int(group["bytes"].sum()),
                "plan": int(group["predicted_bytes"].fillna(0).sum()),
            }
        )
    dense = tensors[tensors["kind"] == "dense"]
    if len(dense):
        rows.append(
            {
                "part": "split experts kept at 16 bits",
                "tensors": len(dense),
                "written": int(dense["bytes"].sum()),
                "plan": int(dense["predicted_bytes"].fillna(0).sum()),
            }
        )
    rows.append(
        {
            "part": "copied unchanged (incl. norms, biases)",
            "tensors": int(totals.get("copied_tensors") or 0),
            "written": int(totals.get("copied_bytes") or 0),
            "plan": None,
        }
    )
    rows.append(
        {
            "part": "checkpoint (tensor data)",
            "tensors": None,
            "written": int(totals.get("output_bytes") or 0),
            "plan": totals.get("plan_total_bytes"),
        }
    )
    table = pd.DataFrame(rows)
    table["plan"] = pd.to_numeric(table["plan"], errors="coerce").astype("Int64")
    table["tensors"] = pd.to_numeric(table["tensors"], errors="coerce").astype("Int64")
    table["difference"] = (table["written"] - table["plan"]).astype("Int64")
    table["size"] = [fmt_bytes(v) for v in table["written"]]
    html = table_html(
        table[["part", "tensors", "size", "written", "plan", "difference"]],
        sortable=False,
        headers={"written": "written bytes", "plan": "plan bytes"},
        caption="Quantized matrices must match the plan to the byte. The plan counts matrices only "
        "(16-bit ones as bf16); the checkpoint also holds 1-D tensors and keeps the source "
        "dtype of copied tensors.",
    )
    return Section("Totals vs plan", html, "Bytes written against the plan's prediction, by part of the model.")


def _error_section(tensors: pd.DataFrame) -> Section:
    title, note = (
        "Error vs bits",
        (
            "Relative reconstruction error of each quantized matrix (full matrix) at its "
            "width; right: against the plan's predicted error."
        ),
    )
    quantized = tensors[(tensors["kind"] == "quantized") & tensors["rel_error"].notna()]
    fig = error_figure(quantized)
    if fig is None:
        return Section(title, empty_note("No quantized matrix with a recorded error."), note)
    return Section(title, figure_html(fig, alt="reconstruction error against bits"), note)


def error_figure(tensors: pd.DataFrame) -> Figure | None:
    """Error against width (jittered strip, median marked), and measured against predicted error.

    Args:
        tensors: quantized rows with ``bits``, ``rel_error`` and ``predicted_error``.

    Returns:
        The Figure, or None for no rows.
    """
    from alphaq.report.figures import _figure, _style_axes
    from alphaq.report.plan_figures import width_color

    if tensors.empty:
        return None
    bits = tensors["bits"].to_numpy(dtype=float)
    error = tensors["rel_error"].to_numpy(dtype=float)
    predicted = tensors["predicted_error"].to_numpy(dtype=float)
    has_predicted = bool(np.isfinite(predicted).any())
    fig = _figure(9.0 if has_predicted else 6.0, 3.6)
    ax = fig.add_subplot(1, 2 if has_predicted else 1, 1)
    jitter = np.random.default_rng(JITTER_SEED).uniform(-0.18, 0.18, bits.size)
    colors = [width_color(b) for b in bits]
    dots = ax.scatter(bits + jitter, error, c=colors, s=12 if bits.size < 2000 else 4, alpha=0.8, linewidths=0)
    dots.set_rasterized(bits.size > 400)
    for width in np.unique(bits):
        ax.plot(
            [width],
            [float(np.median(error[bits == width]))],
            marker="D",
            markersize=7,
            color="#1d2330",
            markerfacecolor="white",
            markeredgewidth=1.4,
            linestyle="none",
            zorder=5,
        )
    ax.set_xticks(np.unique(bits))
    ax.set_xlim(float(bits.min()) - 0.6, float(bits.max()) + 0.6)
    if _wide(error):
        ax.set_yscale("log")
    ax.set_xlabel("bits")
    ax.set_ylabel("relative error ||W \u2212 \u0174|| / ||W||")
    _style_axes(ax)
    if has_predicted:
        ok = np.isfinite(predicted)
        right = fig.add_subplot(1, 2, 2)
        pts = right.scatter(
            predicted[ok], error[ok], c=[c for c, k in zip(colors, ok) if k], s=12, alpha=0.8, linewidths=0
        )
        pts.set_rasterized(int(ok.sum()) > 400)
        lo = float(min(predicted[ok].min(), error[ok].min()))
        hi = float(max(predicted[ok].max(), error[ok].max()))
        right.plot([lo, hi], [lo, hi], color="#9aa3b0", linewidth=1, linestyle="--")
        if lo > 0 and _wide(np.concatenate([predicted[ok], error[ok]])):
            right.set_xscale("log")
            right.set_yscale("log")
        right.set_xlabel("plan's predicted error")
        right.set_ylabel("measured error")
        _style_axes(right)
    fig.tight_layout()
    return fig


def _wide(values: np.ndarray) -> bool:
    """Log axes only for positive values spanning more than a decade."""
    finite = values[np.isfinite(values)]
    return bool(finite.size) and float(finite.min()) > 0 and float(finite.max()) / float(finite.min()) > 10


def _tensor_section(tensors: pd.DataFrame) -> Section:
    title = "Per-tensor results"
    note = "Quantized matrices (and split experts kept at 16 bits), largest reconstruction error first."
    if tensors.empty:
        return Section(title, empty_note("The plan quantized no matrix: every tensor was copied."), note)
    ordered = tensors.sort_values(["rel_error", "name"], ascending=[False, True], kind="stable", na_position="last")
    shown = ordered.head(TOP_TENSORS)[_TENSOR_COLUMNS]
    caption = (
        f"Top {TOP_TENSORS} of {len(tensors)} by error; quantize.json lists them all."
        if len(tensors) > TOP_TENSORS
        else ""
    )
    html = table_html(
        shown,
        max_rows=TOP_TENSORS,
        float_format="{:.4g}",
        caption=caption,
        headers={
            "group_size": "group",
            "rel_error": "error",
            "predicted_error": "predicted error",
            "predicted_bytes": "plan bytes",
            "seconds": "s",
        },
    )
    return Section(title, html, note)


def _shard_section(manifest: Mapping[str, Any]) -> Section:
    import pandas as pd

    shards = pd.DataFrame(
        list(manifest.get("shards") or []), columns=["name", "source_file", "tensors", "bytes", "resumed", "sha256"]
    )
    shards["sha256"] = shards["sha256"].astype(str).str[:16]
    files = list(manifest.get("files") or [])
    html = table_html(shards, sortable=False, headers={"source_file": "from source shard", "sha256": "sha256 (16)"})
    html += ("<p>Also copied: " + ", ".join(chip(f) for f in files) + "</p>") if files else ""
    return Section("Shards", html, "One output shard per source shard (split above the maximum shard size).")


def _warnings(manifest: Mapping[str, Any]) -> list[str]:
    lines = [str(w) for w in manifest.get("warnings") or []]
    if as_mapping(manifest.get("totals")).get("bytes_match_plan") is False:
        lines.append(
            "the quantized matrices do not take the plan's predicted bytes; re-run `alphaq quantize` with "
            "this alphaq version"
        )
    return lines
