"""gguf_presets.html from small saved bench/gguf_presets.py files: the numbers, the verdicts, no absolute paths,
and one-line errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from alphaq.cli.reports import gguf_presets
from alphaq.errors import AlphaQError
from alphaq.report.gguf_page import GGUF_PRESETS_HTML, interval_text, render_gguf_presets, verdict
from alphaq.report.gguf_tables import fmt_value

LLAMA = {
    "root": "/home/someone/.cache/alphaq/llama.cpp/0.3.36",
    "quantize": "/home/someone/.cache/alphaq/llama.cpp/0.3.36/bin/llama-quantize",
    "perplexity": "/home/someone/.cache/alphaq/llama.cpp/0.3.36/bin/llama-perplexity",
    "imatrix": None,
    "converter": "/home/someone/.cache/alphaq/llama.cpp/0.3.36/convert_hf_to_gguf.py",
    "llama_cpp_python": "0.3.36",
    "llama_cpp_commit": "abcdef0123456789",
}
HEAD = {
    "model": "tiny",
    "fingerprint": "feedbeef00112233",
    "ctx": 256,
    "chunks": 8,
    "machine": "x86_64, Linux",
    "llama_cpp": LLAMA,
    "preset_bytes": {"Q2_K": 10_000_000, "Q4_K_M": 16_000_000},
    "f16_bytes": 50_000_000,
    "seconds": 600.0,
}
# (method, Q2_K mean KLD, Q2_K interval or None, Q4_K_M mean KLD, Q4_K_M interval or None)
METHODS = [
    ("preset", 0.25, None, 0.04321, None),
    ("imatrix preset (calibrated)", 0.2, (-0.05, -0.06, -0.04), 0.04, (-0.00321, -0.006, 0.0001)),
    ("alphaq default (fisher)", 0.19, (-0.06, -0.08, -0.03), 0.03811, (-0.0051, -0.008, -0.002)),
    ("alphaq alpha (AlphaQ, gamma 16)", 0.31, (0.06, 0.02, 0.09), 0.05, (0.00679, 0.003, 0.0095)),
    ("uniform (every weight alike)", 0.26, (0.01, -0.01, 0.03), 0.044, (0.00079, -0.001, 0.002)),
    ("calibrated plan (imatrix-weighted)", 0.18, (-0.07, -0.09, -0.05), 0.036, (-0.00721, -0.009, -0.005)),
]


def _row(text: str, preset: str, method: str, kld: float, vs: tuple[float, float, float] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "text": text,
        "preset": preset,
        "method": method,
        "file_bytes": 9_876_543 if preset == "Q2_K" else 15_432_109,
        "mean_kld": kld,
        "mean_kld_unc": kld / 50,
        "median_kld": kld / 2,
        "p99_kld": kld * 4,
        "same_top": 0.9123 if method == "preset" else 0.9,
        "ppl": 15.432 if preset == "Q4_K_M" else 22.5,
    }
    if vs is not None:
        row["tokens_per_window"] = 255
        row["vs_preset"] = dict(zip(("diff", "low", "high"), vs))
    return row


def results_record() -> dict[str, Any]:
    rows = []
    for preset in ("Q4_K_M", "Q2_K"):  # file order differs from the page's (Q2_K first)
        for method, k2, v2, k4, v4 in METHODS:
            rows.append(
                _row("wikitext2_test", preset, method, k2 if preset == "Q2_K" else k4, v2 if preset == "Q2_K" else v4)
            )
    return {**HEAD, "rows": rows}


def study_record(*, scores: bool = True) -> dict[str, Any]:
    rows = []
    for text in ("wikitext2_valid", "shakespeare_heldout"):
        for method, kld in (("preset", 0.061), ("relative", 0.07), ("fisher", 0.0523)):
            row = _row(text, "Q3_K_M", method, kld, None)
            rows.append({k: v for k, v in row.items() if k != "tokens_per_window"})
    record = {**HEAD, "rows": rows}
    if scores:
        record["form_scores"] = {"relative": 1.147, "fisher": 0.857}
    return record


def _write(folder: Path, name: str, record: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps(record) if not isinstance(record, str) else record, encoding="utf-8")
    return path


@pytest.fixture
def page(tmp_path: Path) -> str:
    files = [
        _write(tmp_path, "gguf_presets_tiny.json", results_record()),
        _write(tmp_path, "gguf_study_tiny.json", study_record()),
    ]
    out = render_gguf_presets(files, tmp_path / "out")
    assert out == tmp_path / "out" / GGUF_PRESETS_HTML
    assert [p.name for p in out.parent.iterdir()] == [GGUF_PRESETS_HTML]  # atomic: no temporaries left
    return out.read_text(encoding="utf-8")


def _cells(page: str, method: str, preset: str) -> list[str]:
    """The text of the results table's cells in the row of ``preset`` and ``method``."""
    for row in re.findall(r"<tr>(.*?)</tr>", page):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        if cells[:2] == [preset, method]:
            return cells
    raise AssertionError(f"no row {preset} {method}")


