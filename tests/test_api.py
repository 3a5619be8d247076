"""The public face: alphaq.inspect / plan / quantize / evaluate / run, each (model, config, out)."""

from __future__ import annotations

import inspect as pyinspect
import json
import math
import re
from pathlib import Path

import pytest

import alphaq
from alphaq.errors import ConfigError


def test_every_stage_takes_model_config_out() -> None:
    for name in ("inspect", "plan", "quantize", "evaluate", "compare", "run"):
        params = pyinspect.signature(getattr(alphaq, name)).parameters
        assert list(params)[:3] == ["model", "config", "out"], name
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), name  # options travel in the config
    for name in (
        "InspectConfig",
        "PlanConfig",
        "QuantizeConfig",
        "EvalConfig",
        "CompareConfig",
        "RunConfig",
        "GptqOptions",
        "InspectResult",
        "PlanStageResult",
        "QuantizeResult",
        "EvalResult",
        "PipelineResult",
        "load_quantized",
    ):
        assert getattr(alphaq, name) is not None
    assert set(alphaq.__all__) >= {"inspect", "plan", "quantize", "evaluate", "compare", "run", "load_quantized"}


def test_one_progress_type() -> None:
    import alphaq.audit.run
    import alphaq.evaluation.compare
    import alphaq.evaluation.eval_run
    import alphaq.pipeline.run
    import alphaq.planning.run
    import alphaq.quantization.run
    from alphaq.progress import ProgressFn

    for module in (
        alphaq.audit.run,
        alphaq.evaluation.compare,
        alphaq.evaluation.eval_run,
        alphaq.pipeline.run,
        alphaq.planning.run,
        alphaq.quantization.run,
    ):
        assert module.ProgressFn is ProgressFn, module.__name__


def test_configs_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown quantization method 'gptx'"):
        alphaq.QuantizeConfig(plan="plan.json", method="gptx")
    with pytest.raises(ConfigError, match="either --quantized or --plan"):
        alphaq.EvalConfig(quantized="q", plan="plan.json")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "gptq"}, "gptq is calibrated on text; pass --calibration-text FILE"),
        ({"method": "rtn", "calibration_text": "t.txt"}, "used by --method gptq only, not rtn"),
        ({"method": "gptq", "calibration_text": "t.txt", "calibration_windows": 0}, "--calibration-windows 0"),
        ({"method": "hqq", "gptq": "damp"}, "must be an alphaq.quantization.gptq.GptqOptions"),
        ({"backend": "dask"}, "unknown backend 'dask'"),
        ({"ray_address": "ray://head:10001"}, "--ray-address needs --backend ray"),
        ({"backend": "ray", "ray_address": " "}, "--ray-address is empty"),
        ({"backend": "ray", "method": "gptq", "calibration_text": "t.txt"}, "--backend ray does not run calibrated"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"zero_points": "half"}, "zero_points must be float or integer"),
    ],
)
def test_quantize_config_refuses(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        alphaq.QuantizeConfig(plan="plan.json", **options)  # type: ignore[arg-type]


def test_quantize_config_carries_gptq_and_ray() -> None:
    config = alphaq.QuantizeConfig(
        plan="plan.json",
        method="gptq",
        calibration_text="calib.txt",
        calibration_windows=16,
        gptq=alphaq.GptqOptions(damp=0.05),
    )
    assert (config.method, config.calibration_windows, config.gptq.damp) == ("gptq", 16, 0.05)  # type: ignore[union-attr]
    ray = alphaq.QuantizeConfig(plan="plan.json", method="hqq", backend="ray", ray_address="ray://head:10001")
    assert (ray.backend, ray.ray_address) == ("ray", "ray://head:10001")
    # the method may come from the plan (None): its calibration text is then checked when the plan is read
    assert alphaq.QuantizeConfig(plan="plan.json", calibration_text="calib.txt").calibration_text == "calib.txt"


def test_plan_config_holds_the_stage_inputs() -> None:
    config = alphaq.PlanConfig(
        sweep_budgets="2.5, 3",
        sweep_allocators=["alphaq", "uniform"],
        calibration_text="calib.txt",
        inspect_dir="run",
        pattern_file="patterns.json",
    )
    assert config.budget.text == "3.5"  # the default budget
    assert config.sweep_budgets == ("2.5", "3") and config.sweep_allocators == ("alphaq", "uniform")
    assert (config.calibration_text, config.inspect_dir, config.pattern_file) == (
        Path("calib.txt"),
        Path("run"),
        Path("patterns.json"),
    )
    assert alphaq.PlanConfig().sweep_budgets == ()
    with pytest.raises(ConfigError, match="cannot read budget 'lots'"):
        alphaq.PlanConfig(sweep_budgets=("3", "lots"))
    with pytest.raises(ConfigError, match="--sweep-allocators 'best' is unknown"):
        alphaq.PlanConfig(sweep_budgets="3", sweep_allocators="alphaq,best")
    with pytest.raises(ConfigError, match="sweep_allocators is empty"):
        alphaq.PlanConfig(sweep_budgets="3", sweep_allocators="")
    with pytest.raises(ConfigError, match="inspect_dir='' must be a file or folder path"):
        alphaq.PlanConfig(inspect_dir="")


def test_compare_config_parses_and_refuses() -> None:
    config = alphaq.CompareConfig(
        budgets="2.5,3",
        allocators="alphaq, frequency",
        seeds="2,0,2",
        max_windows=4,
        plan=alphaq.PlanConfig(widths="2,4"),
        text_file="eval.txt",
    )
    assert config.budgets == ("2.5", "3") and config.allocators == ("alphaq", "frequency")
    assert config.seeds == (0, 2) and config.text_file == Path("eval.txt")
    assert config.options == alphaq.EvalOptions(max_windows=4)
    default = alphaq.CompareConfig()
    assert default.budgets == ("2.5", "3", "3.5") and default.seeds == (0, 1, 2) and default.resamples == 2000
    for options, message in [
        ({"budgets": ""}, "no budget given; pass --budgets 2.5,3,3.5"),
        ({"budgets": "3,lots"}, "cannot read budget 'lots'"),
        ({"allocators": "alphaq,best"}, "unknown allocator 'best'"),
        ({"seeds": "0,x"}, "--seeds '0,x' must be integers"),
        ({"seeds": ()}, "no seed given for the random allocator"),
        ({"resamples": 0}, "--resamples 0 must be a positive integer"),
        ({"level": 1.5}, "level=1.5 must be a coverage in (0, 1)"),
        ({"max_windows": 0}, "max_windows must be an integer >= 1"),
        ({"device": "tpu"}, "device must be cpu or cuda"),
        ({"plan": "3bits"}, "must be an alphaq.PlanConfig or None"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            alphaq.CompareConfig(**options)  # type: ignore[arg-type]


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
    evaluated = alphaq.evaluate(
        ckpt, alphaq.EvalConfig(plan=out / "plan.json", text_file=text, options=alphaq.EvalOptions(max_windows=2)), out
    )
    assert isinstance(evaluated, alphaq.EvalResult) and evaluated.out_dir == out
    assert evaluated.kind == "simulated" and evaluated.windows == 2
    saved_eval = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert evaluated.ppl == pytest.approx(saved_eval["ppl"]) and evaluated.ppl == pytest.approx(math.exp(evaluated.nll))
    assert evaluated.baseline_ppl == pytest.approx(saved_eval["baseline"]["ppl"])
    assert evaluated.ppl_increase == pytest.approx(evaluated.ppl - evaluated.baseline_ppl)
    assert evaluated.to_dict() == saved_eval
