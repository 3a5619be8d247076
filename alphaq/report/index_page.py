"""index.html: the overview of a run folder, linking each stage's page, from the saved artifacts only."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError
from alphaq.report.page import (
    PAGE_ARTIFACTS,
    Section,
    empty_note,
    fmt_bytes,
    render_page,
    stat_cards,
    table_html,
    write_page,
)
from alphaq.report.run_summary import RunSummary, alpha_summary, compare_rows, read_run
from alphaq.runfolder import (
    COMPARE_DIR,
    COMPARE_HTML,
    EVAL_HTML,
    INDEX_HTML,
    INSPECT_HTML,
    MODEL_CARD_MD,
    PLAN_HTML,
    QUANTIZE_HTML,
)

_DASH = "\u2014"


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and math.isfinite(value) else _DASH


def _rel(run: RunSummary, folder: Path | None, name: str) -> str | None:
    if folder is None or not ((folder / name).is_file() or (folder / PAGE_ARTIFACTS.get(name, name)).is_file()):
        return None
    return (folder / name).relative_to(run.folder).as_posix()


def _stage_rows(run: RunSummary) -> list[tuple[str, str | None, str]]:
    """(stage, page href or None, headline) for each stage present."""
    rows: list[tuple[str, str | None, str]] = []
    if run.inspect is not None:
        a = alpha_summary(run.experts)
        rows.append(
            (
                "inspect",
                _rel(run, run.folder, INSPECT_HTML),
                f"{a.get('experts', 0)} experts, alpha {_num(a.get('alpha_min'), '{:.2f}')} / "
                f"{_num(a.get('alpha_median'), '{:.2f}')} / {_num(a.get('alpha_max'), '{:.2f}')} (min/median/max)"
                if a
                else "spectral metrics per matrix",
            )
        )
    if run.plan is not None:
        s, budget = run.plan.get("summary", {}), run.plan.get("provenance", {}).get("budget", {})
        rows.append(
            (
                "plan",
                _rel(run, run.folder, PLAN_HTML),
                f"budget {budget.get('given', '?')}: {_num(s.get('average_payload_bits'))} payload bits, experts "
                f"{fmt_bytes(s.get('expert_bytes_bf16'))} \u2192 {fmt_bytes(s.get('expert_bytes'))}",
            )
        )
    if run.quantize is not None:
        t = run.quantize.get("totals", {})
        rows.append(
            (
                "quantize",
                _rel(run, run.quantize_dir, QUANTIZE_HTML),
                f"{t.get('quantized_tensors', 0)} tensors, {fmt_bytes(t.get('source_bytes'))} \u2192 "
                f"{fmt_bytes(t.get('output_bytes'))}; bytes "
                + ("equal the plan" if t.get("bytes_match_plan") else "differ from the plan"),
            )
        )
    if run.eval is not None:
        e = run.eval
        base = e.get("baseline") or {}
        rows.append(
            (
                "eval",
                _rel(run, run.folder, EVAL_HTML),
                f"perplexity {_num(e.get('ppl'))}"
                + (f" vs original {_num(base.get('ppl'))} ({_num(e.get('ppl_increase'), '{:+.3f}')})" if base else ""),
            )
        )
    if run.compare is not None:
        rows.append(
            (
                COMPARE_DIR,
                _rel(run, run.compare_dir, COMPARE_HTML),
                f"{len(run.compare.get('rows') or []) - 1} plans vs original perplexity "
                f"{_num(run.compare.get('original_ppl'))}",
            )
        )
    return rows


def _pipeline_html(run: RunSummary) -> str:
    out = [
        '<div class="tablewrap"><table class="data"><thead><tr><th>stage</th><th>page</th><th>result</th>'
        "</tr></thead><tbody>"
    ]
    for stage, href, headline in _stage_rows(run):
        link = f'<a href="{html.escape(href)}">{html.escape(href)}</a>' if href else _DASH
        out.append(f"<tr><td>{html.escape(stage)}</td><td>{link}</td><td>{html.escape(headline)}</td></tr>")
    out.append("</tbody></table></div>")
    for name in (MODEL_CARD_MD,):
        href = _rel(run, run.quantize_dir, name) or _rel(run, run.folder, name)
        if href:
            out.append(f'<p>Model-card section: <a href="{html.escape(href)}">{html.escape(href)}</a></p>')
    return "".join(out)


def _memory_cards(run: RunSummary) -> str:
    cards = []
    if run.plan is not None:
        s = run.plan.get("summary", {})
        cards += [
            ("Average payload bits", _num(s.get("average_payload_bits")), "routed experts"),
            ("Effective bits", _num(s.get("effective_bits")), "incl. scales and zeros"),
            (
                "Experts",
                f"{fmt_bytes(s.get('expert_bytes_bf16'))} \u2192 {fmt_bytes(s.get('expert_bytes'))}",
                f"{_num(s.get('expert_compression_ratio'), '{:.2f}')}x smaller",
            ),
            (
                "Whole model",
                f"{fmt_bytes(s.get('total_bytes_bf16'))} \u2192 {fmt_bytes(s.get('total_bytes'))}",
                f"{_num(s.get('compression_ratio'), '{:.2f}')}x smaller",
            ),
        ]
    if run.eval is not None:
        e, base = run.eval, run.eval.get("baseline") or {}
        cards += [
            ("Perplexity", _num(e.get("ppl")), f"{e.get('source', {}).get('kind', '')} model"),
            ("Original perplexity", _num(base.get("ppl")), f"{e.get('windows', '?')} windows"),
            ("Increase", _num(e.get("ppl_increase"), "{:+.3f}"), "same windows"),
        ]
    return stat_cards(cards) if cards else empty_note("no plan or evaluation in this run")


def index_page_html(run: RunSummary) -> str:
    """The overview page's HTML for a run folder."""
    a = alpha_summary(run.experts)
    audit = (
        stat_cards(
            [
                ("Experts", a.get("experts", _DASH), f"{a.get('fitted', 0)} fitted"),
                (
                    "Alpha min / median / max",
                    f"{_num(a.get('alpha_min'), '{:.2f}')} / "
                    f"{_num(a.get('alpha_median'), '{:.2f}')} / {_num(a.get('alpha_max'), '{:.2f}')}",
                    "mean over each expert's matrices",
                ),
                (
                    "Quality flags",
                    ", ".join(f"{k}: {v}" for k, v in a.get("quality", {}).items()) or _DASH,
                    "robust z of alpha within the layer",
                ),
                ("Best trained", ", ".join(a.get("best", [])) or _DASH, "lowest alpha"),
            ]
        )
        if a
        else empty_note("no inspect stage in this run")
    )
    sections = [
        Section("Pipeline", _pipeline_html(run), "Each stage's own page has the details."),
        Section("Data-free audit", audit),
        Section("Memory and quality", _memory_cards(run)),
    ]
    table = compare_rows(run.compare)
    if not table.empty:
        sections.append(
            Section(
                "Allocator comparison",
                table_html(table, float_format="{:.3f}"),
                "Perplexity per allocator and budget (compare.html has the curves).",
            )
        )
    ckpt = run.checkpoint
    provenance = {
        "model": Path(str(ckpt.get("path", ""))).name,
        "model_type": ckpt.get("model_type"),
        "path": ckpt.get("path"),
        "fingerprint": ckpt.get("fingerprint"),
        "alphaq_version": (run.inspect or run.quantize or {}).get("alphaq_version"),
        "created": (run.eval or run.quantize or run.inspect or {}).get("created"),
    }
    warnings = [f"unreadable artifact: {name}" for name in run.unreadable]
    return render_page(
        f"alphaq run \u2014 {provenance['model'] or run.folder.name}",
        provenance,
        sections,
        warnings=warnings,
        run_dir=run.folder,
        current=INDEX_HTML,
        subtitle="inspect \u2192 plan \u2192 quantize \u2192 eval",
    )


def render_index(run_dir: str | Path) -> Path:
    """Write ``run_dir/index.html`` from the run's saved artifacts.

    Args:
        run_dir: a run folder.

    Returns:
        The page's path.

    Raises:
        AlphaQError: the folder holds no stage artifact.
    """
    run = read_run(run_dir)
    if not run.stages:
        raise AlphaQError(f"{run_dir}: no stage artifacts; run `alphaq run --out {run_dir}` first")
    return write_page(run.folder / INDEX_HTML, index_page_html(run))


__all__ = ["index_page_html", "render_index"]
