"""Property-based bad input (issue 23): mutations of a valid safetensors header and of a valid config.json, fed to
the Python API and to every command that reads a checkpoint. Each either succeeds or exits 2 with one ``error:``
line (no traceback), and a refused command leaves nothing partial in its output folder."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphaq.errors import AlphaQError
from alphaq.load import open_checkpoint
from tests.fixtures.bad_input import (
    assert_nothing_partial,
    assert_one_line_or_success,
    copy_checkpoint,
    fuzz_settings,
    invoke,
    json_value_strategy,
    read_raw_header,
    shared_plans,
    shared_text,
    snapshot,
    write_raw_header,
)

FUZZ = fuzz_settings(25)
COMMANDS = ("api", "inspect", "plan", "quantize", "eval", "export compressed-tensors")

#: JSON values of every kind, biased to the ones a damaged header or config holds.
json_values = json_value_strategy(
    ["F7", "F32", "BF16", "", "four", "\u00e9"], min_int=-300, text_size=8, key_size=6, list_size=4, leaves=6
)


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return shared_plans(tmp_path_factory)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_text(tmp_path_factory)


def _exercise(command: str, model: Path, plans: dict[str, Path], text_file: Path, tmp: Path) -> None:
    """Run ``command`` on the (possibly damaged) checkpoint ``model`` and check the bad-input contract."""
    if command == "api":
        try:
            ckpt = open_checkpoint(model)
            for ref in ckpt.matrices[:6]:
                ckpt.read_array(ref)
        except AlphaQError as error:
            assert "\n" not in str(error) and str(error)
        return
    out = tmp / "out"
    args: list[Any] = {
        "inspect": ["inspect", model, "--out", out, "--no-html"],
        "plan": ["plan", model, "--out", out, "--no-html", "--budget", "3.5", "--group-size", "32"],
        "quantize": ["quantize", model, "--plan", plans["alphaq"], "--out", out, "--no-html"],
        "eval": [
            "eval",
            model,
            "--out",
            out,
            "--text-file",
            text_file,
            "--max-windows",
            "1",
            "--context",
            "32",
            "--no-baseline",
            "--no-html",
        ],
        "export compressed-tensors": [
            "export",
            plans["alphaq"],
            "--format",
            "compressed-tensors",
            "--model",
            model,
            "--out",
            out,
        ],
    }[command]
    result = invoke(args)
    assert_one_line_or_success(result, args)
    if result.exit_code == 2:
        assert_nothing_partial(
            out,
            {},
            allowed=("inspect.json", "details.csv", "details.parquet", "experts.csv", "spectra.npz")
            if command == "plan"
            else (),
        )


def _mutate_entry(header: dict[str, Any], name: str, field: str, value: Any) -> None:
    if field == "<entry>":
        header[name] = value
    elif field == "<drop>":
        header[name].pop("dtype", None)
    elif isinstance(header.get(name), dict):
        header[name][field] = value


@given(data=st.data())
@FUZZ
def test_mutated_safetensors_header(plans: dict[str, Path], text_file: Path, data: st.DataObject) -> None:
    header, blob = read_raw_header(plans["model"] / "model.safetensors")
    name = data.draw(st.sampled_from(sorted(header)), label="tensor")
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "<entry>", "<drop>"]), label="field")
    near = {
        "shape": st.lists(st.integers(-4, 70), min_size=0, max_size=3),
        "data_offsets": st.tuples(st.integers(-8, 1 << 20), st.integers(-8, 1 << 20)).map(list),
        "dtype": st.sampled_from(
            ["F7", "F16", "BF16", "F64", "I8", "U8", "F4", "F6_E2M3", "C64", "BOOL", "F8_E4M3", "f32"]
        ),
    }
    value = data.draw(st.one_of(near[field], json_values) if field in near else json_values, label="value")
    _mutate_entry(header, name, field, value)
    trim = data.draw(st.sampled_from([0, 0, 0, 4, -4]), label="bytes removed from the end")
    blob = blob[:-trim] if trim > 0 else blob + b"\0" * -trim
    command = data.draw(st.sampled_from(COMMANDS), label="command")
    with tempfile.TemporaryDirectory() as tmp:
        model = copy_checkpoint(plans["model"], Path(tmp) / "model")
        write_raw_header(model / "model.safetensors", header, blob)
        _exercise(command, model, plans, text_file, Path(tmp))


@given(data=st.data())
@FUZZ
def test_mutated_config_json(plans: dict[str, Path], text_file: Path, data: st.DataObject) -> None:
    config = json.loads((plans["model"] / "config.json").read_text())
    field = data.draw(
        st.sampled_from(
            [
                "num_hidden_layers",
                "hidden_size",
                "num_local_experts",
                "intermediate_size",
                "model_type",
                "text_config",
                "quantization_config",
                "num_attention_heads",
                "vocab_size",
                "rms_norm_eps",
                "max_position_embeddings",
                "<whole>",
            ]
        ),
        label="field",
    )
    value = data.draw(
        st.one_of(st.sampled_from([0, -1, 1, 3, 2**31, "four", None, 2.5, [], {}]), json_values), label="value"
    )
    if field == "<whole>":
        config = value
    else:
        config[field] = value
    command = data.draw(st.sampled_from(COMMANDS), label="command")
    with tempfile.TemporaryDirectory() as tmp:
        model = copy_checkpoint(plans["model"], Path(tmp) / "model")
        (model / "config.json").write_text(json.dumps(config))
        _exercise(command, model, plans, text_file, Path(tmp))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01\x00\x00",
        (10**9).to_bytes(8, "little") + b"{}",
        (2).to_bytes(8, "little") + b"[]",
        (4).to_bytes(8, "little") + b"\xff\xfe{}",
    ],
)
def test_raw_file_damage_is_one_line(plans: dict[str, Path], tmp_path: Path, raw: bytes) -> None:
    model = copy_checkpoint(plans["model"], tmp_path / "model")
    (model / "model.safetensors").write_bytes(raw)
    args = ["inspect", model, "--out", tmp_path / "out", "--no-html"]
    result = invoke(args)
    assert_one_line_or_success(result, args, allow_success=False)
    assert "model.safetensors" in result.stderr and snapshot(tmp_path / "out") == {}
