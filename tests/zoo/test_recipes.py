"""The zoo's named recipes: the second model's layout, where it is cached, and the one command that trains it."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphaq.errors import CheckpointError, ConfigError
from alphaq.zoo.recipes import SECOND_MODEL, recipe_overrides, zoo_model_path
from alphaq.zoo.train_demo import DemoTrainConfig, build_model, cli_args, parse_args


def test_second_model_recipe_is_a_qwen2_moe_with_a_shared_expert(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ALPHAQ_ZOO_DIR", str(tmp_path))
    cfg = parse_args(["--recipe", SECOND_MODEL, "--max-steps", "3"])
    assert (cfg.architecture, cfg.num_layers, cfg.num_experts, cfg.top_k) == ("qwen2_moe", 6, 16, 4)
    assert (cfg.intermediate_size, cfg.shared_expert_size, cfg.hidden_size) == (256, 512, 256)
    assert cfg.max_steps == 3 and Path(cfg.out_dir) == tmp_path / SECOND_MODEL  # outside the package
    again = parse_args(cli_args(cfg) + ["--out-dir", cfg.out_dir, "--log-file", cfg.log_file])
    assert again == cfg  # the recorded command reproduces it
    model = build_model(DemoTrainConfig(**{**cfg.__dict__, "num_layers": 1, "vocab_size": 256}), 0, 1)
    assert type(model).__name__ == "Qwen2MoeForCausalLM"
    mlp = model.model.layers[0].mlp
    assert mlp.experts.gate_up_proj.shape == (16, 512, 256) and mlp.shared_expert.gate_proj.weight.shape == (512, 256)
    # every dimension a multiple of 256: llama.cpp's k-quants take every tensor
    assert all(d % 256 == 0 for d in (cfg.hidden_size, cfg.intermediate_size, cfg.shared_expert_size, cfg.vocab_size))


def test_the_demo_recipe_is_unchanged() -> None:
    assert parse_args([]) == DemoTrainConfig()
    assert recipe_overrides("demo-moe") == {"recipe": "demo-moe"}
    assert cli_args(DemoTrainConfig())[:2] == ["--recipe", "demo-moe"]


def test_unknown_recipe_and_missing_model_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe 'gpt5' is unknown"):
        recipe_overrides("gpt5")
    monkeypatch.setenv("ALPHAQ_ZOO_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match=f"python -m alphaq.zoo.train_demo --recipe {SECOND_MODEL}"):
        zoo_model_path()
    with pytest.raises(ConfigError, match="needs --architecture qwen2_moe"):
        DemoTrainConfig(shared_expert_size=512)