def test_results_table_shows_the_saved_numbers_and_verdicts(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and "<script src" not in page and "<link" not in page
    # preset, method, file MB, mean KLD, interval, p99, same top %, ppl, verdict
    assert _cells(page, "preset", "Q4_K_M") == [
        "Q4_K_M", "preset", "15.432", "0.04321", "reference", "0.17284", "91.230", "15.432", "reference"
    ]  # fmt: skip
    assert _cells(page, "alphaq default (fisher)", "Q4_K_M") == [
        "Q4_K_M", "alphaq default (fisher)", "15.432", "0.03811", "-0.00510 [-0.00800, -0.00200]",
        "0.15244", "90.000", "15.432", "win",
    ]  # fmt: skip
    assert _cells(page, "alphaq alpha (AlphaQ, gamma 16)", "Q2_K")[3:5] == ["0.31000", "+0.06000 [+0.02000, +0.09000]"]
    assert _cells(page, "alphaq alpha (AlphaQ, gamma 16)", "Q2_K")[-1] == "loss"
    assert _cells(page, "uniform (every weight alike)", "Q2_K")[-1] == "tie"
    assert _cells(page, "imatrix preset (calibrated)", "Q4_K_M")[-1] == "tie"  # interval reaches above 0
    assert _cells(page, "preset", "Q2_K")[2:4] == ["9.8765", "0.25000"]
    assert _cells(page, "alphaq alpha (AlphaQ, gamma 16)", "Q2_K")[5] == "1.2400"  # p99
    assert page.index(">Q2_K<") < page.index(">Q4_K_M<")  # presets from small to large, whatever the file order
    assert '<td class="q-ok">win</td>' in page and '<td class="q-bad">loss</td>' in page and "<td>tie</td>" in page
    # verdict tally: method, win, tie, loss
    tally = dict(
        (cells[0], cells[1:])
        for cells in (re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", page))
        if len(cells) == 4 and cells[1].isdigit()
    )
    assert tally["alphaq default (fisher)"] == ["2", "0", "0"]
    assert tally["alphaq alpha (AlphaQ, gamma 16)"] == ["0", "0", "2"]
    assert tally["imatrix preset (calibrated)"] == ["1", "1", "0"]
    assert "feedbeef00112233" in page and "abcdef012345" in page and "8 \u00d7 256 tokens" in page
    assert page.count("<svg") == 1 and "file size vs mean KL divergence" in page


def test_study_section_shows_forms_scores_best_first_and_the_held_out_sentence(page: str) -> None:
    assert "never on the test text" in page and "wikitext2_valid, shakespeare_heldout" in page
    scores = page.split("Form scores, best first")[0]
    assert scores.rindex(">fisher<") < scores.rindex(">relative<")
    assert ">0.857<" in page and ">1.147<" in page and ">default<" in page
    assert "on wikitext2_valid, per importance form" in page and "on shakespeare_heldout, per importance form" in page
    study = page.split("importance-form study")[-1]
    assert study.count("<th>form</th>") == 3  # the scores and one grid per text
    assert study.count('<th class="num">Q3_K_M</th>') == 2
    assert ">0.05230<" in page and ">0.06100<" in page and ">0.07000<" in page


def test_page_holds_no_absolute_paths(page: str, tmp_path: Path) -> None:
    assert str(tmp_path) not in page
    for prefix in ("/home/", "/tmp/", "/work/", "/root/", "/Users/"):
        assert prefix not in page
    assert "gguf_presets_tiny.json" in page  # files named by their name only


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    files = [_write(tmp_path, "gguf_presets_tiny.json", results_record())]
    first = render_gguf_presets(files, tmp_path / "a").read_bytes()
    assert render_gguf_presets(files, tmp_path / "b").read_bytes() == first


def test_partial_study_is_flagged_not_recomputed(tmp_path: Path) -> None:
    files = [_write(tmp_path, "gguf_study_tiny.json", study_record(scores=False))]
    page = render_gguf_presets(files, tmp_path).read_text(encoding="utf-8")
    assert "no form scores (a partial study run)" in page and "Form scores, best first" not in page
    assert ">0.05230<" in page


def test_verdict_reads_the_interval() -> None:
    assert verdict({"diff": -1, "low": -2, "high": -0.5}) == "win"
    assert verdict({"diff": 1, "low": 0.5, "high": 2}) == "loss"
    assert verdict({"diff": 0, "low": -1, "high": 0.0}) == "tie"  # touching 0 is not below it
    assert verdict(None) == verdict({"low": None, "high": 1}) == "\u2014"
    assert interval_text({"diff": 2e-4, "low": -1e-4, "high": 5e-4}) == "+0.000200 [-0.000100, +0.000500]"
    assert interval_text({"diff": 2e-6, "low": -1e-6, "high": 5e-6}) == "+2.00e-06 [-1.00e-06, +5.00e-06]"
    assert [fmt_value(v) for v in (1234.56, 15.4321, 1.23456, 0.012345678, 0.000833, 3.21e-6, None)] == [
        "1234.6", "15.432", "1.2346", "0.01235", "0.000833", "3.210e-06", "\u2014"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.json", None, "absent.json: not found"),
        ("broken.json", "{not json", "broken.json: unreadable (not valid JSON"),
        ("list.json", "[1, 2]", "list.json: holds a JSON list, not an object"),
        ("empty.json", {**HEAD, "rows": []}, "empty.json: no rows"),
        ("norows.json", HEAD, "norows.json: no rows"),
        ("nokld.json", {**HEAD, "rows": [{"text": "t", "preset": "Q2_K", "method": "preset", "file_bytes": 1}]},
         "nokld.json: row 0 has no 'mean_kld'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_alphaq_error_line(tmp_path: Path, name: str, content: Any, message: str) -> None:
    path = tmp_path / name if content is None else _write(tmp_path, name, content)
    with pytest.raises(AlphaQError) as info:
        render_gguf_presets([path], tmp_path / "out")
    text = str(info.value)
    assert message in text and "\n" not in text and "bench/gguf_presets.py" in text
    assert not (tmp_path / "out").exists()  # nothing half-written
    with pytest.raises(AlphaQError, match="no result files given"):
        render_gguf_presets([], tmp_path / "out")


def test_cli_command_prints_the_page_or_one_error_line(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(gguf_presets)
    app.command("other")(lambda: None)  # a group, so the command is invoked by name as the app registers it
    runner = CliRunner()
    good = _write(tmp_path, "gguf_presets_tiny.json", results_record())
    done = runner.invoke(app, ["gguf-presets", str(good), "--out", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == str(tmp_path / "out" / GGUF_PRESETS_HTML)
    bad = runner.invoke(app, ["gguf-presets", str(tmp_path / "absent.json"), "--out", str(tmp_path / "out2")])
    assert bad.exit_code == 2
    assert bad.output.strip().count("\n") == 0 and bad.output.startswith("error: ") and "not found" in bad.output
