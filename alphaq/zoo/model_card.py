"""Measure the bundled demo model and write its model card (``README.md``) and ``card.json``.

Measurements:

* perplexity with the standard non-overlapping-window protocol: tokenize the whole text, cut it
  into windows of the model's context length, average the next-token NLL over every predicted
  token, ``ppl = exp(mean NLL)``;
* routing load: the share of top-k assignments each expert receives, per layer, on WikiText-2 test;
* per-expert HT-SR alpha: eigenvalues (squared singular values, float64) of each expert's
  ``w1``/``w2``/``w3`` from the saved safetensors, fitted with a weightwatcher-style power law.

Run ``python -m alphaq.zoo.model_card [MODEL_DIR]`` to re-measure a checkpoint and rewrite its
card (the ``training`` section of an existing ``card.json`` is kept).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.zoo.card_markdown import render_card

if TYPE_CHECKING:
    import numpy as np

CARD_JSON = "card.json"
CARD_MD = "README.md"
PREFIX_WINDOWS = 64  # the quick perplexity the tests re-measure
WW_EVALS_THRESH = 1e-5  # weightwatcher 0.7.7 drops eigenvalues at or below this (CPU build)


def fit_alpha(eigenvalues: np.ndarray) -> tuple[float, str]:
    """Power-law alpha of an eigenvalue spectrum, weightwatcher style (xmin by minimal KS distance), with
    :func:`alphaq.diagnostics.powerlaw_fit.fit_ww` (weightwatcher 0.7.7's ``WWFit``, same alpha).

    Args:
        eigenvalues: eigenvalues of ``W^T W`` (float64).

    Returns:
        ``(alpha, fitter name)``.
    """
    import numpy as np

    from alphaq.diagnostics.powerlaw_fit import fit_ww

    evals = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    evals = evals[evals > WW_EVALS_THRESH]
    return float(fit_ww(evals).alpha), "alphaq.diagnostics.powerlaw_fit.fit_ww"


def expert_alphas(model_dir: Path, num_layers: int, num_experts: int) -> tuple[dict[str, Any], str]:
    """Fit alpha for every expert matrix stored in the checkpoint (Mixtral legacy layout).

    Args:
        model_dir: checkpoint folder with ``model.safetensors``.
        num_layers: decoder layers.
        num_experts: experts per layer.

    Returns:
        ``({"w1"|"w2"|"w3"|"mean": [[alpha per expert] per layer]}, fitter name)``.
    """
    import torch
    from safetensors import safe_open

    alphas: dict[str, list[list[float]]] = {"w1": [], "w2": [], "w3": []}
    fitter = ""
    files = sorted(model_dir.glob("*.safetensors"))
    handles = [safe_open(str(f), "pt") for f in files]
    keys = {k: h for h in handles for k in h.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    for layer in range(num_layers):
        for name in ("w1", "w2", "w3"):
            row = []
            for expert in range(num_experts):
                key = f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{name}.weight"
                weight = keys[key].get_tensor(key).to(torch.float64)  # [out, in]
                evals = torch.linalg.svdvals(weight).square().numpy()
                alpha, fitter = fit_alpha(evals)
                row.append(alpha)
            alphas[name].append(row)
    alphas["mean"] = [
        [statistics.fmean(alphas[n][layer][e] for n in ("w1", "w2", "w3")) for e in range(num_experts)]
        for layer in range(num_layers)
    ]
    return alphas, fitter


def spread(values: Sequence[float]) -> dict[str, float]:
    """Min / median / max / std of a list of numbers."""
    vals = [float(v) for v in values]
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "std": statistics.pstdev(vals)}


def measure(model_dir: Path, *, texts: dict[str, str], batch_size: int = 8) -> dict[str, Any]:
    """Measure a saved checkpoint: parameters, perplexities, routing shares and expert alphas.

    Args:
        model_dir: the saved checkpoint folder (reloaded here in float32, as users see it).
        texts: ``{"wikitext2_test": ..., "shakespeare_heldout": ...}``.
        batch_size: windows per forward pass.

    Returns:
        The ``card.json`` measurement sections.
    """
    from alphaq.evaluation.perplexity import perplexity, perplexity_and_routing
    from alphaq.load.model import load_model, tokenize_text

    model, tokenizer = load_model(model_dir)
    cfg = model.config
    context = int(cfg.max_position_embeddings)
    layers, experts, top_k = cfg.num_hidden_layers, cfg.num_local_experts, cfg.num_experts_per_tok
    total = sum(p.numel() for p in model.parameters())
    per_expert = 3 * cfg.hidden_size * cfg.intermediate_size
    active = total - layers * (experts - top_k) * per_expert
    result: dict[str, Any] = {
        "architecture": {
            "model_type": cfg.model_type,
            "layers": layers,
            "experts": experts,
            "top_k": top_k,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "heads": cfg.num_attention_heads,
            "kv_heads": cfg.num_key_value_heads,
            "context": context,
            "vocab_size": cfg.vocab_size,
            "tied_embeddings": bool(cfg.tie_word_embeddings),
        },
        "parameters": {"total": int(total), "active_per_token": int(active), "per_expert": int(per_expert)},
        "perplexity": {},
    }
    for name, text in texts.items():
        ids = tokenize_text(tokenizer, text)
        full, routing = perplexity_and_routing(model, ids, context, batch_size=batch_size)
        prefix = perplexity(model, ids, context, batch_size=batch_size, max_windows=PREFIX_WINDOWS)
        result["perplexity"][name] = {
            "ppl": full.ppl,
            "nll": full.nll,
            "tokens": full.tokens,
            "windows": full.windows,
            "dropped_tokens": full.dropped_tokens,
            "protocol": "standard: non-overlapping windows of the context, remainder dropped",
            f"ppl_first_{PREFIX_WINDOWS}_windows": prefix.ppl,
            "prefix_windows": PREFIX_WINDOWS,
        }
        if name == "wikitext2_test" and routing is not None:
            shares = [[float(c) / max(int(sum(row)), 1) for c in row] for row in routing.counts.tolist()]
            result["routing"] = {
                "text": name,
                "shares": shares,
                "spread": spread([s for row in shares for s in row]),
                "per_layer": [spread(row) for row in shares],
                "uniform_share": 1.0 / experts,
            }
    alphas, fitter = expert_alphas(model_dir, layers, experts)
    flat = [a for n in ("w1", "w2", "w3") for row in alphas[n] for a in row]
    result["alpha"] = {
        "fitter": fitter,
        "eigenvalues": "squared singular values of the bf16 weight in float64 (torch.linalg.svdvals)",
        "per_matrix": {n: alphas[n] for n in ("w1", "w2", "w3")},
        "per_expert_mean": alphas["mean"],
        "spread_all_matrices": spread(flat),
        "spread_by_kind": {n: spread([a for row in alphas[n] for a in row]) for n in ("w1", "w2", "w3")},
        "spread_expert_mean": spread([a for row in alphas["mean"] for a in row]),
    }
    if "routing" in result:
        from scipy.stats import spearmanr

        shares = [s for row in result["routing"]["shares"] for s in row]
        means = [a for row in alphas["mean"] for a in row]
        result["alpha"]["spearman_vs_routing_share"] = float(spearmanr(shares, means).statistic)
    return result


def held_out_texts() -> dict[str, str]:
    """The held-out texts the card reports: WikiText-2 test and the last 10 % of Shakespeare."""
    from alphaq.zoo.train_demo import load_corpora

    corpora = load_corpora()
    return {"wikitext2_test": corpora.wikitext2_test, "shakespeare_heldout": corpora.shakespeare_heldout}


def write_demo_card(model_dir: Path, training: dict[str, Any]) -> Path:
    """Measure the checkpoint and write ``card.json`` and ``README.md`` into it.

    Args:
        model_dir: the saved checkpoint folder.
        training: the training summary (recipe, command, time, machine, ...).

    Returns:
        The path of ``README.md``.
    """
    from alphaq.atomic import write_json, write_text

    card = {"name": model_dir.name, "training": training, **measure(model_dir, texts=held_out_texts())}
    card["sensitivity"] = measure_sensitivity(model_dir)
    write_json(model_dir / CARD_JSON, card)
    return write_text(model_dir / CARD_MD, render_card(card))


#: Uniform budgets of the card's sensitivity table (average payload bits, rtn, group 128).
SENSITIVITY_BUDGETS = ("2", "2.5", "3")


def measure_sensitivity(model_dir: Path) -> dict[str, Any]:
    """How much uniform quantization hurts the model: ``alphaq compare`` with the uniform allocator at 2, 2.5 and
    3 bits on the whole of WikiText-2 test, each increase with its paired-bootstrap 95 % interval.

    Args:
        model_dir: the checkpoint folder.

    Returns:
        ``{"text", "windows", "original_ppl", "rows": [{"budget", "ppl", "increase", "increase_pct", "ci"}]}``.
    """
    import tempfile

    from alphaq.evaluation.compare import run_compare
    from alphaq.evaluation.options import CompareConfig

    with tempfile.TemporaryDirectory(prefix="alphaq-card-") as tmp:
        config = CompareConfig(budgets=SENSITIVITY_BUDGETS, allocators=("uniform",), seeds=(0,))
        table = run_compare(model_dir, config, Path(tmp) / "compare")
    original = table[table["entry"] == "original"].iloc[0]
    rows = [
        {
            "budget": str(r["budget"]),
            "ppl": float(r["ppl"]),
            "increase": float(r["ppl_increase"]),
            "increase_pct": 100 * float(r["ppl_increase"]) / float(original["ppl"]),
            "ci": [float(r["ci_low"]), float(r["ci_high"])],
        }
        for _, r in table[table["entry"] == "uniform"].iterrows()
    ]
    return {
        "text": "wikitext-2/test.txt",
        "windows": int(original["windows"]),
        "method": "rtn, group 128",
        "original_ppl": float(original["ppl"]),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    """Re-measure a checkpoint and rewrite its card (keeps the ``training`` section of card.json)."""
    import json

    from alphaq.zoo.demo import demo_model_dir

    parser = argparse.ArgumentParser(prog="python -m alphaq.zoo.model_card", description=main.__doc__)
    parser.add_argument("model_dir", nargs="?", default=str(demo_model_dir()))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render-only", action="store_true", help="rewrite README.md from card.json")
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    card = json.loads((model_dir / CARD_JSON).read_text(encoding="utf-8"))
    if args.render_only:
        from alphaq.atomic import write_text

        print(f"wrote {write_text(model_dir / CARD_MD, render_card(card))}")
        return
    import torch

    torch.set_num_threads(args.threads)
    print(f"wrote {write_demo_card(model_dir, card['training'])}")


if __name__ == "__main__":
    main()
