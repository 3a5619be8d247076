from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from alphaq.cli import app
from alphaq.pipeline.run import RunConfig
from alphaq.planning.planner import PlanConfig


def test_run_writes_every_stage_and_links_them(demo_run: Path) -> None:
    for name in (
        "inspect.json",
        "experts.csv",
        "plan.json",
        "eval.json",
        "eval_tensors.csv",
        "eval_experts.csv",
        "index.html",
        "inspect.html",
        "plan.html",
        "eval.html",
        "quantized/quantize.json",
        "quantized/quantize.html",
        "quantized/model.safetensors",
        "quantized/model_card.md",
    ):
        assert (demo_run / name).is_file(), name
    index = (demo_run / "index.html").read_text(encoding="utf-8")
    for href in ("inspect.html", "plan.html", "quantized/quantize.html", "eval.html", "quantized/model_card.md"):
        assert f'href="{href}"' in index
    # a page in the quantized sub-folder links back to the run's pages
    quantize_page = (demo_run / "quantized" / "quantize.html").read_text(encoding="utf-8")
    assert 'href="../index.html"' in quantize_page and 'href="../eval.html"' in quantize_page


def test_run_eval_record_matches_plan_and_checkpoint(demo_run: Path) -> None:
    record = json.loads((demo_run / "eval.json").read_text(encoding="utf-8"))
    plan = json.loads((demo_run / "plan.json").read_text(encoding="utf-8"))
    assert record["schema_version"] == 1 and record["source"]["kind"] == "quantized"
    assert record["source"]["plan_fingerprint"] == plan["plan_fingerprint"]
    inspect = json.loads((demo_run / "inspect.json").read_text(encoding="utf-8"))
    assert record["checkpoint"]["fingerprint"] == inspect["checkpoint"]["fingerprint"]
    assert record["checkpoint"]["model_type"] == "mixtral"
    assert record["windows"] == 2 and record["tokens"] == 2 * 255 and record["context"] == 256
    assert record["baseline"]["windows"] == 2
    assert record["ppl_increase"] == pytest.approx(record["ppl"] - record["baseline"]["ppl"])
    assert record["ppl"] == pytest.approx(math.exp(record["nll"]))
    kld = record["kld"]  # KL divergence from the original on the same 2 windows, with its interval
    assert kld["windows"] == 2 and kld["tokens"] == 2 * 255
    assert 0 < kld["median_kld"] <= kld["p99_kld"] <= kld["max_kld"]
    assert kld["mean_kld_interval"]["low"] <= kld["mean_kld"] <= kld["mean_kld_interval"]["high"]
    assert 0.5 < kld["same_top"] < 1.0
    memory = record["memory"]
    assert memory["expert_bytes"] == plan["summary"]["expert_bytes"] == memory["plan_expert_bytes"]
    assert memory["bytes_match_plan"] is True
    assert memory["model_bytes"] < memory["original_model_bytes"]
    check = record["verification"]
    assert check["tensors"] == 96 and check["experts"] == 32
    # the plan's measured error model is the quantizer itself: prediction and measurement coincide
    assert check["mean_rel_error"] == pytest.approx(check["mean_predicted_error"], rel=1e-6)
    assert check["bytes"] == check["predicted_bytes"] == plan["summary"]["expert_bytes"]
    assert sum(check["routing_share_by_bits"].values()) == pytest.approx(1.0)


def test_run_expert_table_routing_shares(demo_run: Path) -> None:
    experts = pd.read_csv(demo_run / "eval_experts.csv")
    assert len(experts) == 32 and set(experts["layer"]) == {0, 1, 2, 3}
    for _, rows in experts.groupby("layer"):
        assert rows["routing_share"].sum() == pytest.approx(1.0)
        assert rows["routing_share_original"].sum() == pytest.approx(1.0)
    assert experts["alpha"].notna().all()  # joined from the inspect stage's experts.csv
    plan = json.loads((demo_run / "plan.json").read_text(encoding="utf-8"))
    planned = {}
    for t in plan["tensors"]:
        if t["role"] == "expert":
            planned.setdefault((t["layer"], t["expert"]), []).append(t["bytes"])
    for row in experts.itertuples():
        assert row.bytes == sum(planned[(row.layer, row.expert)])


