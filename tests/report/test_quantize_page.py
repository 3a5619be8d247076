"""quantize.html: rendered from a real quantize run of a tiny checkpoint, and from edited manifests."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from alphaq.errors import AlphaQError
from alphaq.load import open_checkpoint
from alphaq.quantization import run as qrun
from alphaq.report.page import fmt_bytes
from alphaq.report.quantize_page import TOP_TENSORS, quantize_page_html, render_quantize
from alphaq.report.run import render_run
from tests.quantization.test_run import make_plan
from tests.report.inspect_fixture import parse, section_html, tables_in

SECTION_IDS = ("summary", "totals-vs-plan", "error-vs-bits", "per-tensor-results", "shards")


@pytest.fixture(scope="module")
def quantized(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("quantize")
    model = tiny_checkpoints["gpt_oss"]
    plan = make_plan(
        open_checkpoint(model),
        folder / "plan.json",
        lambda m: (4 if m.expert != 1 else 16) if m.role.value == "expert" else 16,
    )
    qrun.run_quantize(model, plan, folder / "out", max_shard_bytes=60_000)
    return folder / "out"


@pytest.fixture(scope="module")
def page(quantized: Path) -> str:
    return render_quantize(quantized).read_text(encoding="utf-8")


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "quantize.json").read_text(encoding="utf-8"))


def test_page_is_one_offline_file_with_every_section(quantized: Path, page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert tuple(parse(page).section_ids) == SECTION_IDS
    assert page.count('<figure class="fig">') == 1 and page.count("<svg") == 1
    assert '<span class="current">Quantize</span>' in page
    manifest = manifest_of(quantized)
    for text in (
        manifest["checkpoint"]["fingerprint"],
        manifest["plan"]["fingerprint"],
        "plan fingerprint",
        "alphaq-groupwise-v1",
        "gpt_oss",
    ):
        assert text in page, text
    assert not list(quantized.glob(".quantize.html.*"))


def test_summary_cards_show_the_recorded_figures(quantized: Path, page: str) -> None:
    totals = manifest_of(quantized)["totals"]
    summary = section_html(page, "summary")
    assert "Tensors quantized" in summary and f">{totals['quantized_tensors']}<" in summary
    assert fmt_bytes(totals["quantized_bytes"]) in summary and "= plan to the byte" in summary
    assert "bytes = plan" in summary and "q-ok" in summary
    assert "rtn" in summary and "MB/s" in summary
    assert f"{totals['shards']} shards" in summary


def test_tables(quantized: Path, page: str) -> None:
    manifest = manifest_of(quantized)
    (tensors,) = tables_in(page, "per-tensor-results")
    assert tensors["total"] == tensors["rows"] == len(manifest["tensors"]) == 24  # 18 quantized + 6 split at 16
    (shards,) = tables_in(page, "shards")
    assert shards["rows"] == len(manifest["shards"]) > 1
    (totals,) = tables_in(page, "totals-vs-plan")
    assert totals["rows"] == 4  # experts, split experts, copied, checkpoint
    totals_html = section_html(page, "totals-vs-plan")
    assert f"{manifest['totals']['quantized_bytes']}" in totals_html


def test_rendering_is_deterministic_and_report_finds_the_stage(quantized: Path, page: str) -> None:
    assert render_quantize(quantized).read_text(encoding="utf-8") == page
    assert render_run(quantized) == [quantized / "quantize.html"]


def test_warnings_mismatch_and_long_tables(quantized: Path) -> None:
    manifest = copy.deepcopy(manifest_of(quantized))
    manifest["totals"]["bytes_match_plan"] = False
    manifest["warnings"] = ["the plan records no checkpoint fingerprint"]
    record = manifest["tensors"][0]
    manifest["tensors"] = [{**record, "name": f"m{i}", "rel_error": 0.001 * i} for i in range(TOP_TENSORS + 50)]
    html = quantize_page_html(manifest)
    warnings = html.split("<main>", 1)[1].split("</div>", 1)[0]
    assert "no checkpoint fingerprint" in warnings and "do not take the plan&#39;s predicted bytes" in warnings
    assert "bytes differ from the plan" in section_html(html, "summary")
    (tensors,) = tables_in(html, "per-tensor-results")
    assert tensors["total"] == tensors["rows"] == TOP_TENSORS
    first_row = re.search(r"<tbody><tr><td>(m\d+)</td>", section_html(html, "per-tensor-results"))
    assert first_row and first_row.group(1) == f"m{TOP_TENSORS + 49}"  # largest error first
    assert f"Top {TOP_TENSORS} of {TOP_TENSORS + 50}" in html


def test_nothing_quantized(quantized: Path) -> None:
    manifest = copy.deepcopy(manifest_of(quantized))
    manifest["tensors"] = []
    html = quantize_page_html(manifest)
    assert "No quantized matrix with a recorded error." in html and "every tensor was copied" in html
    assert "<svg" not in html


@pytest.mark.parametrize(
    "breakage, message", [("missing", "no quantize.json"), ("bad_json", "unreadable"), ("version", "schema_version 7")]
)
def test_bad_folders_give_one_line_errors(tmp_path: Path, breakage: str, message: str) -> None:
    tmp_path.mkdir(exist_ok=True)
    if breakage == "bad_json":
        (tmp_path / "quantize.json").write_text("{nope")
    elif breakage == "version":
        (tmp_path / "quantize.json").write_text(json.dumps({"schema_version": 7}))
    with pytest.raises(AlphaQError, match=message) as caught:
        render_quantize(tmp_path)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "quantize.html").exists()
