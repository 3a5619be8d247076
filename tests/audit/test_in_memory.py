"""alphaq.inspect on a loaded transformers model or a state dict: the same tables as on its saved folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import alphaq
from alphaq.audit.run import inspect
from alphaq.errors import AlphaQError, CheckpointError, ConfigError


def _key(row):
    return (row.get("layer"), row.get("expert"), row["proj"], row["role"])


def _assert_same_tables(got, want):
    """Every matrix of ``want`` in ``got`` (matched by layer, expert, projection, role), alphas within 1e-6 relative,
    and the per-expert tables equal."""
    a = {_key(row): row for row in want.detail_rows}
    b = {_key(row): row for row in got.detail_rows}
    assert set(a) == set(b) and len(b) == len(got.detail_rows)
    fitted = [k for k in a if a[k]["status"] == "success"]
    assert len(fitted) > len(a) // 2  # the comparison is not vacuous
    for k in a:
        assert a[k]["status"] == b[k]["status"], k
        if k in fitted:
            assert math.isclose(b[k]["alpha"], a[k]["alpha"], rel_tol=1e-6), k
    pd.testing.assert_frame_equal(got.experts, want.experts, rtol=1e-6)


@pytest.fixture(scope="module")
def demo():
    model, _ = alphaq.load_model()
    return model, inspect(None)


def test_a_loaded_model_gives_the_tables_of_its_folder(demo):
    model, folder = demo
    result = alphaq.inspect(model)
    _assert_same_tables(result, folder)
    ckpt = result.manifest["checkpoint"]
    assert ckpt["path"] == "in-memory:MixtralForCausalLM"
    assert (ckpt["model_type"], ckpt["num_layers"], ckpt["num_experts"]) == ("mixtral", 4, 8)
    assert len(result.detail_rows) == 117  # 4 x 8 experts x 3 + 4 x (4 attention + router) + embedding
    names = [row["name"] for row in result.detail_rows]
    assert "model.layers.0.mlp.experts.gate_up_proj[3].gate" in names  # transformers 5 holds the experts fused
    assert "lm_head.weight" not in names  # tied to the embedding: analysed once, as the folder stores it
    assert result.manifest["skipped_tensors"] == folder.manifest["skipped_tensors"] + 1


def test_a_state_dict_with_its_config_gives_the_same_tables(demo):
    model, folder = demo
    result = alphaq.inspect(model.state_dict(), model_config=model.config)
    _assert_same_tables(result, folder)
    assert result.manifest["checkpoint"]["path"] == "in-memory:state_dict"
    assert result.manifest["checkpoint"]["fingerprint"] == alphaq.inspect(model).manifest["checkpoint"]["fingerprint"]
    as_dict = alphaq.inspect(model.state_dict(), model_config=model.config.to_dict())
    assert as_dict.manifest["checkpoint"]["fingerprint"] == result.manifest["checkpoint"]["fingerprint"]


def test_a_state_dict_read_from_the_folder_needs_no_config_and_keeps_its_names(demo):
    from safetensors.torch import load_file

    _, folder = demo
    state = load_file(str(alphaq.demo_model_path() / "model.safetensors"))  # per-expert names, bf16
    result = alphaq.inspect(state)
    _assert_same_tables(result, folder)
    assert [r["name"] for r in result.detail_rows] == [r["name"] for r in folder.detail_rows]


def test_fused_names_without_a_config_are_ambiguous(demo):
    model, _ = demo
    with pytest.raises(ConfigError, match="model_config=") as err:
        alphaq.inspect(model.state_dict())
    assert "read its experts differently" in str(err.value) and "\n" not in str(err.value)


def test_the_model_is_not_changed_and_reads_are_copies(demo):
    model, _ = demo
    from alphaq.load.in_memory import open_in_memory

    before = {name: t.clone() for name, t in model.state_dict().items()}
    ckpt = open_in_memory(model)
    embed = next(m for m in ckpt.matrices if m.proj == "embed")
    array = ckpt.read_array(embed)
    assert not np.shares_memory(array, model.model.embed_tokens.weight.detach().numpy())
    array[:] = 0.0
    alphaq.inspect(model)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_saving_records_the_in_memory_source(demo, tmp_path):
    model, _ = demo
    alphaq.inspect(model, alphaq.InspectConfig(layers=(0,)), out=tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "inspect.json").read_text())
    assert manifest["checkpoint"]["path"] == "in-memory:MixtralForCausalLM"
    assert (tmp_path / "run" / "details.csv").is_file()


def test_a_tiny_qwen2_moe_loaded_with_transformers(tiny_checkpoints):
    from transformers import AutoModelForCausalLM

    folder = tiny_checkpoints["qwen2_moe"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    want = inspect(folder)
    got = alphaq.inspect(model)
    _assert_same_tables(got, want)
    roles = pd.Series([row["role"] for row in got.detail_rows]).value_counts()
    assert roles["expert"] == 2 * 4 * 3 and roles["shared_expert"] == 2 * 3
    with_config = alphaq.inspect(model.state_dict(), model_config=model.config)
    _assert_same_tables(with_config, want)


@pytest.mark.parametrize(
    ("source", "kwargs", "error", "match"),
    [
        (torch.nn.Linear(16, 16), {}, AlphaQError, r"Linear: .*pass its state_dict\(\)"),
        (42, {}, AlphaQError, "expected a checkpoint folder"),
        ({}, {}, CheckpointError, "empty"),
        ({"model.norm.weight": torch.ones(8)}, {}, CheckpointError, "no 2-D float weight"),
        ({"model.layers.0.mlp.gate.weight": [[1.0, 2.0]]}, {}, AlphaQError, "not a torch.Tensor"),
        ({0: torch.ones(8, 8)}, {}, AlphaQError, "not a string"),
        ({"w": torch.ones(8, 8)}, {"model_config": 3}, ConfigError, "dict or a transformers PretrainedConfig"),
        (
            {"w": torch.ones(8, 8)},
            {"model_config": {"model_type": "mixtral", "hidden_size": -1}},
            ConfigError,
            "hidden_size",
        ),
        ({"w": torch.ones(8, 8)}, {"backend": object()}, AlphaQError, "save the model"),
    ],
    ids=["torch-module", "int", "empty", "no-2d", "list-value", "int-key", "bad-config", "bad-field", "ray"],
)
def test_bad_input_is_one_line(source, kwargs, error, match):
    with pytest.raises(error, match=match) as err:
        inspect(source, **kwargs)
    assert "\n" not in str(err.value)


def test_a_models_config_cannot_be_overridden_and_a_folder_takes_none(demo):
    model, _ = demo
    with pytest.raises(ConfigError, match="state dict"):
        alphaq.inspect(model, model_config={"model_type": "mixtral"})
    with pytest.raises(ConfigError, match="config.json"):
        alphaq.inspect(None, model_config={"model_type": "mixtral"})
