"""A quantized checkpoint whose expert tensors do not fit its config (issue 23): refused when it is loaded, in one
line naming the tensor and both shapes, not on the model's first forward."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alphaq.errors import CheckpointError
from tests.fixtures.bad_input import TEXT, assert_one_line_or_success, invoke, shared_plans, snapshot


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    plans = shared_plans(tmp_path_factory)
    out = tmp_path_factory.mktemp("quantized") / "q"
    result = invoke(["quantize", plans["model"], "--plan", plans["alphaq"], "--out", out, "--no-html"])
    assert result.exit_code == 0, result.output
    return out


def _with_config(quantized: Path, dst: Path, **fields: object) -> Path:
    shutil.copytree(quantized, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **fields}))
    return dst


def test_expert_of_the_wrong_shape_is_refused_at_load(quantized: Path, tmp_path: Path) -> None:
    from alphaq.quantization.loading import load_quantized

    model, _ = load_quantized(quantized)  # the intact checkpoint loads
    assert model.model.layers[0].mlp.experts.experts[0]["gate"].in_features == 32
    bad = _with_config(quantized, tmp_path / "bad", intermediate_size=128)
    with pytest.raises(
        CheckpointError,
        match=r"experts\.0\.w2 is \[32, 64\] but the model its config\.json describes holds \[32, 128\] there",
    ):
        load_quantized(bad)
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out = tmp_path / "eval"
    args = ["eval", "--quantized", bad, "--out", out, "--text-file", text, "--max-windows", "1", "--no-html"]
    result = invoke(args)
    assert_one_line_or_success(result, args, allow_success=False)
    assert "does not fit its config" in result.stderr
    assert snapshot(out) == {}


def test_quantized_config_field_of_the_wrong_type_is_one_line(quantized: Path, tmp_path: Path) -> None:
    from alphaq.quantization.loading import load_quantized

    bad = _with_config(quantized, tmp_path / "bad", num_hidden_layers="four")
    with pytest.raises(CheckpointError, match="field 'num_hidden_layers' is \"four\""):
        load_quantized(bad)
