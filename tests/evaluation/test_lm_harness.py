"""alphaq.evaluation.lm_harness and ``alphaq lmeval`` with a fake ``lm_eval`` module (no test reaches a hub)."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from alphaq.errors import AlphaQError, ConfigError
from alphaq.evaluation import lm_harness

MISSING = "lm-evaluation-harness is not installed; pip install 'alphaq[lmeval]'"


def _results(tasks: list[str], limit: int | None, batch_size: int) -> dict[str, Any]:
    """What lm_eval 0.4's simple_evaluate returns (trimmed), for arc_easy and hellaswag."""
    per_task = {
        "arc_easy": {
            "name": "arc_easy",
            "alias": "arc_easy",
            "sample_len": 2376,
            "acc,none": 0.5,
            "acc_stderr,none": 0.05,
            "acc_norm,none": 0.625,
            "acc_norm_stderr,none": 0.0484,
        },
        "hellaswag": {
            "alias": "hellaswag",
            "acc_norm,none": 0.3,
            "acc_norm_stderr,none": 0.0458,
            "acc,none": 0.25,
            "acc_stderr,none": "N/A",
        },
    }
    original = {"arc_easy": 2376, "hellaswag": 10042}
    return {
        "results": {t: per_task[t] for t in tasks},
        "group_subtasks": {t: [] for t in tasks},
        "configs": {t: {"task": t, "output_type": "multiple_choice", "num_fewshot": 0} for t in tasks},
        "versions": {t: 1.0 for t in tasks},
        "n-shot": {t: 0 for t in tasks},
        "higher_is_better": {t: {"acc": True, "acc_norm": True} for t in tasks},
        "n-samples": {t: {"original": original[t], "effective": min(limit or original[t], original[t])} for t in tasks},
        "config": {"model": "HFLM", "model_args": None, "batch_size": batch_size, "limit": limit},
        "git_hash": None,
        "date": 1767225600.0,
    }


class _Fake:
    """A fake ``lm_eval`` package: HFLM records its init arguments, simple_evaluate its call."""

    def __init__(self, error: Exception | None = None) -> None:
        self.hflm_kwargs: dict[str, Any] = {}
        self.evaluate_kwargs: dict[str, Any] = {}
        fake = self

        class HFLM:
            def __init__(self, **kwargs: Any) -> None:
                fake.hflm_kwargs = kwargs

        def simple_evaluate(**kwargs: Any) -> dict[str, Any]:
            fake.evaluate_kwargs = kwargs
            if error is not None:
                raise error
            return _results(kwargs["tasks"], kwargs["limit"], kwargs["model"].batch_size_seen)

        HFLM.batch_size_seen = property(lambda self: fake.hflm_kwargs["batch_size"])  # type: ignore[attr-defined]
        self.HFLM = HFLM
        self.root = types.ModuleType("lm_eval")
        self.root.__version__ = "0.4.9-fake"  # type: ignore[attr-defined]
        self.root.simple_evaluate = simple_evaluate  # type: ignore[attr-defined]
        self.models = types.ModuleType("lm_eval.models")
        self.huggingface = types.ModuleType("lm_eval.models.huggingface")
        self.huggingface.HFLM = HFLM  # type: ignore[attr-defined]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> _Fake:
        monkeypatch.setitem(sys.modules, "lm_eval", self.root)
        monkeypatch.setitem(sys.modules, "lm_eval.models", self.models)
        monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", self.huggingface)
        return self


def _no_lm_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("lm_eval", "lm_eval.models", "lm_eval.models.huggingface"):
        monkeypatch.setitem(sys.modules, name, None)


