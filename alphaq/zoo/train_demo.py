"""Train the bundled demo Mixture-of-Experts language model (``alphaq/data/demo-moe``).

A small Mixtral (4 layers, 8 experts, top-2, hidden 256, expert width 512, context 256, tied
embeddings, ~14.5 M parameters) with a 4096-token byte-level BPE tokenizer, trained on real text so
its experts develop genuinely different spectra and routing loads. Every dimension is a multiple of 256,
so llama.cpp's k-quants (rows of whole 256-value blocks) take every expert tensor:

* train: WikiText-2 ``valid.txt`` + Gutenberg ``big.txt`` + the first 90 % of Tiny Shakespeare;
* held out: WikiText-2 ``test.txt`` and the last 10 % of Tiny Shakespeare.

Run (about an hour on one busy CPU core; the card records the exact command)::

    python -m alphaq.zoo.train_demo

The run is seeded; the data order, initialisation and schedule depend only on the config. A
``--max-minutes`` cap stops early (the card records why training stopped). One thread is the
default because on a shared 2-core machine a 2-thread run stalls on OpenMP barriers whenever
another process holds a core (measured 11.7 s/step with 2 threads vs ~3 s/step with 1).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from alphaq.errors import ConfigError
from alphaq.zoo.layouts import build_model, untie_embeddings

DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "data" / "demo-moe"
#: Layouts the recipe trains (transformers model types).
ARCHITECTURES: tuple[str, ...] = ("mixtral", "qwen2_moe")
SHAKESPEARE_TRAIN_FRACTION = 0.9
RECIPE_NOTES = (
    "experts implementation: transformers 5.23 offers eager, grouped_mm and batched_mm for "
    "MixtralExperts; on 2 idle CPU threads (batch 16 x 256, training step) eager ran 3.9k tok/s, "
    "grouped_mm 3.5k tok/s (2.0k at batch 32) and batched_mm ran out of memory, so training uses eager.",
    "threads: with other processes on the 2 cores a 2-thread run took 11.7 s/step against ~3 s/step "
    "with 1 thread (4.3 s/step at load 6), so the recipe uses 1 thread.",
    "900 steps (about 2.4 epochs of the 1.5 M training tokens) instead of the first recipe's 400 (1.1 epochs), to "
    "train the experts longer; quantization still hurts it far less than it hurts real MoEs (uniform 2.5 bits: "
    "+2.9 % here, 18-40 % on real MoEs; see the sensitivity table).",
    "router aux loss: a 60-step probe with coefficient 0.001 had already concentrated the routing (on "
    "WikiText-2 test one expert per layer took 0.48-0.50 of the top-2 assignments, i.e. almost every token, "
    "and 3-4 experts per layer got under 1 %); 0.01 keeps every layer uncollapsed yet uneven, and rarely "
    "routed experts keep larger alphas.",
    "lr 3e-3 (peak) moves the weights far from initialisation within 400 steps: expert alphas fall from "
    "about 3.7 after 60 steps (lr 2e-3 probe) to about 2.2.",
)


@dataclass(frozen=True)
class DemoTrainConfig:
    """Recipe of the demo model (architecture, data, optimiser, stopping)."""

    out_dir: str = str(DEFAULT_OUT_DIR)
    log_file: str = "/tmp/alphaq-demo-train.jsonl"
    seed: int = 0
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 4
    num_experts: int = 8
    top_k: int = 2
    num_heads: int = 8
    num_kv_heads: int = 4
    context: int = 256
    init_std: float = 0.02
    router_aux_loss_coef: float = 1e-2
    batch_size: int = 16
    max_steps: int = 900
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 60
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_windows: int = 32
    patience: int = 4
    log_every: int = 10
    max_minutes: float = 72.0
    device: str = "cpu"
    threads: int = 1
    experts_implementation: str = "eager"
    architecture: str = "mixtral"
    shared_expert_size: int = 0
    recipe: str = "demo-moe"

    def __post_init__(self) -> None:
        positive = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_experts",
            "top_k",
            "num_heads",
            "num_kv_heads",
            "context",
            "batch_size",
            "max_steps",
            "eval_every",
            "eval_windows",
            "patience",
            "log_every",
            "threads",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive; pass a value >= 1")
        if self.top_k > self.num_experts:
            raise ConfigError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}; lower --top-k")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ConfigError("hidden_size must divide by num_heads and num_heads by num_kv_heads; fix the sizes")
        for name in ("lr", "init_std", "max_minutes", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0; pass a positive value")
        for name in ("router_aux_loss_coef", "weight_decay", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0; pass a non-negative value")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio={self.min_lr_ratio} must lie in [0, 1]; pass e.g. 0.05")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture={self.architecture!r} is not trainable here; pass one of {', '.join(ARCHITECTURES)}"
            )
        if self.shared_expert_size < 0 or (self.shared_expert_size and self.architecture != "qwen2_moe"):
            raise ConfigError("shared_expert_size must be >= 0 and needs --architecture qwen2_moe; fix the recipe")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device={self.device!r} is not supported; pass --device cpu or --device cuda")


@dataclass(frozen=True)
class Corpora:
    """Training documents and held-out texts."""

    train: tuple[str, ...]
    train_names: tuple[str, ...]
    wikitext2_test: str
    shakespeare_heldout: str
    shakespeare_split_char: int


def load_corpora() -> Corpora:
    """Read the training and held-out texts from :func:`alphaq.evaluation.datasets.data_dir`.

    Returns:
        The corpora; Shakespeare is split at the first newline after 90 % of its characters.
    """
    from alphaq.evaluation import datasets

    shakespeare = datasets.read_text(datasets.shakespeare())
    split = shakespeare.find("\n", int(len(shakespeare) * SHAKESPEARE_TRAIN_FRACTION)) + 1
    return Corpora(
        train=(
            datasets.read_text(datasets.wikitext2_valid()),
            datasets.read_text(datasets.gutenberg()),
            shakespeare[:split],
        ),
        train_names=(datasets.WIKITEXT2_VALID, datasets.GUTENBERG, f"{datasets.SHAKESPEARE}[:{split}]"),
        wikitext2_test=datasets.read_text(datasets.wikitext2_test()),
        shakespeare_heldout=shakespeare[split:],
        shakespeare_split_char=split,
    )


def lr_at(step: int, cfg: DemoTrainConfig) -> float:
    """Learning rate: linear warmup then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _log(stream: TextIO, records: list[dict[str, Any]], record: dict[str, Any]) -> None:
    records.append(record)
    stream.write(json.dumps(record) + "\n")
    stream.flush()


