"""A checkpoint with Qwen1.5-MoE-A2.7B's exact config, tensor names and shapes, and heavy-tailed synthetic weights.

28.6 GB of bf16 in ``model-0000k-of-0000n.safetensors`` shards plus ``model.safetensors.index.json``, written
shard by shard (one shard in memory at a time), so it can be larger than the machine's memory. The bundled demo
model's tokenizer is copied beside it (llama.cpp's converter pads the vocabulary to ``vocab_size``), so the GGUF
export runs on it too.

Weights: each matrix ``W [out, in]`` has entries ``0.01 g u^(-1/mu)`` (``g`` Gaussian, ``u`` uniform, clipped at
1e-5), whose tail index ``mu`` is drawn per matrix in [1.6, 2.6]: heavy-tailed entries give the ESD of ``W^T W`` a
power-law tail (weightwatcher's fit gives alpha about 2 to 5 on these shapes, the range of trained layers), and the
experts of a layer differ, as trained ones do. Routers have Gaussian entries of std 0.002, norms are near 1. Every
matrix is seeded by its name, so the bytes do not depend on the shard size.

Used by ``bench/fullsize.py`` (``python bench/fullsize.py write DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

#: config.json of Qwen/Qwen1.5-MoE-A2.7B (the published one, verbatim but for the transformers version).
QWEN15_MOE_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2MoeForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "decoder_sparse_step": 1,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 5632,
    "max_position_embeddings": 8192,
    "max_window_layers": 21,
    "model_type": "qwen2_moe",
    "moe_intermediate_size": 1408,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts": 60,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 24,
    "num_key_value_heads": 16,
    "output_router_logits": False,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001,
    "shared_expert_intermediate_size": 5632,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
DEMO_MODEL = Path(__file__).resolve().parents[1] / "alphaq" / "data" / "demo-moe"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
#: Rows generated at a time (bounds the float32 working memory of the embedding and the head).
ROW_BLOCK = 8192
ProgressFn = Callable[[int, int, str], None]
#: Bumped when the weights change (an older checkpoint on disk is then written again).
GENERATOR_VERSION = 2


def scaled_config(layers: int | None = None, experts: int | None = None, vocab: int | None = None) -> dict[str, Any]:
    """The Qwen1.5-MoE config, optionally with fewer layers, experts or tokens (smoke runs; shapes unchanged)."""
    config = dict(QWEN15_MOE_CONFIG)
    if layers is not None:
        config["num_hidden_layers"] = layers
        config["max_window_layers"] = min(config["max_window_layers"], layers)
    if experts is not None:
        config["num_experts"] = experts
        config["num_experts_per_tok"] = min(config["num_experts_per_tok"], experts)
    if vocab is not None:
        config["vocab_size"] = vocab
    return config


def tensor_specs(config: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, kind)`` of every tensor, in the published checkpoint's order; kind: matrix/router/bias/norm."""
    h, v = config["hidden_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = h // heads
    inter, shared = config["moe_intermediate_size"], config["shared_expert_intermediate_size"]
    yield "model.embed_tokens.weight", (v, h), "matrix"
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        for proj, rows in (("q_proj", h), ("k_proj", kv * head_dim), ("v_proj", kv * head_dim)):
            yield f"{p}.self_attn.{proj}.weight", (rows, h), "matrix"
            yield f"{p}.self_attn.{proj}.bias", (rows,), "bias"
        yield f"{p}.self_attn.o_proj.weight", (h, h), "matrix"
        yield f"{p}.mlp.gate.weight", (config["num_experts"], h), "router"
        for e in range(config["num_experts"]):
            yield f"{p}.mlp.experts.{e}.gate_proj.weight", (inter, h), "matrix"
            yield f"{p}.mlp.experts.{e}.up_proj.weight", (inter, h), "matrix"
            yield f"{p}.mlp.experts.{e}.down_proj.weight", (h, inter), "matrix"
        yield f"{p}.mlp.shared_expert.gate_proj.weight", (shared, h), "matrix"
        yield f"{p}.mlp.shared_expert.up_proj.weight", (shared, h), "matrix"
        yield f"{p}.mlp.shared_expert.down_proj.weight", (h, shared), "matrix"
        yield f"{p}.mlp.shared_expert_gate.weight", (1, h), "router"
        yield f"{p}.input_layernorm.weight", (h,), "norm"
        yield f"{p}.post_attention_layernorm.weight", (h,), "norm"
    yield "model.norm.weight", (h,), "norm"
    yield "lm_head.weight", (v, h), "matrix"


def _generator(name: str, seed: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def synthetic_tensor(name: str, shape: tuple[int, ...], kind: str, seed: int = 0) -> torch.Tensor:
    """One bf16 tensor of the checkpoint (deterministic in ``name`` and ``seed``)."""
    g = _generator(name, seed)
    if kind == "norm":
        return (1.0 + 0.05 * torch.randn(shape, generator=g)).to(torch.bfloat16)
    if kind == "bias":
        return (0.02 * torch.randn(shape, generator=g)).to(torch.bfloat16)
    rows, cols = shape
    if kind == "router":
        return (0.002 * torch.randn(shape, generator=g)).to(torch.bfloat16)
    mu = 1.6 + float(torch.rand((), generator=g))  # tail index of the entries
    out = torch.empty(shape, dtype=torch.bfloat16)  # [out, in]
    for start in range(0, rows, ROW_BLOCK):
        stop = min(rows, start + ROW_BLOCK)
        heavy = torch.rand(stop - start, cols, generator=g).clamp_min_(1e-5).pow_(-1.0 / mu)  # [b, in]
        out[start:stop] = (torch.randn(stop - start, cols, generator=g).mul_(heavy).mul_(0.01)).to(torch.bfloat16)
    return out


def _save_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def write_checkpoint(
    folder: str | Path,
    config: dict[str, Any] | None = None,
    *,
    shard_bytes: int = 2 * 1024**3,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Write the checkpoint shard by shard; returns what was written (bytes, tensors, shards).

    Args:
        folder: output folder (created; an existing complete checkpoint of the same config is kept).
        config: the model config (default: Qwen1.5-MoE-A2.7B's).
        shard_bytes: bytes per shard (the published checkpoint has 8 shards of about 4 GB).
        seed: seed of every tensor.
        progress: ``progress(done_bytes, total_bytes, tensor_name)``.

    Returns:
        ``{"folder", "bytes", "tensors", "matrices", "shards", "reused"}``.
    """
    config = dict(config or QWEN15_MOE_CONFIG)
    out = Path(folder)
    specs = list(tensor_specs(config))
    total = sum(2 * _numel(shape) for _, shape, _ in specs)
    matrices = sum(1 for _, shape, _ in specs if len(shape) == 2)
    marker = out / "fullsize_checkpoint.json"
    record = {
        "config": config,
        "seed": seed,
        "generator": GENERATOR_VERSION,
        "bytes": total,
        "tensors": len(specs),
        "matrices": matrices,
    }
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("record") == record:
        shards = json.loads(marker.read_text(encoding="utf-8"))["shards"]
        return {**record, "folder": str(out), "shards": shards, "reused": True}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    groups: list[list[tuple[str, tuple[int, ...], str]]] = [[]]
    size = 0
    for spec in specs:
        nbytes = 2 * _numel(spec[1])
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += nbytes
    weight_map: dict[str, str] = {}
    done = 0
    for k, group in enumerate(groups, start=1):
        shard = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name, shape, kind in group:
            tensors[name] = synthetic_tensor(name, shape, kind, seed)
            weight_map[name] = shard
            done += 2 * _numel(shape)
            if progress is not None:
                progress(done, total, name)
        _save_shard(tensors, out / shard)
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for name in TOKENIZER_FILES:
        shutil.copyfile(DEMO_MODEL / name, out / name)
    marker.write_text(json.dumps({"record": record, "shards": len(groups)}, indent=2) + "\n", encoding="utf-8")
    return {**record, "folder": str(out), "shards": len(groups), "reused": False}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
