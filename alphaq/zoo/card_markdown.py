"""The demo model's card as Markdown: :func:`render_card` turns a saved ``card.json`` into ``README.md``.

Pure rendering (no measurement, no file access): :mod:`alphaq.zoo.model_card` measures the checkpoint, saves
``card.json`` and writes what this returns; ``python -m alphaq.zoo.model_card --render-only`` re-renders it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render_card(card: dict[str, Any]) -> str:
    """Render ``card.json`` as the model card's Markdown.

    Args:
        card: the parsed ``card.json`` (architecture, parameters, perplexity, training, routing, alpha, and
            optionally sensitivity).

    Returns:
        The README.md text.
    """
    arch, params, ppl = card["architecture"], card["parameters"], card["perplexity"]
    training, routing, alpha = card["training"], card["routing"], card["alpha"]
    cfg = training["config"]
    wiki, shake = ppl["wikitext2_test"], ppl["shakespeare_heldout"]
    minutes = training["train_seconds"] / 60
    out = [
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        "tags: [mixtral, moe, demo, alphaq]",
        "---",
        "",
        "# alphaq demo-moe",
        "",
        "A small **Mixtral-layout Mixture-of-Experts language model trained on real text**, bundled with",
        "`alphaq` as the default model of every command. It exists so that HT-SR diagnostics have",
        "something meaningful to look at: its experts were trained (not random), differ in routing load",
        "and in spectral shape (alpha). It is a toy for testing tools, not a useful language model.",
        "",
        "## Architecture",
        "",
        f"`MixtralForCausalLM`: {arch['layers']} layers, {arch['experts']} experts per layer, top-{arch['top_k']}",
        f"routing, hidden {arch['hidden_size']}, expert intermediate {arch['intermediate_size']} (SwiGLU w1/w3/w2),",
        f"{arch['heads']} attention heads / {arch['kv_heads']} KV heads, context {arch['context']}, vocabulary",
        f"{arch['vocab_size']} (byte-level BPE), tied input/output embeddings. Weights are stored in bfloat16",
        "safetensors with the per-expert layout `model.layers.{l}.block_sparse_moe.experts.{e}.w1/w2/w3.weight`.",
        "",
        f"* parameters: **{params['total']:,}** total, **{params['active_per_token']:,}** active per token",
        f"  ({params['per_expert']:,} per expert).",
        "",
        "## Training",
        "",
        f"* data: {', '.join('`' + f + '`' for f in training['train_files'])}",
        f"  ({training['train_tokens']:,} tokens); held out: `wikitext-2/test.txt` and Tiny Shakespeare from",
        f"  character {training['shakespeare_split_char']:,} on (the last 10 %).",
        f"* tokenizer: byte-level BPE (`tokenizers`), vocabulary {cfg['vocab_size']}, special tokens",
        "  `<|endoftext|>` (bos/eos/unk) and `<|pad|>`, trained on the training text only.",
        f"* optimiser: AdamW (betas 0.9/0.95, weight decay {cfg['weight_decay']} on matrices), peak lr",
        f"  {cfg['lr']}, {cfg['warmup_steps']} warmup steps then cosine to {cfg['min_lr_ratio']} x peak over",
        f"  {cfg['max_steps']} steps; batch {cfg['batch_size']} x {cfg['context']} tokens of randomly sampled",
        f"  windows; gradient clip {cfg['grad_clip']}; init std {cfg['init_std']}; router aux",
        f"  (load-balancing) loss coefficient {cfg['router_aux_loss_coef']}; seed {cfg['seed']}.",
        f"* held-out loss every {cfg['eval_every']} steps on the first {cfg['eval_windows']} windows of each",
        f"  held-out text; the best checkpoint is kept; patience {cfg['patience']} evaluations.",
        f"* ran {training['steps']} steps ({training['tokens_seen']:,} tokens), kept step {training['best_step']},",
        f"  stopped by `{training['stopped_by']}`; training took **{minutes:.1f} min**"
        f" ({training['total_seconds'] / 60:.1f} min with tokenizer and data preparation) on",
        f"  {training['machine']}.",
        f"* versions: {', '.join(f'{k} {v}' for k, v in training['versions'].items())}.",
        "",
        "Reproduce (writes this folder; data from `$ALPHAQ_DATA_DIR` or `../shared/data`):",
        "",
        "```bash",
        training["command"],
        "python -m alphaq.zoo.model_card   # re-measure and rewrite this card only",
        "```",
        "",
        "`training_log.jsonl` holds the loss curve (train loss every few steps, held-out evaluations).",
        "",
        *(
            ["Notes on the recipe:", "", *[f"* {note}" for note in training["notes"]], ""]
            if training.get("notes")
            else []
        ),
        "## Held-out perplexity",
        "",
        f"Non-overlapping windows of {arch['context']} tokens over the whole tokenized text, mean next-token",
        "NLL over every predicted token, ppl = exp(NLL); measured on this checkpoint reloaded in float32.",
        "",
        _fmt_table(
            ["text", "tokens", "windows", "ppl", f"ppl, first {wiki['prefix_windows']} windows"],
            [
                [
                    "WikiText-2 test",
                    f"{wiki['tokens']:,}",
                    wiki["windows"],
                    f"{wiki['ppl']:.2f}",
                    f"{wiki['ppl_first_{}_windows'.format(wiki['prefix_windows'])]:.2f}",
                ],
                [
                    "Tiny Shakespeare, last 10 %",
                    f"{shake['tokens']:,}",
                    shake["windows"],
                    f"{shake['ppl']:.2f}",
                    f"{shake['ppl_first_{}_windows'.format(shake['prefix_windows'])]:.2f}",
                ],
            ],
        ),
        "",
        "Perplexities are per BPE token of this 4096-token vocabulary; they are not comparable with",
        "word-level or other-tokenizer numbers.",
        "",
        *_sensitivity_lines(card),
        "## Routing load",
        "",
        f"Share of the top-{arch['top_k']} assignments each expert receives on WikiText-2 test (each row sums",
        f"to 1; uniform is {routing['uniform_share']:.3f}): {_spread_line(routing['spread'], '.3f')}.",
        "",
        _matrix_table(routing["shares"], ".3f"),
        "",
        "## Expert alphas (HT-SR)",
        "",
        "Power-law exponent alpha of the eigenvalue spectrum (squared singular values, float64) of each",
        f"expert matrix, fitted with {alpha['fitter']} (xmin chosen by minimal KS distance).",
        "",
        f"* all {3 * arch['layers'] * arch['experts']} expert matrices: {_spread_line(alpha['spread_all_matrices'], '.2f')}",
        *[f"* {kind}: {_spread_line(s, '.2f')}" for kind, s in alpha["spread_by_kind"].items()],
        f"* per-expert mean of w1/w2/w3: {_spread_line(alpha['spread_expert_mean'], '.2f')}",
        *(
            [
                f"* Spearman correlation of per-expert mean alpha with routing share on WikiText-2 test: "
                f"{alpha['spearman_vs_routing_share']:+.2f} (rarely used experts are less trained and keep"
                " larger alphas)."
            ]
            if "spearman_vs_routing_share" in alpha
            else []
        ),
        "",
        "Per-expert mean alpha:",
        "",
        _matrix_table(alpha["per_expert_mean"], ".2f"),
        "",
        *[
            line
            for kind in ("w1", "w2", "w3")
            for line in (f"alpha of {kind}:", "", _matrix_table(alpha["per_matrix"][kind], ".2f"), "")
        ],
        "## Licence and data",
        "",
        "Weights: Apache-2.0 (as alphaq). Training text: WikiText-2 (CC BY-SA 3.0), Project Gutenberg",
        "books and Tiny Shakespeare (public domain).",
        "",
    ]
    return "\n".join(out)


def _sensitivity_lines(card: dict[str, Any]) -> list[str]:
    sens = card.get("sensitivity")
    if not sens:
        return []
    return [
        "## Sensitivity to quantization",
        "",
        f"Uniform round-to-nearest quantization of every routed expert ({sens['method']}, simulated in float32),",
        f"perplexity on all {sens['windows']} windows of WikiText-2 test (original {sens['original_ppl']:.2f}),",
        "with 95 % paired-bootstrap intervals over the windows (`alphaq compare --allocators uniform`):",
        "",
        _fmt_table(
            ["uniform bits", "ppl", "increase", "95 % interval"],
            [
                [
                    r["budget"],
                    f"{r['ppl']:.2f}",
                    f"+{r['increase']:.2f} ({r['increase_pct']:+.1f} %)",
                    f"[{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]",
                ]
                for r in sens["rows"]
            ],
        ),
        "",
    ]


def _fmt_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _matrix_table(values: Sequence[Sequence[float]], fmt: str) -> str:
    experts = len(values[0])
    return _fmt_table(
        ["layer"] + [f"e{e}" for e in range(experts)],
        [[str(layer)] + [format(v, fmt) for v in row] for layer, row in enumerate(values)],
    )


def _spread_line(s: dict[str, float], fmt: str) -> str:
    return (
        f"min {format(s['min'], fmt)}, median {format(s['median'], fmt)}, "
        f"max {format(s['max'], fmt)} (std {format(s['std'], fmt)})"
    )


__all__ = ["render_card"]
