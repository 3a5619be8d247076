from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphaq.errors import AlphaQError
from alphaq.evaluation.artifacts import load_eval_run
from alphaq.report.eval_page import render_eval
from alphaq.report.hf_card import model_card_markdown, write_model_card
from alphaq.report.index_page import render_index
from alphaq.report.run_summary import read_run


def test_eval_page_shows_the_recorded_numbers(demo_run: Path) -> None:
    record = json.loads((demo_run / "eval.json").read_text(encoding="utf-8"))
    page = (demo_run / "eval.html").read_text(encoding="utf-8")
    assert f"{record['ppl']:.4f}" in page and f"{record['baseline']['ppl']:.4f}" in page
    assert f"{record['ppl_increase']:+.4f}".replace("-", "-") in page
    assert "Mean KL divergence" in page and f"{record['kld']['mean_kld']:.5f}" in page
    assert f"{100 * record['kld']['same_top']:.2f} %" in page
    for title in ("Plan verification", "Routing on the eval text", "Tensors"):
        assert title in page
    assert "only the first 2 windows" in page  # partial evaluation is flagged
    assert record["checkpoint"]["fingerprint"] in page  # provenance header
    assert page.count("<svg") >= 2  # error scatter and routing bars


def test_index_and_card_read_only_artifacts(demo_run: Path, tmp_path: Path) -> None:
    run = read_run(demo_run)
    assert run.stages == ["inspect", "plan", "quantize", "eval"]
    assert run.quantize_dir == demo_run / "quantized"
    card = model_card_markdown(run)
    assert (demo_run / "quantized" / "model_card.md").read_text(encoding="utf-8") == card
    index = (demo_run / "index.html").read_text(encoding="utf-8")
    assert "Pipeline" in index and "quantized/quantize.html" in index


def test_missing_artifacts_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(AlphaQError, match="no eval.json"):
        load_eval_run(tmp_path)
    with pytest.raises(AlphaQError, match="no eval.json"):
        render_eval(tmp_path)
    with pytest.raises(AlphaQError, match="no stage artifacts"):
        render_index(tmp_path)
    with pytest.raises(AlphaQError, match="no plan.json"):
        write_model_card(tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written
