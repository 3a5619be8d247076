from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from alphaq.errors import AlphaQError, CheckpointError, ConfigError
from alphaq.evaluation.perplexity import perplexity
from alphaq.load.model import load_model, tokenize_text
from alphaq.zoo import model_card
from alphaq.zoo.demo import demo_model_path
from alphaq.zoo.train_demo import DemoTrainConfig, cli_args, lr_at, parse_args

EXPECTED_LAYERS, EXPECTED_EXPERTS = 4, 8


@pytest.fixture(scope="module")
def demo() -> tuple[object, object]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        return load_model()


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((demo_model_path() / model_card.CARD_JSON).read_text(encoding="utf-8"))


def test_bundled_checkpoint_is_small_bf16_mixtral_with_per_expert_tensors():
    from safetensors import safe_open

    folder = demo_model_path()
    assert sum(f.stat().st_size for f in folder.iterdir()) < 30 * 10**6  # the bundled model stays <= 30 MB
    for name in ("config.json", "generation_config.json", "tokenizer.json", "README.md", "training_log.jsonl"):
        assert (folder / name).is_file(), name
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        w1 = f.get_tensor("model.layers.0.block_sparse_moe.experts.7.w1.weight")
        w2 = f.get_tensor("model.layers.3.block_sparse_moe.experts.0.w2.weight")
    # every dimension a multiple of 256: llama.cpp's k-quants need rows of whole 256-value blocks
    assert w1.dtype == torch.bfloat16 and w1.shape == (512, 256) and w2.shape == (256, 512)
    expert_keys = [k for k in keys if ".block_sparse_moe.experts." in k]
    assert len(expert_keys) == EXPECTED_LAYERS * EXPECTED_EXPERTS * 3


def test_loads_offline_with_expected_shape(demo, card):
    model, tokenizer = demo
    cfg = model.config
    assert cfg.model_type == "mixtral" and not model.training
    assert cfg.num_hidden_layers == EXPECTED_LAYERS == card["architecture"]["layers"]
    assert cfg.num_local_experts == EXPECTED_EXPERTS == card["architecture"]["experts"]
    assert cfg.num_experts_per_tok == 2 and cfg.max_position_embeddings == 256
    assert next(model.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]["total"]
    assert 13_000_000 <= card["parameters"]["total"] <= 16_000_000
    assert tokenizer.eos_token == "<|endoftext|>" and len(tokenizer) == cfg.vocab_size == 4096


def test_tokenizer_round_trips_text(demo):
    _, tokenizer = demo
    text = "First Citizen:\nBefore we proceed any further, hear me speak. = Valkyria Chronicles III =\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(text) / 2
    assert tokenizer.decode(ids) == text


def test_greedy_generation_is_deterministic(demo):
    model, tokenizer = demo
    prompt = tokenizer("The history of the United States", return_tensors="pt")
    runs = [model.generate(**prompt, max_new_tokens=8, do_sample=False) for _ in range(2)]
    assert runs[0].shape == (1, prompt["input_ids"].shape[1] + 8)
    assert torch.equal(runs[0], runs[1])
    assert tokenizer.decode(runs[0][0, prompt["input_ids"].shape[1] :]).strip()


def test_wikitext2_perplexity_matches_the_card(demo, card):
    from alphaq.evaluation import datasets

    try:
        path = datasets.wikitext2_test()
    except AlphaQError as exc:
        pytest.skip(f"WikiText-2 test text not available ({exc})")
    model, tokenizer = demo
    recorded = card["perplexity"]["wikitext2_test"]
    windows = recorded["prefix_windows"]
    ids = tokenize_text(tokenizer, datasets.read_text(path))
    # the standard protocol: full windows only, each predicts all but its first token, the remainder is dropped
    context = model.config.max_position_embeddings
    assert recorded["tokens"] == recorded["windows"] * (context - 1)
    assert len(ids) == recorded["windows"] * context + recorded["dropped_tokens"]
    result = perplexity(model, ids, context, max_windows=windows)
    assert result.windows == windows
    expected = recorded[f"ppl_first_{windows}_windows"]
    assert result.ppl == pytest.approx(expected, rel=0.02)


def test_card_records_distinct_experts(card):
    alpha, routing = card["alpha"]["spread_all_matrices"], card["routing"]
    assert alpha["max"] - alpha["min"] > 0.6  # experts differ in spectral shape
    assert 1.5 < alpha["median"] < 6.0
    shares = routing["shares"]
    assert len(shares) == EXPECTED_LAYERS and all(abs(sum(row) - 1) < 1e-9 for row in shares)
    assert max(max(row) for row in shares) < 0.5  # no layer collapsed onto one expert
    assert routing["spread"]["max"] > 1.3 * routing["spread"]["min"]  # but loads are uneven


def test_card_alphas_are_reproducible_from_the_weights(card):
    from safetensors import safe_open

    with safe_open(str(demo_model_path() / "model.safetensors"), "pt") as f:
        weight = f.get_tensor("model.layers.1.block_sparse_moe.experts.2.w2.weight").to(torch.float64)
    alpha, _ = model_card.fit_alpha(torch.linalg.svdvals(weight).square().numpy())
    assert alpha == pytest.approx(card["alpha"]["per_matrix"]["w2"][1][2], rel=1e-6)


def test_load_model_rejects_a_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)


def test_train_config_validation_and_schedule():
    with pytest.raises(ConfigError, match="lr=0"):
        DemoTrainConfig(lr=0.0)
    with pytest.raises(ConfigError, match="top_k=9"):
        DemoTrainConfig(top_k=9)
    with pytest.raises(ConfigError, match="--device"):
        DemoTrainConfig(device="tpu")
    cfg = DemoTrainConfig(lr=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(110, cfg) == pytest.approx(1e-4)


def test_recorded_command_reproduces_the_config(card):
    cfg = DemoTrainConfig(lr=3e-3, router_aux_loss_coef=0.02, max_steps=7)
    assert parse_args(cli_args(cfg)) == DemoTrainConfig(lr=3e-3, router_aux_loss_coef=0.02, max_steps=7)
    recorded = parse_args(card["training"]["command"].split()[3:])
    expected = DemoTrainConfig(**card["training"]["config"])
    assert dataclasses.replace(recorded, out_dir=expected.out_dir, log_file=expected.log_file) == expected
