"""bench/fullsize_checkpoint.py writes Qwen1.5-MoE-A2.7B's exact tensor names and shapes, and heavy-tailed weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from fullsize_checkpoint import QWEN15_MOE_CONFIG, scaled_config, synthetic_tensor, tensor_specs, write_checkpoint  # noqa: E402


def test_the_full_config_has_the_published_size_and_matrix_count() -> None:
    specs = list(tensor_specs(QWEN15_MOE_CONFIG))
    params = sum(int(np.prod(shape)) for _, shape, _ in specs)
    assert params == 14_315_784_192  # 28.6 GB of bf16
    assert sum(1 for _, shape, _ in specs if len(shape) == 2) == 4538


def test_names_and_shapes_equal_transformers_qwen2_moe_state_dict() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config_dict = scaled_config(layers=2, experts=3, vocab=512)
    config = AutoConfig.for_model(**config_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    # transformers 5 fuses the experts in memory; its checkpoint conversion names them per expert, as on disk
    expected = {name: tuple(shape) for name, shape, _ in tensor_specs(config_dict)}
    stored = {k: tuple(v.shape) for k, v in model.state_dict().items() if ".mlp.experts." not in k}
    assert {k: v for k, v in expected.items() if ".mlp.experts." not in k} == stored
    experts = model.model.layers[0].mlp.experts
    gate_up, down = experts.gate_up_proj, experts.down_proj  # [E, 2I, H], [E, H, I]
    assert tuple(gate_up.shape) == (3, 2 * 1408, 2048) and tuple(down.shape) == (3, 2048, 1408)
    assert expected["model.layers.0.mlp.experts.2.down_proj.weight"] == (2048, 1408)


def test_weights_are_deterministic_with_heavy_tailed_spectra() -> None:
    a = synthetic_tensor("model.layers.0.mlp.experts.0.up_proj.weight", (1408, 2048), "matrix")
    b = synthetic_tensor("model.layers.0.mlp.experts.0.up_proj.weight", (1408, 2048), "matrix")
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)
    assert float(a.float().abs().median()) == pytest.approx(0.0113, rel=0.2)  # 0.01 |g| u^(-1/mu)
    from alphaq.diagnostics.esd_metrics import esd_metrics
    from alphaq.diagnostics.spectrum import eigenvalues

    alphas = [
        esd_metrics(eigenvalues(synthetic_tensor(f"e{k}", (704, 1024), "matrix").float()), method="ww").alpha
        for k in range(5)
    ]
    assert 2.0 < float(np.median(alphas)) < 6.0  # power-law tails as trained layers have, not Marchenko-Pastur's
    assert max(alphas) - min(alphas) > 0.5  # and the matrices differ


def test_write_checkpoint_shards_and_reuses(tmp_path: Path) -> None:
    config = scaled_config(layers=1, experts=2, vocab=256)
    record = write_checkpoint(tmp_path / "m", config, shard_bytes=20 * 1024**2)
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert record["shards"] == len(set(index["weight_map"].values())) > 1
    assert index["metadata"]["total_size"] == record["bytes"]
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    assert write_checkpoint(tmp_path / "m", config, shard_bytes=20 * 1024**2)["reused"] is True


def test_deepseek_extrapolation_scales_per_matrix_rates() -> None:
    from fullsize import extrapolate

    records = [
        {"stage": "inspect", "wall_s": 500.0, "matrices_per_s": 9.0},
        {"stage": "plan", "wall_s": 300.0, "matrices_per_s": 14.4},
        {"stage": "quantize", "wall_s": 100.0, "source_bytes": 28_631_568_384},
    ]
    result = extrapolate(records, [1, 4], cores=32, storage_gbs=2.0)
    one, four = result["table"]
    assert result["workload"]["matrices"] == 58 * 256 * 3
    assert four["inspect_hours"] == pytest.approx(one["inspect_hours"] / 4, rel=0.01)  # Ray scales it
    assert four["plan_hours"] == one["plan_hours"]  # the plan runs on the driver alone
    assert four["quantize_hours"] == pytest.approx(671e9 / 2e9 / 3600, abs=1e-3)  # 4 nodes: bound by the read