def train_demo(cfg: DemoTrainConfig) -> Path:
    """Train the tokenizer and model, save the checkpoint and write its model card.

    Args:
        cfg: the recipe.

    Returns:
        The checkpoint folder.
    """
    import torch

    from alphaq.atomic import write_json, write_text
    from alphaq.evaluation.perplexity import perplexity
    from alphaq.zoo import model_card
    from alphaq.zoo.tokenizer import EOS_TOKEN, PAD_TOKEN, to_transformers, train_bpe_tokenizer

    started = time.time()
    torch.manual_seed(cfg.seed)
    corpora = load_corpora()
    tokenizer = train_bpe_tokenizer(corpora.train, cfg.vocab_size)
    eos_id, pad_id = tokenizer.token_to_id(EOS_TOKEN), tokenizer.token_to_id(PAD_TOKEN)
    stream_ids: list[int] = []
    for doc in corpora.train:
        stream_ids += tokenizer.encode(doc).ids + [eos_id]
    train_ids = torch.tensor(stream_ids, dtype=torch.long)  # [N]
    held_out = {
        "wikitext2_test": torch.tensor(tokenizer.encode(corpora.wikitext2_test).ids),
        "shakespeare_heldout": torch.tensor(tokenizer.encode(corpora.shakespeare_heldout).ids),
    }
    device = torch.device(cfg.device)
    model = build_model(cfg, eos_id, pad_id).to(device)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    records: list[dict[str, Any]] = []
    best: dict[str, Any] = {"loss": float("inf"), "step": 0, "state": None}
    bad_evals, stopped_by, step = 0, "max_steps", 0
    train_started = time.time()
    Path(cfg.log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(cfg.log_file, "w", encoding="utf-8") as log:
        _log(
            log, records, {"event": "start", "train_tokens": int(train_ids.numel()), "config": dataclasses.asdict(cfg)}
        )
        for step in range(1, cfg.max_steps + 1):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step - 1, cfg)
            starts = torch.randint(0, train_ids.numel() - cfg.context, (cfg.batch_size,), generator=generator)
            batch = torch.stack([train_ids[s : s + cfg.context] for s in starts.tolist()]).to(device)  # [B, T]
            out = model(input_ids=batch, labels=batch, output_router_logits=True)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            elapsed = time.time() - train_started
            if step % cfg.log_every == 0 or step == 1:
                aux = float(out.aux_loss.detach()) if out.aux_loss is not None else float("nan")
                _log(
                    log,
                    records,
                    {
                        "event": "train",
                        "step": step,
                        "loss": round(float(out.loss.detach()), 4),
                        "aux_loss": round(aux, 4),
                        "grad_norm": round(float(grad_norm), 4),
                        "lr": lr_at(step - 1, cfg),
                        "tokens": step * cfg.batch_size * cfg.context,
                        "elapsed_s": round(elapsed, 1),
                    },
                )
            out_of_time = elapsed > cfg.max_minutes * 60
            if step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time:
                evals = {
                    name: perplexity(model, ids, cfg.context, max_windows=cfg.eval_windows)
                    for name, ids in held_out.items()
                }
                held = sum(e.nll for e in evals.values()) / len(evals)
                _log(
                    log,
                    records,
                    {
                        "event": "eval",
                        "step": step,
                        "held_out_loss": round(held, 4),
                        **{f"{k}_ppl": round(e.ppl, 3) for k, e in evals.items()},
                        "elapsed_s": round(time.time() - train_started, 1),
                    },
                )
                if held < best["loss"]:
                    best = {"loss": held, "step": step, "state": copy.deepcopy(model.state_dict())}
                    bad_evals = 0
                else:
                    bad_evals += 1
                if bad_evals >= cfg.patience:
                    stopped_by = "early_stopping"
                    break
            if out_of_time:
                stopped_by = "max_minutes"
                break
        train_seconds = time.time() - train_started
        _log(
            log,
            records,
            {
                "event": "end",
                "step": step,
                "best_step": best["step"],
                "stopped_by": stopped_by,
                "train_seconds": round(train_seconds, 1),
            },
        )
    model.load_state_dict(best["state"])
    out_dir = Path(cfg.out_dir)
    save_checkpoint(model, to_transformers(tokenizer, cfg.context), out_dir)
    write_text(out_dir / "training_log.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    training = {
        "config": dataclasses.asdict(cfg) | {"out_dir": _recorded_out_dir(cfg)},
        "command": "python -m alphaq.zoo.train_demo " + " ".join(cli_args(cfg)),
        "train_files": list(corpora.train_names),
        "train_tokens": int(train_ids.numel()),
        "shakespeare_split_char": corpora.shakespeare_split_char,
        "steps": step,
        "best_step": best["step"],
        "tokens_seen": step * cfg.batch_size * cfg.context,
        "stopped_by": stopped_by,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "machine": machine_description(cfg),
        "notes": list(RECIPE_NOTES),
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "tokenizers": __import__("tokenizers").__version__,
        },
    }
    write_json(out_dir / model_card.CARD_JSON, {"training": training})  # survives a failing card step
    if cfg.architecture == "mixtral":
        model_card.write_demo_card(out_dir, training)
    else:  # the demo card's measurements read the Mixtral layout; other recipes keep card.json's record
        write_text(out_dir / "README.md", _short_card(training))
    return out_dir


