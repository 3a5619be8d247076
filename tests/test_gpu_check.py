"""bench/gpu_check.sh: one line and exit 0 without a GPU; its Python steps write the JSON it collects."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def _steps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check_steps", ROOT / "bench" / "gpu_check_steps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "gpu_check: no CUDA GPU here (torch.cuda.is_available() is false); nothing measured"
    ]
    assert not out.exists()


def test_every_step_is_time_limited() -> None:
    lines = [line for line in SCRIPT.read_text(encoding="utf-8").splitlines() if line.startswith("step ")]
    limits = [int(line.split()[2]) for line in lines]
    assert [line.split()[1] for line in lines] == ["env", "tests", "kernels", "layer", "inspect", "quantize"]
    assert sum(limits) + 10 * len(limits) <= 480  # within 8 minutes even when every step needs its kill-after


def test_layer_and_quantize_steps_write_their_records(tmp_path: Path) -> None:
    from safetensors import safe_open

    steps = _steps()
    layer = steps.write_layer(tmp_path / "layer", experts=2, rows=128, cols=256)
    assert layer["tensors"] == 6 and layer["bytes"] == 2 * 3 * 128 * 256 * 2
    with safe_open(str(tmp_path / "layer" / "model.safetensors"), "pt") as handle:
        down = handle.get_tensor("model.layers.0.mlp.experts.1.down_proj.weight")
    assert tuple(down.shape) == (256, 128) and str(down.dtype) == "torch.bfloat16"
    assert 0.015 < float(down.float().std()) < 0.025  # Student-t(4) scaled to std 0.02
    record = steps.quantize_throughput(tmp_path / "layer", device="cpu", bits=4)
    assert record["matrices"] == 6 and record["source_bytes"] == layer["bytes"]
    assert 0 < record["output_bytes"] < record["source_bytes"] and record["gb_per_s"] > 0


def test_junit_and_summary_records(tmp_path: Path) -> None:
    steps = _steps()
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="1" time="1.5">'
        '<testcase classname="tests.kernels.test_ops" name="test_a" time="0.1"/>'
        '<testcase classname="tests.kernels.test_ops" name="test_b" time="0.2">'
        '<failure message="assert 1 == 2">trace</failure></testcase>'
        '<testcase classname="tests.kernels.test_ops" name="test_c" time="0">'
        '<skipped message="no CUDA"/></testcase></testsuite></testsuites>',
        encoding="utf-8",
    )
    record = steps.junit_record(xml)
    assert (record["tests"], record["failures"], record["skipped"]) == (3, 1, 1)
    assert record["failed"] == [
        {"test": "tests.kernels.test_ops::test_b", "kind": "failure", "message": "assert 1 == 2"}
    ]
    (tmp_path / "steps.jsonl").write_text(
        json.dumps({"step": "env", "rc": 0, "seconds": 1.0, "limit_seconds": 30})
        + "\n"
        + json.dumps({"step": "kernels", "rc": 124, "seconds": 150.0, "limit_seconds": 150})
        + "\n",
        encoding="utf-8",
    )
    summary = steps.summary(tmp_path)
    assert summary["ok"] is False and summary["seconds"] == pytest.approx(151.0)
    assert [s["timed_out"] for s in summary["steps"]] == [False, True]
