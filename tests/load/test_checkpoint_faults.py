"""Damaged checkpoints, one per row of issue 23's table: each command refuses them in one line (exit 2), with no
traceback and nothing written; huge but finite weights are analysed (float64 spectra) rather than refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from alphaq.errors import CheckpointError
from alphaq.load import open_checkpoint
from alphaq.load.architectures import check_config
from tests.fixtures.bad_input import (
    TEXT,
    assert_one_line_or_success,
    copy_checkpoint,
    invoke,
    read_raw_header,
    shared_tiny_mixtral,
    snapshot,
    write_raw_header,
)
from tests.quantization.quantize_helpers import make_plan

EXPERT = "model.layers.0.block_sparse_moe.experts.1.w1.weight"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_mixtral(tmp_path_factory)


def _damage_header(tiny: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    model = copy_checkpoint(tiny, dst)
    header, data = read_raw_header(model / "model.safetensors")
    edit(header)
    write_raw_header(model / "model.safetensors", header, data)
    return model


def _unknown_dtype(header: dict) -> None:
    header[EXPERT]["dtype"] = "F7"


def _overlap(header: dict) -> None:
    begin, end = header[EXPERT]["data_offsets"]
    header[EXPERT]["data_offsets"] = [begin - 16, end - 16]


def _negative_shape(header: dict) -> None:
    header[EXPERT]["shape"] = [-256, -8]


DAMAGE = {
    "unknown dtype": (_unknown_dtype, r"unknown dtype 'F7'"),
    "overlapping offsets": (_overlap, r"overlaps the tensor before it"),
    "negative shape": (_negative_shape, r"has shape \[-256, -8\]; a shape is a list of non-negative integers"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_header_is_one_line_for_every_command(tiny: Path, tmp_path: Path, damage: str) -> None:
    edit, message = DAMAGE[damage]
    model = _damage_header(tiny, tmp_path / "model", edit)
    with pytest.raises(CheckpointError, match=message) as caught:
        open_checkpoint(model)
    assert "model.safetensors" in str(caught.value) and EXPERT in str(caught.value)
    plan = make_plan(open_checkpoint(tiny), tmp_path / "plan.json")
    for args in (
        ["inspect", model, "--out", tmp_path / "i", "--no-html"],
        ["plan", model, "--out", tmp_path / "p", "--no-html", "--error-model", "analytic"],
        ["quantize", model, "--plan", plan, "--out", tmp_path / "q", "--no-html"],
    ):
        result = invoke(args)
        assert_one_line_or_success(result, args, allow_success=False)
        assert "F7" in result.stderr if damage == "unknown dtype" else EXPERT in result.stderr
    assert snapshot(tmp_path / "i") == {} and snapshot(tmp_path / "p") == {} and not (tmp_path / "q").exists()


def test_config_field_of_the_wrong_type_is_one_line(tiny: Path, tmp_path: Path) -> None:
    model = copy_checkpoint(tiny, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "num_hidden_layers": "four"}))
    expected = "field 'num_hidden_layers' is \"four\", it must be a positive integer"
    with pytest.raises(CheckpointError, match=expected):
        open_checkpoint(model)
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    for args in (
        ["inspect", model, "--out", tmp_path / "i", "--no-html"],
        ["plan", model, "--out", tmp_path / "p", "--no-html"],
        ["eval", model, "--out", tmp_path / "e", "--text-file", text, "--max-windows", "1", "--no-html"],
    ):
        result = invoke(args)
        assert_one_line_or_success(result, args, allow_success=False)
        assert "config.json" in result.stderr and expected in result.stderr
    for out in ("i", "p", "e"):
        assert snapshot(tmp_path / out) == {}


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("hidden_size", 0, "a positive integer"),
        ("num_local_experts", 2.5, "a positive integer"),
        ("num_hidden_layers", True, "a positive integer"),
        ("first_k_dense_replace", -1, "a non-negative integer"),
        ("moe_intermediate_size", [256, 0], "a positive integer"),
        ("num_experts", [4, 4], "a positive integer"),
        ("model_type", 7, "a string"),
        ("text_config", [], "an object or null"),
        ("quantization_config", "fp8", "an object or null"),
    ],
)
def test_config_fields_are_checked_for_type_and_range(field: str, value: object, why: str) -> None:
    with pytest.raises(CheckpointError, match=f"field '{field}' is .*{why}"):
        check_config({"model_type": "mixtral", field: value}, "m/config.json")
    with pytest.raises(CheckpointError, match=r"field 'text_config.hidden_size' is \"x\""):
        check_config({"text_config": {"hidden_size": "x"}}, "m/config.json")
    with pytest.raises(CheckpointError, match=r"weight_block_size' is \[128\]"):
        check_config({"quantization_config": {"weight_block_size": [128]}}, "m/config.json")
    assert check_config({"moe_intermediate_size": [256, 256]})  # per layer, as Hunyuan-A13B
    assert check_config({"hidden_size": 32, "head_dim": None, "text_config": None}) == {
        "hidden_size": 32,
        "head_dim": None,
        "text_config": None,
    }


def test_huge_weights_are_analysed_in_float64(tiny: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = copy_checkpoint(tiny, tmp_path / "model")
    tensors = load_file(str(model / "model.safetensors"))
    tensors[EXPERT] = tensors[EXPERT] * 1e20  # the float32 Gram overflows (entries ~1e40)
    save_file(tensors, str(model / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "run"
    args = ["inspect", model, "--out", out, "--no-html"]
    result = invoke(args)
    assert_one_line_or_success(result, args, allow_success=True)
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in _details(out)}
    assert rows[EXPERT]["status"] in ("success", "partial") and rows[EXPERT]["alpha"] > 0
    args = ["plan", model, "--out", out, "--no-html", "--budget", "4", "--group-size", "32"]
    result = invoke(args)
    assert_one_line_or_success(result, args)


def _details(out: Path) -> list[dict]:
    import csv

    with (out / "details.csv").open(newline="") as fh:
        return [{k: (float(v) if k == "alpha" and v else v) for k, v in row.items()} for row in csv.DictReader(fh)]


def test_header_checks_follow_the_safetensors_rules(tmp_path: Path) -> None:
    from safetensors import safe_open

    from alphaq.load.safetensors_files import read_header

    file = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(4, dtype=torch.float16)}, str(file))
    header, data = read_raw_header(file)
    tensors, _ = read_header(file)
    assert {n: (t.dtype, t.shape, t.nbytes) for n, t in tensors.items()} == {
        "a": ("F32", (2, 3), 24),
        "b": ("F16", (4,), 8),
    }
    cases = {
        "gap": ({**header, "a": {**header["a"], "data_offsets": [0, 24]}}, data + b"\0" * 4, "data bytes"),
        "float shape": ({**header, "a": {**header["a"], "shape": [2.0, 3]}}, data, "non-negative integers"),
        "size": ({**header, "a": {**header["a"], "shape": [2, 4]}}, data, "has 24 bytes but its shape"),
        "metadata": ({**header, "__metadata__": {"format": 1}}, data, "__metadata__"),
        "not an entry": ({**header, "a": "F32"}, data, "is not an object"),
        "past the end": (header, data[:-4], "beyond the end of the file|cover"),
    }
    for name, (bad, blob, message) in cases.items():
        write_raw_header(file, bad, blob)
        with pytest.raises(CheckpointError, match=message):
            read_header(file)
        with pytest.raises(Exception):  # noqa: B017, PT011 - what alphaq refuses, the safetensors library refuses too
            with safe_open(str(file), framework="pt") as fh:
                [fh.get_tensor(k) for k in fh.keys()]  # noqa: SIM118
        assert name
