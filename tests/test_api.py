"""The public face: alphaq.inspect / plan / quantize / evaluate / run, each (model, config, out)."""

from __future__ import annotations

import inspect as pyinspect
import json
from pathlib import Path

import pytest

import alphaq
from alphaq.errors import ConfigError


def test_every_stage_takes_model_config_out() -> None:
    for name in ("inspect", "plan", "quantize", "evaluate", "run"):
        params = list(pyinspect.signature(getattr(alphaq, name)).parameters)
        assert params[:3] == ["model", "config", "out"], name
    for name in ("InspectConfig", "PlanConfig", "QuantizeConfig", "EvalConfig", "RunConfig", "load_quantized"):
        assert getattr(alphaq, name) is not None
    assert set(alphaq.__all__) >= {"inspect", "plan", "quantize", "evaluate", "run", "load_quantized"}


def test_configs_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown quantization method 'gptx'"):
        alphaq.QuantizeConfig(plan="plan.json", method="gptx")
    with pytest.raises(ConfigError, match="either --quantized or --plan"):
        alphaq.EvalConfig(quantized="q", plan="plan.json")


def test_stages_chain_on_the_bundled_model(tmp_path: Path) -> None:
    ckpt = None  # the bundled demo MoE
    out = tmp_path / "run"
    result = alphaq.inspect(ckpt, alphaq.InspectConfig(experts_only=True), out)
    assert (out / "inspect.json").is_file() and len(result.experts) > 0
    planned = alphaq.plan(ckpt, alphaq.PlanConfig(budget="3", widths="2,4"), out)
    assert planned.plan.summary["average_payload_bits"] == pytest.approx(3.0, abs=0.01)
    saved = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    assert saved["plan_fingerprint"] == planned.plan.plan_fingerprint
    quantized = alphaq.quantize(ckpt, alphaq.QuantizeConfig(plan=out / "plan.json"), out / "quantized")
    assert quantized.manifest["totals"]["bytes_match_plan"] is True
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 400, encoding="utf-8")
    record = alphaq.evaluate(ckpt, alphaq.EvalConfig(plan=out / "plan.json", text_file=text,
                                                     options=alphaq.EvalOptions(max_windows=2)), out)
    assert record["source"]["kind"] == "simulated" and record["windows"] == 2
    assert (out / "eval.json").is_file()