def test_run_model_card(demo_run: Path) -> None:
    card = (demo_run / "quantized" / "model_card.md").read_text(encoding="utf-8")
    record = json.loads((demo_run / "eval.json").read_text(encoding="utf-8"))
    assert card.startswith("## Quantization with alphaq")
    for heading in ("### Data-free HT-SR audit", "### Bit allocation", "### Evaluation", "### How to reproduce"):
        assert heading in card
    assert f"{record['ppl']:.3f}" in card and f"{record['baseline']['ppl']:.3f}" in card
    assert "| 32 |" in card  # experts audited
    assert "alphaq run --budget 3.5 --out alphaq-run --model-card" in card  # the bundled model needs no MODEL


def test_report_rebuilds_the_same_pages(demo_run: Path) -> None:
    before = {p: p.read_bytes() for p in demo_run.rglob("*.html")}
    result = CliRunner().invoke(app, ["report", str(demo_run)])
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in demo_run.rglob("*.html")} == before


def test_simulated_plan_agrees_with_the_quantized_checkpoint(demo_run: Path, tmp_path: Path) -> None:
    from alphaq.evaluation.eval_run import run_eval
    from alphaq.evaluation.options import EvalOptions
    from alphaq.runfolder import resolve_recorded_path

    record = json.loads((demo_run / "eval.json").read_text(encoding="utf-8"))
    text = resolve_recorded_path(record["eval_text"]["path"], base=demo_run)  # data:wikitext-2/test.txt
    simulated = run_eval(
        None, tmp_path, plan_file=demo_run / "plan.json", text_file=text, options=EvalOptions(max_windows=2)
    ).record
    assert simulated["source"]["kind"] == "simulated"
    assert simulated["checkpoint"]["fingerprint"] == record["checkpoint"]["fingerprint"]
    assert simulated["baseline"]["ppl"] == pytest.approx(record["baseline"]["ppl"], rel=1e-9)
    assert simulated["ppl"] == pytest.approx(record["ppl"], rel=1e-4)
    assert simulated["verification"]["mean_rel_error"] == pytest.approx(
        record["verification"]["mean_rel_error"], rel=1e-6
    )


def test_run_config_and_missing_text(tmp_path: Path) -> None:
    from alphaq.errors import ConfigError

    with pytest.raises(ConfigError, match="device"):
        RunConfig(plan=PlanConfig(budget="3"), device="tpu")
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "r"), "--text-file", str(tmp_path / "no.txt")])
    assert result.exit_code == 2 and "text file not found" in result.output
    assert not (tmp_path / "r").exists()  # nothing started


def test_unsupported_packed_loader_falls_back_to_simulation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An architecture that load_quantized does not know is still evaluated: by simulating its plan."""
    from alphaq.evaluation.options import EvalOptions
    from alphaq.pipeline.run import run_pipeline
    from alphaq.quantization import loading

    monkeypatch.setattr(loading, "EXPERT_LAYOUTS", {})
    text = tmp_path / "t.txt"
    text.write_text("stone walls and rivers and hills " * 200, encoding="utf-8")
    config = RunConfig(
        plan=PlanConfig(budget="3"),
        sweep_budgets=(),
        text_file=text,
        eval_options=EvalOptions(max_windows=1, baseline=False),
    )
    result = run_pipeline(None, config, tmp_path / "run")
    assert result.evaluation is not None and result.evaluation.kind == "simulated"
    assert result.eval_record == result.evaluation.record
    assert "simulated quantization" in result.notes[0]
    assert (tmp_path / "run" / "quantized" / "quantize.json").is_file()  # the checkpoint is written all the same


def test_rerun_keeps_the_checkpoint_of_the_same_plan_and_refuses_another(tmp_path: Path) -> None:
    from alphaq.errors import AlphaQError
    from alphaq.pipeline.run import run_pipeline

    config = RunConfig(plan=PlanConfig(budget="3"), sweep_budgets=(), evaluate=False)
    run_pipeline(None, config, tmp_path / "run")
    shard = tmp_path / "run" / "quantized" / "model.safetensors"
    before = shard.stat().st_mtime_ns
    again = run_pipeline(None, config, tmp_path / "run")
    assert shard.stat().st_mtime_ns == before and "kept as it is" in again.notes[0]
    plan_before = (tmp_path / "run" / "plan.json").read_bytes()
    with pytest.raises(AlphaQError, match="another budget or plan options"):
        run_pipeline(None, RunConfig(plan=PlanConfig(budget="4"), sweep_budgets=(), evaluate=False), tmp_path / "run")
    assert shard.stat().st_mtime_ns == before  # refused before any work: nothing rewritten
    assert (tmp_path / "run" / "plan.json").read_bytes() == plan_before