def test_run_lm_eval_on_the_demo_model_writes_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from alphaq._version import __version__

    fake = _Fake().install(monkeypatch)
    record = lm_harness.run_lm_eval(
        None, tasks=["arc_easy", "hellaswag"], limit=10, batch_size=4, out_dir=tmp_path / "run"
    )

    pretrained = fake.hflm_kwargs["pretrained"]
    assert isinstance(pretrained, PreTrainedModel) and not pretrained.training
    assert pretrained.config.model_type == "mixtral" and str(pretrained.device) == "cpu"
    assert isinstance(fake.hflm_kwargs["tokenizer"], PreTrainedTokenizerBase)
    assert fake.hflm_kwargs["batch_size"] == 4 and set(fake.hflm_kwargs) == {"pretrained", "tokenizer", "batch_size"}
    assert isinstance(fake.evaluate_kwargs["model"], fake.HFLM)
    assert fake.evaluate_kwargs["tasks"] == ["arc_easy", "hellaswag"]
    assert fake.evaluate_kwargs["num_fewshot"] == 0 and fake.evaluate_kwargs["limit"] == 10

    rows = [(r["task"], r["metric"], r["value"], r["stderr"]) for r in record["rows"]]
    assert rows[:3] == [
        ("arc_easy", "acc", 0.5, 0.05),
        ("arc_easy", "acc_norm", 0.625, 0.0484),
        ("hellaswag", "acc", 0.25, rows[2][3]),
    ]
    assert math.isnan(rows[2][3])  # lm-eval's "N/A" stderr
    assert rows[3] == ("hellaswag", "acc_norm", 0.3, 0.0458) and len(rows) == 4

    written = json.loads((tmp_path / "run" / "lmeval.json").read_text())
    assert written["versions"] == {"alphaq": __version__, "lm_eval": "0.4.9-fake"}
    assert written["source"] == {"kind": "original", "model": "alphaq:demo-moe", "quantized": None}  # by name
    assert written["options"] == {
        "tasks": ["arc_easy", "hellaswag"],
        "num_fewshot": 0,
        "limit": 10,
        "batch_size": 4,
        "device": "cpu",
    }
    assert written["n_samples"] == {
        "arc_easy": {"original": 2376, "effective": 10},
        "hellaswag": {"original": 10042, "effective": 10},
    }
    assert written["task_versions"] == {"arc_easy": 1.0, "hellaswag": 1.0}
    assert written["rows"][2] == {"task": "hellaswag", "metric": "acc", "filter": "none", "value": 0.25, "stderr": None}
    assert written["rows"][0] == {"task": "arc_easy", "metric": "acc", "filter": "none", "value": 0.5, "stderr": 0.05}


def test_run_lm_eval_loads_a_quantized_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from alphaq.load.model import load_model
    from alphaq.quantization import loading

    calls: list[tuple[Any, Any]] = []

    def fake_load_quantized(path: Any, *, device: Any = "cpu", dtype: Any = None) -> Any:
        calls.append((path, device))
        return load_model(None, device=device)

    monkeypatch.setattr(loading, "load_quantized", fake_load_quantized)
    fake = _Fake().install(monkeypatch)
    record = lm_harness.run_lm_eval(tmp_path / "ignored", quantized=tmp_path / "q", tasks="arc_easy", num_fewshot=5)
    assert calls == [(tmp_path / "q", "cpu")]
    assert record["source"] == {"kind": "quantized", "model": None, "quantized": str(tmp_path / "q")}
    assert fake.evaluate_kwargs["num_fewshot"] == 5 and fake.evaluate_kwargs["limit"] is None
    assert [r["task"] for r in record["rows"]] == ["arc_easy", "arc_easy"]