def _recorded_out_dir(cfg: DemoTrainConfig) -> str:
    out = Path(cfg.out_dir).resolve()
    return "alphaq/data/demo-moe" if out == DEFAULT_OUT_DIR.resolve() else f"<zoo>/{out.name}"


def _short_card(training: dict[str, Any]) -> str:
    cfg = training["config"]
    return "\n".join(
        [
            f"# alphaq zoo: {Path(cfg['out_dir']).name}",
            "",
            f"{cfg['architecture']} MoE trained by alphaq's zoo on real text: {cfg['num_layers']} layers, "
            f"{cfg['num_experts']} experts (top-{cfg['top_k']}) of width {cfg['intermediate_size']}, shared expert "
            f"{cfg['shared_expert_size']}, hidden {cfg['hidden_size']}, vocabulary {cfg['vocab_size']}.",
            "",
            f"- command: `{training['command']}`",
            f"- training files: {', '.join(training['train_files'])} ({training['train_tokens']:,} tokens)",
            f"- steps: {training['steps']} (best {training['best_step']}, stopped by {training['stopped_by']}), "
            f"{training['train_seconds'] / 60:.1f} min on {training['machine']}",
            "- held out: WikiText-2 test and the last 10 % of Tiny Shakespeare (`training_log.jsonl` has the evals)",
            "",
        ]
    )


def save_checkpoint(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Save the model in bfloat16 safetensors with its generation config and tokenizer files."""
    import torch
    from transformers import GenerationConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.safetensors"):
        stale.unlink()
    model = model.to("cpu", dtype=torch.bfloat16)
    if model.config.model_type != "mixtral":
        untie_embeddings(model)
    model.config.output_router_logits = False
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def machine_description(cfg: DemoTrainConfig) -> str:
    """One line naming the device the run used."""
    import torch

    if cfg.device == "cuda":
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {cfg.threads} CPU threads (of {os.cpu_count()} cores), torch {torch.__version__} CPU"


def cli_args(cfg: DemoTrainConfig) -> list[str]:
    """The command-line flags that reproduce ``cfg`` (every recipe field, so later default changes
    do not alter the recorded command; output paths left out)."""
    args = ["--recipe", cfg.recipe]
    for field in dataclasses.fields(cfg):
        if field.name not in ("out_dir", "log_file", "recipe"):
            args += [f"--{field.name.replace('_', '-')}", str(getattr(cfg, field.name))]
    return args


def parse_args(argv: list[str] | None = None) -> DemoTrainConfig:
    """Build a :class:`DemoTrainConfig` from command-line flags (one flag per field)."""
    from alphaq.zoo.recipes import RECIPES, recipe_overrides

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default="demo-moe", choices=tuple(RECIPES))
    known, _ = pre.parse_known_args(argv)
    base = recipe_overrides(known.recipe)
    parser = argparse.ArgumentParser(prog="python -m alphaq.zoo.train_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="demo-moe", choices=tuple(RECIPES), help="named recipe (field defaults)")
    for field in dataclasses.fields(DemoTrainConfig):
        if field.name == "recipe":
            continue
        default = base.get(field.name, field.default)
        kind = type(default)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=kind, default=default, help=f"(default: {default})"
        )
    values = vars(parser.parse_args(argv))
    return DemoTrainConfig(**values)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m alphaq.zoo.train_demo``."""
    import torch

    cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    out = train_demo(cfg)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
