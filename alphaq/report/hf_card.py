"""``--model-card``: a Markdown section for a Hugging Face model card, from a run folder's saved artifacts.

The section (HT-SR audit summary, bit allocation with memory, evaluation table, how to reproduce) is written as
``model_card.md`` next to the quantized checkpoint (``RUN/quantized/``), or in the run folder when there is
none. Paste it into the checkpoint's ``README.md``; nothing in it is recomputed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError
from alphaq.report.page import fmt_bytes
from alphaq.report.run_summary import RunSummary, alpha_summary, compare_rows, read_run
from alphaq.runfolder import MODEL_CARD_MD, display_path

_DASH = "\u2014"


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) and math.isfinite(value) else _DASH


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _audit(run: RunSummary) -> list[str]:
    a = alpha_summary(run.experts)
    if not a:
        return []
    fit = ((run.inspect or {}).get("options") or {}).get("fit", "ww")
    flags = ", ".join(f"{k}: {v}" for k, v in a["quality"].items()) or _DASH
    return [
        "### Data-free HT-SR audit",
        "",
        f"Power-law exponent alpha of each expert matrix's eigenvalue spectrum (fit `{fit}`, no data used); "
        "lower alpha = heavier tail = better trained.",
        "",
        *_table(
            ["experts", "alpha min", "alpha median", "alpha max", "quality flags"],
            [
                [
                    a["experts"],
                    _num(a["alpha_min"], "{:.2f}"),
                    _num(a["alpha_median"], "{:.2f}"),
                    _num(a["alpha_max"], "{:.2f}"),
                    flags,
                ]
            ],
        ),
        "",
        f"Best trained experts: {', '.join(a['best'])}. Weakest: {', '.join(a['weakest'])}.",
        "",
    ]


def _allocation(run: RunSummary) -> list[str]:
    if run.plan is None:
        return []
    s, prov = run.plan.get("summary", {}), run.plan.get("provenance", {})
    options = prov.get("options", {})
    shares = s.get("param_share_by_width", {})
    layers = s.get("average_bits_by_layer", {})
    lines = [
        "### Bit allocation",
        "",
        f"Allocator `{options.get('allocator', 'alphaq')}` at budget {prov.get('budget', {}).get('given', '?')} "
        f"(granularity {options.get('granularity', 'expert')}, group size {options.get('group_size', '?')}, "
        f"quantizer {options.get('quant_method', 'rtn')}): heavier-tailed experts get more bits, under a "
        "global budget, minimising the alpha-weighted quantization error.",
        "",
        *_table(
            ["what", "value"],
            [
                ["average payload bits (routed experts)", _num(s.get("average_payload_bits"))],
                ["effective bits incl. scales/zeros", _num(s.get("effective_bits"))],
                ["share of expert weights per width", ", ".join(f"{k}-bit {v:.0%}" for k, v in shares.items())],
                [
                    "expert memory",
                    f"{fmt_bytes(s.get('expert_bytes_bf16'))} (bf16) \u2192 {fmt_bytes(s.get('expert_bytes'))}",
                ],
                [
                    "whole model",
                    f"{fmt_bytes(s.get('total_bytes_bf16'))} \u2192 {fmt_bytes(s.get('total_bytes'))} "
                    f"({_num(s.get('compression_ratio'), '{:.2f}')}x smaller)",
                ],
                ["plan fingerprint", f"`{str(run.plan.get('plan_fingerprint', ''))[:16]}`"],
            ],
        ),
        "",
    ]
    if layers:
        lines += ["Average bits per layer: " + ", ".join(f"L{k} {_num(v, '{:.2f}')}" for k, v in layers.items()), ""]
    if run.quantize is not None:
        t = run.quantize.get("totals", {})
        lines += [
            f"Quantized experts on disk: {t.get('quantized_bytes', 0):,} bytes "
            + (
                "(equal to the plan's prediction)."
                if t.get("bytes_match_plan")
                else f"(plan: {t.get('predicted_bytes', 0):,})."
            ),
            "",
        ]
    return lines


def _evaluation(run: RunSummary) -> list[str]:
    lines: list[str] = []
    e = run.eval
    if e is not None:
        base = e.get("baseline") or {}
        text = Path(str((e.get("eval_text") or {}).get("path", "?"))).name
        kld = e.get("kld") if isinstance(e.get("kld"), dict) else {}
        rows = [["original (bf16)", _num(base.get("ppl")), _DASH, _DASH, _DASH, _DASH]] if base else []
        rows.append(
            [
                e.get("source", {}).get("kind", "?"),
                _num(e.get("ppl")),
                _num(e.get("ppl_increase"), "{:+.3f}"),
                _num(kld.get("mean_kld"), "{:.5f}"),
                _num(kld.get("p99_kld"), "{:.4f}"),
                _num(100 * kld["same_top"], "{:.2f} %") if isinstance(kld.get("same_top"), float) else _DASH,
            ]
        )
        lines += [
            "### Evaluation",
            "",
            f"Perplexity on `{text}` (standard protocol: {e.get('windows', '?')} non-overlapping windows of "
            f"{e.get('context', '?')} tokens, remainder dropped); KL divergence of the next-token distributions "
            f"from the original's on the first {kld.get('windows', '?')} windows (mean, 99th percentile) and "
            "how often the most likely token is the original's.",
            "",
            *_table(["model", "perplexity", "increase", "mean KLD", "p99 KLD", "same top token"], rows),
            "",
        ]
    table = compare_rows(run.compare)
    if not table.empty:
        protocol = (run.compare or {}).get("protocol") or {}
        lines += [
            f"Allocators compared at matched budgets (`alphaq compare`, simulated quantization, "
            f"{protocol.get('windows', '?')} windows of {protocol.get('context', '?')} tokens):",
            "",
            *_table(
                list(table.columns),
                [
                    [_num(v) if isinstance(v, float) else (v if v is not None else _DASH) for v in row]
                    for row in table.itertuples(index=False)
                ],
            ),
            "",
        ]
    return lines


def _is_bundled(path: Any) -> bool:
    """Whether ``path`` is the bundled demo model (its reproduce command then needs no MODEL argument)."""
    from alphaq.runfolder import BUNDLED_MODEL_REF
    from alphaq.zoo.demo import demo_model_dir

    if not path:
        return False
    if str(path) == BUNDLED_MODEL_REF:  # how artifacts record it (alphaq.runfolder.record_path)
        return True
    recorded = Path(str(path))
    # the bundled model wherever alphaq was installed when the artifacts were made (as display_path names it)
    return recorded.parts[-3:] == ("alphaq", "data", "demo-moe") or recorded.resolve() == demo_model_dir().resolve()


def model_card_markdown(run: RunSummary) -> str:
    """The model-card section of a run.

    Args:
        run: the run's artifacts (:func:`alphaq.report.run_summary.read_run`).

    Returns:
        Markdown text.
    """
    ckpt = run.checkpoint
    model = Path(str(ckpt.get("path", "MODEL"))).name
    budget = ((run.plan or {}).get("provenance", {}).get("budget") or {}).get("given", "3.5")
    version = (run.quantize or run.inspect or {}).get("alphaq_version", "")
    target = "" if _is_bundled(ckpt.get("path")) else f"{display_path(ckpt.get('path', 'MODEL'))} "
    lines = [
        "## Quantization with alphaq",
        "",
        f"This checkpoint is `{model}` (fingerprint `{ckpt.get('fingerprint', '?')}`, "
        f"{ckpt.get('model_type', '?')}) with its routed experts quantized to mixed precision by "
        f"alphaq {version}, calibration-free: bit-widths come from the "
        "heavy-tailed self-regularization (HT-SR) metrics of the weights alone.",
        "",
        *_audit(run),
        *_allocation(run),
        *_evaluation(run),
        "### How to reproduce",
        "",
        "```bash",
        f"alphaq run {target}--budget {budget} --out alphaq-run --model-card",
        "```",
        "",
        "Load the quantized checkpoint:",
        "",
        "```python",
        "from alphaq import load_quantized",
        "",
        'model, tokenizer = load_quantized("alphaq-run/quantized")',
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run_dir: str | Path) -> Path:
    """Write ``model_card.md`` next to the run's quantized checkpoint (or into the run folder).

    Args:
        run_dir: a run folder.

    Returns:
        The written file.

    Raises:
        AlphaQError: the folder holds no plan (nothing to describe).
    """
    from alphaq.atomic import write_text

    run = read_run(run_dir)
    if run.plan is None and run.quantize is None:
        raise AlphaQError(f"{run_dir}: no plan.json or quantize.json; run `alphaq run --out {run_dir}` first")
    target = (run.quantize_dir or run.folder) / MODEL_CARD_MD
    return write_text(target, model_card_markdown(run))


__all__ = ["model_card_markdown", "write_model_card"]
