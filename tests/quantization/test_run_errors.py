"""``alphaq quantize``: crash and resume to identical bytes, and every bad input (one line, nothing written)."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alphaq.cli import app
from alphaq.errors import AlphaQError, ConfigError, PlanError
from alphaq.load import open_checkpoint
from alphaq.planning.plan_file import PlanTensor
from alphaq.quantization import output_folder
from alphaq.quantization import run as qrun
from tests.quantization.quantize_helpers import (  # noqa: F401
    WIDTHS,
    assert_equals_reference,
    expert_widths,
    make_plan,
    quantize,
    reference,
    reshard,
    stored_bytes,
    write_checkpoint,
)

runner = CliRunner()


# -- crash and resume --------------------------------------------------------------------------------


def test_interrupted_run_resumes_to_identical_bytes(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    model = reshard(tiny_checkpoints["olmoe"], tmp_path / "sharded", 3)
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")
    qrun.run_quantize(model, plan, tmp_path / "clean")
    real, calls = qrun._write_output_shard, []

    def crash_on_second(job, shard, out):  # noqa: ANN001
        calls.append(shard.name)
        if len(calls) == 2:
            (out / f".{shard.name}.x1y2.tmp").write_bytes(b"partial")  # what a killed process leaves
            raise KeyboardInterrupt
        return real(job, shard, out)

    monkeypatch.setattr(qrun, "_write_output_shard", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        qrun.run_quantize(model, plan, tmp_path / "resumed")
    resumed = tmp_path / "resumed"
    assert sorted(p.name for p in resumed.iterdir()) == [
        ".alphaq-quantize-progress.json",
        ".model-00002-of-00003.safetensors.x1y2.tmp",
        "model-00001-of-00003.safetensors",
    ]
    first = (resumed / "model-00001-of-00003.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(qrun, "_write_output_shard", real)
    result = qrun.run_quantize(model, plan, resumed)
    assert [s["resumed"] for s in result.manifest["shards"]] == [True, False, False]
    assert (resumed / "model-00001-of-00003.safetensors").stat().st_mtime_ns == first  # skipped, not rewritten
    clean_files = sorted(p.name for p in (tmp_path / "clean").iterdir())
    assert sorted(p.name for p in resumed.iterdir()) == clean_files
    for name in clean_files:
        if name != "quantize.json":
            assert (resumed / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    clean = json.loads((tmp_path / "clean" / "quantize.json").read_text())
    again = json.loads((resumed / "quantize.json").read_text())
    for manifest in (clean, again):
        for key in ("created", "timing"):
            manifest.pop(key)
        for record in manifest["tensors"] + manifest["copied"]:
            record.pop("seconds")
        for shard in manifest["shards"]:
            shard.pop("resumed")
    assert clean == again


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "problem, error, needle",
    [
        ("other_checkpoint", PlanError, "made for another checkpoint"),
        ("unknown_tensor", PlanError, "not in the checkpoint"),
        ("other_shape", PlanError, "in the plan but"),
        ("unplanned_expert", PlanError, "routed-expert matrix(es) of the checkpoint are not in"),
        ("unsupported_width", ConfigError, "cannot write 2-bit weights"),
        ("unknown_method", ConfigError, "unknown quantization method"),
        ("no_cuda", ConfigError, "no CUDA device"),
        ("no_space", AlphaQError, "free but the quantized checkpoint needs"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tiny_checkpoints, tmp_path: Path, monkeypatch, problem, error, needle
) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    ckpt = open_checkpoint(model)
    kwargs: dict = {}
    plan_kwargs: dict = {}
    if problem == "other_checkpoint":
        plan_kwargs["fingerprint"] = "0123456789abcdef"
    elif problem in ("unknown_tensor", "other_shape"):
        m = ckpt.matrices[0]
        name = "model.layers.9.mlp.gate.weight" if problem == "unknown_tensor" else m.name
        rows = m.shape[0] + (8 if problem == "other_shape" else 0)
        plan_kwargs["extra"] = (
            PlanTensor(
                name=name,
                tensor=name,
                layer=9,
                expert=None,
                proj="router",
                role="router",
                rows=rows,
                cols=m.shape[1],
                params=rows * m.shape[1],
                bits=16,
                group_size=None,
                bytes=rows * m.shape[1] * 2,
                error=0.0,
            ),
        )
        if problem == "other_shape":
            plan_kwargs["skip"] = lambda r: r.name == m.name
    elif problem == "unplanned_expert":
        plan_kwargs["skip"] = lambda r: r.role.value == "expert" and r.expert == 2
    elif problem == "unsupported_width":
        monkeypatch.setitem(qrun.METHOD_BITS, "hqq", (3, 4, 8))
        kwargs["method"] = "hqq"
    elif problem == "unknown_method":
        kwargs["method"] = "awq"  # gptq is a method now (calibrated)
    elif problem == "no_cuda":
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        kwargs["device"] = "cuda"
    elif problem == "no_space":
        monkeypatch.setattr(
            output_folder.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
        )
    plan = make_plan(ckpt, tmp_path / "plan.json", **plan_kwargs)
    out = tmp_path / "new" / "out"
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")) as caught:
        qrun.run_quantize(model, plan, out, **kwargs)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "new").exists()


def test_out_folder_must_be_new_or_an_unfinished_run_of_the_same_job(tiny_checkpoints, tmp_path: Path) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(AlphaQError, match="out directory not empty; choose another --out or remove it"):
        qrun.run_quantize(model, plan, busy)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    qrun.run_quantize(model, plan, tmp_path / "done")
    with pytest.raises(AlphaQError, match="out directory not empty"):  # a finished run is not resumed
        qrun.run_quantize(model, plan, tmp_path / "done")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / qrun.PROGRESS_FILE).write_text(json.dumps({"key": {"method": "hqq"}, "shards": {}}))
    (unfinished / "model.safetensors").write_bytes(b"a finished shard of that run")
    with pytest.raises(AlphaQError, match="unfinished run of another plan, checkpoint or options"):
        qrun.run_quantize(model, plan, unfinished)
    stopped = tmp_path / "stopped"  # stopped before its first shard (e.g. a NaN weight): started afresh
    stopped.mkdir()
    (stopped / qrun.PROGRESS_FILE).write_text(json.dumps({"key": {"method": "hqq"}, "shards": {}}))
    (stopped / ".model.safetensors.ab12.tmp").write_bytes(b"partial")
    assert qrun.run_quantize(model, plan, stopped).totals["bytes_match_plan"]
    assert not (stopped / qrun.PROGRESS_FILE).exists() and not list(stopped.glob(".*.tmp"))
    (tmp_path / "empty").mkdir()
    assert qrun.run_quantize(model, plan, tmp_path / "empty").totals["bytes_match_plan"]


def test_disk_write_failure_names_the_path_and_free_space(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")

    def full_disk(path, tensors, fill):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(qrun.st, "write_shard", full_disk)
    with pytest.raises(AlphaQError, match=r"cannot write .*model\.safetensors: No space left on device \(.* GB free\)"):
        qrun.run_quantize(model, plan, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / "quantize.json").exists()


def test_a_weight_that_cannot_be_quantized_is_named_and_the_fixed_plan_starts_afresh(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = {
        f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight": torch.randn(16, 32, generator=g) for e in range(2)
    }
    tensors["model.layers.0.block_sparse_moe.experts.1.w1.weight"][3, 5] = float("nan")
    model = write_checkpoint(
        tmp_path / "nan", {"model_type": "mixtral", "hidden_size": 32, "num_hidden_layers": 1}, tensors
    )
    ckpt = open_checkpoint(model)
    with pytest.raises(
        AlphaQError,
        match=r"experts\.1\.w1\.weight: cannot quantize \(weight contains NaN.*plan it at "
        "16 bits",
    ) as caught:
        qrun.run_quantize(model, make_plan(ckpt, tmp_path / "plan.json", lambda m: 4), tmp_path / "out")
    assert "\n" not in str(caught.value) and not (tmp_path / "out" / "model.safetensors").exists()
    fixed = make_plan(ckpt, tmp_path / "fixed.json", lambda m: 4 if m.expert == 0 else 16)
    result = qrun.run_quantize(model, fixed, tmp_path / "out")
    assert result.totals["quantized_tensors"] == 1 and result.totals["copied_tensors"] == 1


def test_plan_without_fingerprint_is_matched_by_names_with_a_warning(tiny_checkpoints, tmp_path: Path) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    ckpt = open_checkpoint(model)
    plan = make_plan(ckpt, tmp_path / "plan.json", fingerprint=None)
    result = qrun.run_quantize(model, plan, tmp_path / "out")
    assert "no checkpoint fingerprint" in result.manifest["warnings"][0]


def test_cli_bad_input_exit_code_and_one_line(tiny_checkpoints, tmp_path: Path) -> None:
    plan = make_plan(open_checkpoint(tiny_checkpoints["mixtral"]), tmp_path / "plan.json")
    result = runner.invoke(
        app, ["quantize", str(tiny_checkpoints["olmoe"]), "--plan", str(plan), "--out", str(tmp_path / "q")]
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "made for another checkpoint" in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "q").exists()


def test_demo_model_end_to_end_on_the_cli(tmp_path: Path) -> None:
    from alphaq.zoo.demo import demo_model_path

    demo = demo_model_path()
    plan = make_plan(open_checkpoint(demo), tmp_path / "plan.json", group_size=128)
    out = tmp_path / "demo-q"
    result = runner.invoke(app, ["quantize", "--plan", str(plan), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "quantize.json").read_text())
    totals = manifest["totals"]
    assert totals["quantized_tensors"] == 96 + 16 and totals["bytes_match_plan"]
    assert sorted(manifest["files"]) == ["generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    assert totals["output_bytes"] < totals["source_bytes"] / 2
    assert (out / "quantize.html").is_file()


def test_damaged_finished_shard_is_redone_with_a_warning(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    model = reshard(tiny_checkpoints["olmoe"], tmp_path / "sharded", 3)
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")
    real, calls = qrun._write_output_shard, []

    def stop_on_third(job, shard, out):  # noqa: ANN001
        calls.append(shard.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job, shard, out)

    monkeypatch.setattr(qrun, "_write_output_shard", stop_on_third)
    out = tmp_path / "q"
    with pytest.raises(KeyboardInterrupt):
        qrun.run_quantize(model, plan, out)
    damaged = out / "model-00001-of-00003.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(qrun, "_write_output_shard", real)
    result = qrun.run_quantize(model, plan, out)
    assert [s["resumed"] for s in result.manifest["shards"]] == [False, True, False]
    assert any(
        w.startswith("model-00001-of-00003.safetensors: the finished shard on disk does not match")
        for w in result.manifest["warnings"]
    )


def test_interrupt_on_the_cli_says_how_to_resume(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003
        raise KeyboardInterrupt

    monkeypatch.setattr(qrun, "_write_output_shard", interrupted)
    result = runner.invoke(app, ["quantize", str(model), "--plan", str(plan), "--out", str(tmp_path / "q")])
    assert result.exit_code == 130
    assert "interrupted" in result.output and "rerun the same command to resume" in result.output


def test_copy_that_fills_the_disk_names_the_output_not_the_source(
    tiny_checkpoints, tmp_path: Path, monkeypatch
) -> None:
    import alphaq.quantization.writer as writer

    model = tiny_checkpoints["qwen3_moe"]
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")

    def full_copy(src, dst):  # noqa: ANN001 - what shutil's sendfile path raises on ENOSPC
        error = OSError(errno.ENOSPC, "No space left on device")
        error.filename, error.filename2 = str(src), str(dst)
        raise error

    monkeypatch.setattr(writer.shutil, "copyfile", full_copy)
    with pytest.raises(AlphaQError) as caught:
        qrun.run_quantize(model, plan, tmp_path / "out")
    message = str(caught.value)
    assert message.startswith(f"cannot write {tmp_path / 'out'}") and str(model) not in message
    assert "GB free" in message and "free space on that disk" in message
