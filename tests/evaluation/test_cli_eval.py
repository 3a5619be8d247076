from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from alphaq.cli.evaluate import compare, eval_command


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command()(compare)
    return app


def test_eval_command_original_and_missing_text(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("a small text about rivers and hills and stone walls " * 80, encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(
        _app(), ["eval", "--out", str(tmp_path / "run"), "--text-file", str(text), "--max-windows", "1"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["source"]["kind"] == "original" and record["windows"] == 1 and record["tokens"] == 255
    missing = runner.invoke(_app(), ["eval", "--out", str(tmp_path / "x"), "--text-file", str(tmp_path / "none.txt")])
    assert missing.exit_code == 2 and "text file not found" in missing.output


def test_compare_command_writes_table_and_page(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("a small text about rivers and hills and stone walls " * 80, encoding="utf-8")
    out = tmp_path / "cmp"
    result = CliRunner().invoke(
        _app(),
        [
            "compare",
            "--out",
            str(out),
            "--text-file",
            str(text),
            "--budgets",
            "3",
            "--allocators",
            "uniform,random",
            "--max-windows",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "compare.csv").is_file() and (out / "compare.html").is_file()
    assert "uniform" in result.output and "random" in result.output


def test_compare_command_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, message in (
        (["--seeds", "0,x"], "--seeds '0,x' must be integers"),
        (["--budgets", ","], "no budget given; pass --budgets 2.5,3,3.5"),
        (["--allocators", "alphaq,best"], "unknown allocator 'best'"),
    ):
        result = runner.invoke(_app(), ["compare", "--out", str(tmp_path / "cmp"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "cmp").exists()


def test_dataset_option_fetches_through_datasets_and_caches(tmp_path, monkeypatch) -> None:
    """--dataset wikitext2 goes through the datasets package (faked here: tests never reach a hub)."""
    import sys
    import types

    text = "a small text about rivers and hills and stone walls " * 80
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda *args, **kwargs: {"text": [text, "", text]}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setenv("ALPHAQ_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(
        _app(), ["eval", "--out", str(tmp_path / "run"), "--dataset", "wikitext2", "--max-windows", "1"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["eval_text"]["path"].startswith("../cache/")  # recorded relative to the run folder
    from alphaq.runfolder import resolve_recorded_path

    cached = resolve_recorded_path(record["eval_text"]["path"], base=tmp_path / "run")
    assert cached.is_file() and cached.resolve().is_relative_to((tmp_path / "cache").resolve())
    both = CliRunner().invoke(
        _app(), ["eval", "--out", str(tmp_path / "x"), "--dataset", "wikitext2", "--text-file", str(cached)]
    )
    assert both.exit_code == 2 and "not both" in both.output


def test_eval_in_bfloat16_and_device_checks(tmp_path) -> None:
    import pytest
    import torch

    from alphaq.errors import ConfigError
    from alphaq.evaluation.eval_run import run_eval
    from alphaq.evaluation.options import EvalOptions

    text = tmp_path / "t.txt"
    text.write_text("a small text about rivers and hills and stone walls " * 80, encoding="utf-8")
    full = run_eval(None, None, text_file=text, options=EvalOptions(max_windows=1))
    half = run_eval(None, tmp_path / "bf16", text_file=text, options=EvalOptions(max_windows=1, dtype="bfloat16"))
    assert full.out_dir is None and half.out_dir == tmp_path / "bf16" and full.kind == "original"
    assert half.record["protocol"]["dtype"] == "bfloat16" and half.tokens == full.tokens == 255
    assert full.baseline_ppl is None and full.ppl_increase is None  # the original model has no baseline
    assert abs(half.nll - full.nll) < 0.05 * full.nll  # bf16 rounding, same model
    with pytest.raises(ConfigError, match="dtype"):
        EvalOptions(dtype="int8")
    with pytest.raises(ConfigError, match="device"):
        EvalOptions(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            run_eval(None, None, text_file=text, options=EvalOptions(device="cuda"))


def test_pickle_only_checkpoint_is_refused_in_one_line(tiny_checkpoints, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "bin-only"
    shutil.copytree(tiny_checkpoints["mixtral"], folder)
    for weights in folder.glob("*.safetensors"):
        weights.rename(folder / "pytorch_model.bin")
    result = CliRunner().invoke(_app(), ["eval", str(folder), "--out", str(tmp_path / "run"), "--max-windows", "1"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "no .safetensors weights (found pytorch_model.bin); alphaq reads safetensors only" in result.output