def test_missing_lm_eval_is_a_one_line_error_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import alphaq.load.model

    _no_lm_eval(monkeypatch)
    monkeypatch.setattr(alphaq.load.model, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(AlphaQError) as info:
        lm_harness.run_lm_eval(None, tasks=["arc_easy"])
    assert str(info.value) == MISSING


def test_bad_options_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_lm_eval(monkeypatch)  # options are checked first
    for kwargs, match in [
        ({"tasks": [" ", ""]}, "no lm-eval task"),
        ({"tasks": "a", "num_fewshot": -1}, "num_fewshot"),
        ({"tasks": "a", "limit": 0}, "limit must be >= 1"),
        ({"tasks": "a", "batch_size": 0}, "batch_size"),
    ]:
        with pytest.raises(ConfigError, match=match):
            lm_harness.run_lm_eval(None, **kwargs)


def test_lm_eval_failure_becomes_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _Fake(error=ValueError("Tasks not found: arc_eazy.\nTry `lm-eval ls tasks`")).install(monkeypatch)
    with pytest.raises(AlphaQError) as info:
        lm_harness.run_lm_eval(None, tasks=["arc_eazy"])
    message = str(info.value)
    assert "\n" not in message and "Tasks not found: arc_eazy." in message and "lm-eval ls tasks" in message


def test_parse_tasks_and_metric_rows() -> None:
    assert lm_harness.parse_tasks(" arc_easy, ,hellaswag,arc_easy ") == ("arc_easy", "hellaswag")
    assert lm_harness.parse_tasks(["piqa", "arc_easy,winogrande"]) == ("piqa", "arc_easy", "winogrande")
    results = {
        "gsm8k": {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.1,
            "exact_match_stderr,strict-match": 0.01,
            "exact_match,flexible-extract": 0.2,
            "exact_match_stderr,flexible-extract": "N/A",
        },
        "wikitext": {
            "alias": "wikitext",
            "word_perplexity,none": 30.5,
            "word_perplexity_stderr,none": "N/A",
            "bits_per_byte,none": 0.9,
            "note,none": "text",
        },
        "piqa": {"sample_len": 1838, "acc_norm,none": 0.7, "acc,none": 0.69, "acc_stderr,none": 0.01},
    }
    rows = [(r["task"], r["metric"], r["filter"], r["value"]) for r in lm_harness.metric_rows(results)]
    assert rows == [
        ("gsm8k", "exact_match", "strict-match", 0.1),
        ("gsm8k", "exact_match", "flexible-extract", 0.2),
        ("wikitext", "word_perplexity", "none", 30.5),
        ("wikitext", "bits_per_byte", "none", 0.9),
        ("piqa", "acc", "none", 0.69),
        ("piqa", "acc_norm", "none", 0.7),
    ]
    table = lm_harness.format_rows(lm_harness.metric_rows(results)).splitlines()
    assert table[0].split() == ["task", "metric", "value", "stderr"]
    assert table[1].split() == ["gsm8k", "exact_match", "(strict-match)", "0.1000", "0.0100"]
    assert table[-1].split() == ["piqa", "acc_norm", "0.7000", "-"]


def _app() -> typer.Typer:
    from alphaq.cli.lmeval import lmeval

    app = typer.Typer()
    app.command()(lmeval)

    @app.callback()
    def main() -> None:
        """Test app."""

    return app


def test_lmeval_command_prints_the_table_and_writes_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Fake().install(monkeypatch)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        _app(), ["lmeval", "--out", str(out), "--tasks", "arc_easy, hellaswag", "--limit", "5", "--batch-size", "2"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert ["arc_easy", "acc", "0.5000", "0.0500"] in [line.split() for line in lines]
    assert ["hellaswag", "acc", "0.2500", "-"] in [line.split() for line in lines]
    assert f"wrote {out / 'lmeval.json'}" in result.output and "original model, 0-shot, limit 5" in result.output
    assert fake.evaluate_kwargs["tasks"] == ["arc_easy", "hellaswag"] and fake.hflm_kwargs["batch_size"] == 2
    assert json.loads((out / "lmeval.json").read_text())["options"]["limit"] == 5


def test_lmeval_command_default_tasks_and_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from alphaq.cli.lmeval import DEFAULT_TASKS

    assert tuple(DEFAULT_TASKS.split(",")) == lm_harness.DEFAULT_TASKS
    _no_lm_eval(monkeypatch)
    result = CliRunner().invoke(_app(), ["lmeval", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and MISSING in result.output
    assert not (tmp_path / "x" / "lmeval.json").exists()
