"""The CLI end to end on tiny checkpoints: outputs, exit codes, one-line errors, no partial files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from alphaq.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "inspect" in result.output


def test_console_entry_point_is_the_application(tmp_path):
    """The installed ``alphaq`` script (``[project.scripts]``) resolves to ``main``, and ``main`` run as a process
    runs the whole application: a command (same files as through :data:`app`), the group help, an unknown name."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    from alphaq.cli.app import main

    (script,) = entry_points(group="console_scripts", name="alphaq")
    assert script.load() is main

    def alphaq(*args: str) -> subprocess.CompletedProcess:
        code = "import sys\nfrom alphaq.cli.app import main\nsys.argv[0] = 'alphaq'\nmain()\n"
        return subprocess.run(
            [sys.executable, "-c", code, *args], check=False, capture_output=True, text=True, timeout=300
        )

    done = alphaq("inspect", "--out", str(tmp_path / "run"), "--no-html")
    assert done.returncode == 0, done.stderr[-2000:]
    assert runner.invoke(app, ["inspect", "--out", str(tmp_path / "full"), "--no-html"]).exit_code == 0
    # the same tables; the last digits may differ (float32 Gram products: this process has imported torch, whose
    # BLAS threading differs from a fresh process's), so floats compare at 1e-6 relative, far inside alpha's 1e-4
    for name in ("details.csv", "experts.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "run" / name), pd.read_csv(tmp_path / "full" / name), check_exact=False, rtol=1e-6
        )
    listing = alphaq("--help")
    assert listing.returncode == 0 and all(f" {name} " in listing.stdout for name in ("inspect", "compare", "llamacpp"))
    unknown = alphaq("nope")
    assert unknown.returncode == 2 and "No such command 'nope'" in unknown.stderr


def test_inspect_tiny_qwen2_moe(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["inspect", str(tiny_checkpoints["qwen2_moe"]), "--out", str(out), "--float64", "--tail-test", "--layers", "1"],
    )
    assert result.exit_code == 0, result.output
    for name in ("details.csv", "details.parquet", "experts.csv", "spectra.npz", "inspect.json", "inspect.html"):
        assert (out / name).is_file(), name
    details = pd.read_csv(out / "details.csv")
    assert (details["role"] == "expert").sum() == 4 * 3
    fitted = details[details["status"] == "success"]
    for column in ("R_lognormal", "p_lognormal", "R_exponential", "p_exponential", "R_truncated", "p_truncated"):
        assert fitted[column].notna().all(), column
    experts = pd.read_csv(out / "experts.csv")
    assert (experts["role"] == "expert").sum() == 4 and (experts["role"] == "shared_expert").sum() == 1
    manifest = json.loads((out / "inspect.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["checkpoint"]["model_type"] == "qwen2_moe"
    assert manifest["options"]["dtype"] == "float64" and manifest["options"]["engine"] == "alphaq"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_inspect_layers_and_experts_only(tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "inspect",
            str(tiny_checkpoints["mixtral"]),
            "--out",
            str(out),
            "--layers",
            "1",
            "--experts-only",
            "--no-html",
        ],
    )
    assert result.exit_code == 0, result.output
    details = pd.read_csv(out / "details.csv")
    assert set(details["layer"]) == {1} and set(details["role"]) == {"expert"}
    assert not (out / "inspect.html").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["inspect", "/nonexistent/model"], "no such checkpoint folder"),
        (["inspect", "{tiny}", "--layers", "x"], "--layers"),
        (["inspect", "{tiny}", "--fit", "magic"], "unknown fit"),
        (["inspect", "{tiny}", "--layers", "99"], "no matrix selected"),
        (["inspect", "{tiny}", "--engine", "magic"], "unknown engine 'magic'"),
        (["inspect", "{tiny}", "--engine", "weightwatcher", "--fit", "hill"], "drop --fit hill"),
        (["inspect", "{tiny}", "--engine", "weightwatcher", "--farms"], "drop --farms"),
    ],
)
def test_bad_input_one_line_error_no_output(args, needle, tiny_checkpoints, tmp_path):
    out = tmp_path / "run"
    args = [a.replace("{tiny}", str(tiny_checkpoints["olmoe"])) for a in args] + ["--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output
    assert not out.exists()


def test_inspect_engine_weightwatcher_with_tail_test(tiny_checkpoints, tmp_path):
    """``--engine weightwatcher`` writes the same tables (same columns, weightwatcher's numbers, alphas equal to
    alphaq's own engine's) and records the engine; ``--tail-test`` adds its powerlaw columns to them."""
    model = str(tiny_checkpoints["qwen2_moe"])
    own, ww = tmp_path / "own", tmp_path / "ww"
    assert runner.invoke(app, ["inspect", model, "--out", str(own), "--layers", "1", "--no-html"]).exit_code == 0
    result = runner.invoke(
        app,
        ["inspect", model, "--out", str(ww), "--layers", "1", "--no-html", "--engine", "weightwatcher", "--tail-test"],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((ww / "inspect.json").read_text())
    assert manifest["options"]["engine"] == "weightwatcher" and manifest["options"]["tail_test"] is True
    theirs, ours = pd.read_csv(ww / "details.csv"), pd.read_csv(own / "details.csv")
    assert list(theirs.columns) == list(ours.columns) and list(theirs["name"]) == list(ours["name"])
    fitted = theirs["status"] == "success"
    assert fitted.sum() == (ours["status"] == "success").sum() > 0
    assert ((theirs.loc[fitted, "alpha"] - ours.loc[fitted, "alpha"]).abs() <= 1e-4 * ours.loc[fitted, "alpha"]).all()
    for column in ("R_lognormal", "p_lognormal", "R_exponential", "p_exponential", "R_truncated", "p_truncated"):
        assert theirs.loc[fitted, column].notna().all() and ours[column].isna().all(), column
    assert (ww / "experts.csv").is_file() and (ww / "spectra.npz").is_file()


def test_plan_reuses_inspect_and_writes_plan(tiny_checkpoints, tmp_path):
    from alphaq.planning.plan_file import load_plan

    out = tmp_path / "run"
    model = str(tiny_checkpoints["qwen2_moe"])
    assert runner.invoke(app, ["inspect", model, "--out", str(out), "--no-html"]).exit_code == 0
    result = runner.invoke(
        app,
        [
            "plan",
            model,
            "--out",
            str(out),
            "--budget",
            "3",
            "--sweep",
            "2.5,3,4",
            "--keep",
            "attention=16,shared=8",
            "--no-html",
        ],
    )
    assert result.exit_code == 0, result.output
    plan = load_plan(out / "plan.json")
    experts = [t for t in plan.tensors if t.role == "expert"]
    assert len(experts) == 2 * 4 * 3
    params = sum(t.params for t in experts)
    assert sum(t.params * t.bits for t in experts) / params <= 3.0 + 1e-12
    shared = [t for t in plan.tensors if t.role == "shared_expert"]
    assert shared and {t.bits for t in shared} == {8}
    assert (
        plan.provenance["checkpoint"]["fingerprint"]
        == json.loads((out / "inspect.json").read_text())["checkpoint"]["fingerprint"]
    )
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
