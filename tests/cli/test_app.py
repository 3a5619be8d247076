"""The CLI end to end on tiny checkpoints: outputs, exit codes, one-line errors, no partial files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from alphaq.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "inspect" in result.output


@pytest.mark.parametrize("command", ["inspect", "plan", "quantize", "run", "report", "gallery", "export", "llamacpp",
                                     "lmeval", "eval", "compare"])
def test_one_command_application_is_the_same_command(command):
    """The console entry point builds the invoked command only; its help (options, defaults, text) and its
    errors are those of the full application."""
    from alphaq.cli.app import COMMANDS, build_app

    assert sorted(entry[0] for entry in COMMANDS) == sorted(typer.main.get_command(app).commands)
    lone = build_app(only=command)
    for args in ([command, "--help"], [command, "--no-such-option"]):
        full, one = runner.invoke(app, args), runner.invoke(lone, args)
        assert (one.exit_code, one.output) == (full.exit_code, full.output)
    assert len(typer.main.get_command(lone).commands) == 1


def test_unknown_command_name_is_refused():
    from alphaq.cli.app import build_app

    with pytest.raises(ValueError, match="no alphaq command 'nope'"):
        build_app(only="nope")


def test_console_entry_point_runs_a_command_and_the_group_help(tmp_path):
    """``main`` as the installed ``alphaq`` script runs it: a command through its one-command application (same
    files as through the full one), anything else (``--help``, an unknown name) through the full application."""
    import subprocess
    import sys

    def alphaq(*args: str) -> subprocess.CompletedProcess:
        code = "import sys\nfrom alphaq.cli.app import main\nsys.argv[0] = 'alphaq'\nmain()\n"
        return subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True, timeout=300)

    done = alphaq("inspect", "--out", str(tmp_path / "run"), "--no-html")
    assert done.returncode == 0, done.stderr[-2000:]
    assert runner.invoke(app, ["inspect", "--out", str(tmp_path / "full"), "--no-html"]).exit_code == 0
    for name in ("details.csv", "experts.csv", "details.parquet"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    listing = alphaq("--help")
    assert listing.returncode == 0 and all(f" {name} " in listing.stdout for name in ("inspect", "compare", "llamacpp"))
    unknown = alphaq("nope")
    assert unknown.returncode == 2 and "No such command 'nope'" in unknown.stderr


def test_inspect_tiny_qwen2_moe(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["inspect", str(tiny_checkpoints["qwen2_moe"]), "--out", str(out), "--float64",
                                 "--tail-test", "--layers", "1"])
    assert result.exit_code == 0, result.output
    for name in ("details.csv", "details.parquet", "experts.csv", "spectra.npz", "inspect.json", "inspect.html"):
        assert (out / name).is_file(), name
    details = pd.read_csv(out / "details.csv")
    assert (details["role"] == "expert").sum() == 4 * 3
    assert details.loc[details["status"] == "success", "R_lognormal"].notna().all()
    experts = pd.read_csv(out / "experts.csv")
    assert (experts["role"] == "expert").sum() == 4 and (experts["role"] == "shared_expert").sum() == 1
    manifest = json.loads((out / "inspect.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["checkpoint"]["model_type"] == "qwen2_moe"
    assert manifest["options"]["dtype"] == "float64"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_inspect_layers_and_experts_only(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["inspect", str(tiny_checkpoints["mixtral"]), "--out", str(out), "--layers", "1",
                                 "--experts-only", "--no-html"])
    assert result.exit_code == 0, result.output
    details = pd.read_csv(out / "details.csv")
    assert set(details["layer"]) == {1} and set(details["role"]) == {"expert"}
    assert not (out / "inspect.html").exists()


@pytest.mark.parametrize("args, needle", [
    (["inspect", "/nonexistent/model"], "no such checkpoint folder"),
    (["inspect", "{tiny}", "--layers", "x"], "--layers"),
    (["inspect", "{tiny}", "--fit", "magic"], "unknown fit"),
    (["inspect", "{tiny}", "--layers", "99"], "no matrix selected"),
])
def test_bad_input_one_line_error_no_output(args, needle, tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    args = [a.replace("{tiny}", str(tiny_checkpoints["olmoe"])) for a in args] + ["--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output
    assert not out.exists()


def test_plan_reuses_inspect_and_writes_plan(tiny_checkpoints, tmp_path):
    from alphaq.planning.plan_file import load_plan

    out = tmp_path / "run"
    model = str(tiny_checkpoints["qwen2_moe"])
    assert runner.invoke(app, ["inspect", model, "--out", str(out), "--no-html"]).exit_code == 0
    result = runner.invoke(app, ["plan", model, "--out", str(out), "--budget", "3", "--sweep", "2.5,3,4",
                                 "--keep", "attention=16,shared=8", "--no-html"])
    assert result.exit_code == 0, result.output
    plan = load_plan(out / "plan.json")
    experts = [t for t in plan.tensors if t.role == "expert"]
    assert len(experts) == 2 * 4 * 3
    params = sum(t.params for t in experts)
    assert sum(t.params * t.bits for t in experts) / params <= 3.0 + 1e-12
    shared = [t for t in plan.tensors if t.role == "shared_expert"]
    assert shared and {t.bits for t in shared} == {8}
    assert plan.provenance["checkpoint"]["fingerprint"] == json.loads((out / "inspect.json").read_text())["checkpoint"]["fingerprint"]
    sweep = pd.read_csv(out / "sweep.csv")
    assert set(sweep["allocator"]) >= {"alphaq", "uniform", "random"} and len(sweep) >= 9
    comparison = json.loads((out / "plan_comparison.json").read_text())
    # Both plans scored on one scale (per-expert alpha importance); a layer plan may split an expert's
    # projections across widths, so neither is a subset of the other.
    assert comparison["layer_plan"]["objective"] > 0 and comparison["expert_plan"]["objective"] > 0
    assert comparison["rounded_up_per_layer_bytes"] >= sum(t.bytes for t in experts)


def test_plan_infeasible_budget_and_missing_calibration(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    model = str(tiny_checkpoints["mixtral"])
    result = runner.invoke(app, ["plan", model, "--out", str(out), "--budget", "1.5", "--no-html"])
    assert result.exit_code == 2 and "feasible" in result.output
    assert not (out / "plan.json").exists()
    result = runner.invoke(app, ["plan", model, "--out", str(out), "--allocator", "frequency", "--no-html"])
    assert result.exit_code == 2 and "--calibration-text" in result.output


def test_report_rebuilds_pages_from_artifacts(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    model = str(tiny_checkpoints["olmoe"])
    assert runner.invoke(app, ["plan", model, "--out", str(out), "--no-html"]).exit_code == 0
    assert (out / "inspect.json").is_file()  # plan ran the inspect stage it needed
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "inspect.html").is_file() and (out / "plan.html").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty)])
    assert result.exit_code == 2 and "no stage artifacts" in result.output
