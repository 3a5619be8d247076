from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphaq.audit.artifacts import InspectRun, Spectrum, load_inspect_run
from alphaq.errors import AlphaQError
from alphaq.report.inspect_page import render_inspect
from tests.report.inspect_fixture import (
    FAILED_EXPERT,
    SECTION_IDS,
    make_details,
    parse,
    section_html,
    tables_in,
    write_inspect_run,
)


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inspect_run(tmp_path_factory.mktemp("moe") / "run")


@pytest.fixture(scope="module")
def moe_html(moe_run: Path) -> str:
    return render_inspect(moe_run).read_text(encoding="utf-8")


def test_load_inspect_run_types_and_counts(moe_run: Path) -> None:
    run = load_inspect_run(moe_run)
    assert isinstance(run, InspectRun)
    assert run.manifest["checkpoint"]["num_experts"] == 8
    # embedding + 3 x (4 attention + router + 8 x 3 expert) + lm_head
    assert len(run.details) == 1 + 3 * (4 + 1 + 24) + 1
    assert len(run.experts) == 24
    assert str(run.details["layer"].dtype) == "Int64" and str(run.experts["rank_global"].dtype) == "Int64"
    assert run.details["warning"].isna().sum() == 0 and set(run.details["warning"]) <= {
        "",
        "over-trained",
        "under-trained",
    }
    failed = run.experts[(run.experts["layer"] == FAILED_EXPERT[0]) & (run.experts["expert"] == FAILED_EXPERT[1])]
    assert failed["quality"].tolist() == ["failed"] and np.isnan(failed["alpha_mean"].iloc[0])
    assert run.spectra and all(isinstance(s, Spectrum) for s in run.spectra.values())
    assert not any("::" in name for name in run.spectra)
    first = next(iter(run.spectra.values()))
    assert first.xmin == 1.0 and 2.0 < first.alpha < 8.0 and np.all(np.diff(first.evals) >= 0)
    assert run.load_warnings == ()


def test_page_is_one_offline_file(moe_run: Path, moe_html: str) -> None:
    assert (moe_run / "inspect.html").is_file()
    assert moe_html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", moe_html, re.I)
    assert "http://" not in moe_html and "https://" not in moe_html
    assert "<link" not in moe_html and "<script src" not in moe_html and "@import" not in moe_html
    assert not list(moe_run.glob(".inspect.html.*"))  # atomic write left no temporary file


def test_page_sections_figures_and_provenance(moe_html: str) -> None:
    assert tuple(parse(moe_html).section_ids) == SECTION_IDS
    assert moe_html.count('<figure class="fig">') == 3
    assert moe_html.count("<svg") == 3  # heatmap, distribution, ESD (inline SVG)
    assert moe_html.count("data:image/png;base64,") == 2  # heatmap cells and colorbar, rasterized inside the SVG
    for text in ("synthetic-moe-3x8", "mixtral", "0123456789abcdef", "0.1.0", "2025-01-02T03:04:05+00:00"):
        assert text in moe_html
    assert "Best: layer" in moe_html and "Median: layer" in moe_html and "Worst: layer" in moe_html


def test_summary_cards(moe_html: str) -> None:
    summary = section_html(moe_html, "summary")
    assert "Experts per layer" in summary and ">8<" in summary
    assert ">1 failed</span>" in summary  # the expert with no fit
    assert "1 under-trained" in summary
    assert "model.layers.0.mlp.experts.2.gate_proj \u2014 failed: power-law fit did not converge" in summary
    assert "12.3 s" in summary


def test_tables_have_the_right_row_counts(moe_run: Path, moe_html: str) -> None:
    run = load_inspect_run(moe_run)
    ranking = tables_in(moe_html, "expert-ranking")
    assert [(t["total"], t["rows"]) for t in ranking] == [(24, 24)]  # few experts: the full table
    layers = tables_in(moe_html, "per-layer-summary")
    assert [(t["total"], t["rows"]) for t in layers] == [(3, 3)]
    bad = int((run.details["status"] != "success").sum())
    assert bad == 1 + 3 + 1  # embedding skipped, failed expert's 3 matrices, one down_proj
    warnings = tables_in(moe_html, "warnings")
    assert [(t["total"], t["rows"]) for t in warnings] == [(bad, bad)]
    by_role = tables_in(moe_html, "alpha-distribution")
    assert by_role[0]["total"] == 4 + 1 + 3 + 1  # (role, proj): attention x4, router, expert x3, lm_head
    assert "under-trained" in section_html(moe_html, "expert-ranking")


def test_ranking_order_and_nan_rows(moe_html: str) -> None:
    ranking = section_html(moe_html, "expert-ranking")
    body = ranking.split("<tbody>", 1)[1]
    first_rank = re.search(r'<td class="num" data-v="(\d+)">', body).group(1)
    assert first_rank == "1"
    # the failed expert: ranks, alphas and z shown as sortable-last em dashes
    assert body.count('<td class="num na" data-v="">\u2014</td>') == 7
    assert "q-bad" in ranking  # failed / under-trained badges


def test_rendering_is_deterministic(moe_run: Path, moe_html: str) -> None:
    again = render_inspect(moe_run).read_text(encoding="utf-8")
    assert again == moe_html


def test_heatmap_marks_failed_cells(moe_html: str) -> None:
    heatmap = section_html(moe_html, "alpha-heatmap")
    assert "<svg" in heatmap and ">failed<" in heatmap  # annotated NaN cell


def test_dense_checkpoint(tmp_path: Path) -> None:
    folder = write_inspect_run(tmp_path / "dense", layers=2, dense=True)
    html = render_inspect(folder).read_text(encoding="utf-8")
    assert "No routed experts in this checkpoint" in section_html(html, "alpha-heatmap")
    assert "No routed experts to rank" in section_html(html, "expert-ranking")
    assert "none (dense)" in section_html(html, "summary")
    assert [t["total"] for t in tables_in(html, "per-layer-summary")] == [2]
    assert "Saved spectra" in section_html(html, "spectra-esd")
    assert html.count("<svg") == 2  # distribution and ESD


def test_single_layer(tmp_path: Path) -> None:
    folder = write_inspect_run(tmp_path / "one", layers=1, experts=4)
    html = render_inspect(folder).read_text(encoding="utf-8")
    assert [t["total"] for t in tables_in(html, "per-layer-summary")] == [1]
    assert [t["total"] for t in tables_in(html, "expert-ranking")] == [4]


def test_missing_spectra_and_all_failed(tmp_path: Path) -> None:
    folder = write_inspect_run(tmp_path / "nospec", layers=2, experts=4, spectra=False)
    details = pd.read_csv(folder / "details.csv")
    details["status"], details["alpha"] = "failed", np.nan
    details.to_csv(folder / "details.csv", index=False)
    experts = pd.read_csv(folder / "experts.csv")
    experts[["alpha_mean", "alpha_min", "alpha_max", "rank_global", "rank_in_layer", "robust_z"]] = np.nan
    experts["quality"], experts["status"] = "failed", "failed"
    experts.to_csv(folder / "experts.csv", index=False)
    run = load_inspect_run(folder)
    assert run.spectra == {} and "spectra.npz not found" in run.load_warnings[0]
    html = render_inspect(folder).read_text(encoding="utf-8")
    assert "No spectra saved" in section_html(html, "spectra-esd")
    assert "No successful fit" in section_html(html, "alpha-distribution")
    assert "spectra.npz not found" in html.split("<main>", 1)[1].split("</div>", 1)[0]  # the warnings box
    assert "8 failed" in section_html(html, "summary")
    assert "Not ranked" not in html or "<svg" in section_html(html, "alpha-heatmap")


@pytest.mark.parametrize("damage", ["not_a_zip", "truncated"])
def test_corrupt_spectra_is_a_warning(tmp_path: Path, damage: str) -> None:
    folder = write_inspect_run(tmp_path / "badspec", layers=1, experts=4)
    data = (folder / "spectra.npz").read_bytes()
    (folder / "spectra.npz").write_bytes(b"not a zip" if damage == "not_a_zip" else data[: len(data) // 2])
    run = load_inspect_run(folder)
    assert run.spectra == {} and "spectra.npz is unreadable" in run.load_warnings[0]
    assert "No spectra saved" in render_inspect(folder).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_folder", "inspect run folder not found"),
        ("no_manifest", "no inspect.json"),
        ("bad_json", "inspect.json: unreadable"),
        ("newer_schema", "upgrade alphaq"),
        ("older_schema", "re-run alphaq inspect"),
        ("bool_schema", "schema_version True is not 1"),
        ("wrong_stage", "not an inspect manifest"),
        ("no_details", "details.csv: not found"),
        ("empty_experts", "experts.csv: unreadable CSV"),
        ("missing_columns", "details.csv: missing columns alpha, status"),
    ],
)
def test_bad_folders_give_one_line_errors(tmp_path: Path, breakage: str, message: str) -> None:
    folder = write_inspect_run(tmp_path / "run", layers=1, experts=4, spectra=False)
    manifest = json.loads((folder / "inspect.json").read_text())
    if breakage == "no_folder":
        folder = tmp_path / "absent"
    elif breakage == "no_manifest":
        (folder / "inspect.json").unlink()
    elif breakage == "bad_json":
        (folder / "inspect.json").write_text("{not json")
    elif breakage in ("newer_schema", "older_schema", "bool_schema", "wrong_stage"):
        key, value = {
            "newer_schema": ("schema_version", 2),
            "older_schema": ("schema_version", 0),
            "bool_schema": ("schema_version", True),
            "wrong_stage": ("stage", "plan"),
        }[breakage]
        (folder / "inspect.json").write_text(json.dumps({**manifest, key: value}))
    elif breakage == "no_details":
        (folder / "details.csv").unlink()
    elif breakage == "empty_experts":
        (folder / "experts.csv").write_text("")
    elif breakage == "missing_columns":
        pd.read_csv(folder / "details.csv").drop(columns=["alpha", "status"]).to_csv(
            folder / "details.csv", index=False
        )
    with pytest.raises(AlphaQError, match=re.escape(message)) as info:
        render_inspect(folder)
    assert "\n" not in str(info.value)
    assert not (folder / "inspect.html").exists()


def test_large_model_page_stays_small(tmp_path: Path) -> None:
    start = time.perf_counter()
    folder = write_inspect_run(tmp_path / "big", layers=48, experts=64, hidden=2048)
    html_path = render_inspect(folder)
    size = html_path.stat().st_size
    assert size < 2_000_000, size
    html = html_path.read_text(encoding="utf-8")
    ranking = tables_in(html, "expert-ranking")
    assert [(t["total"], t["rows"]) for t in ranking] == [(10, 10), (10, 10), (1, 1)]  # top, bottom, not ranked
    assert [t["total"] for t in tables_in(html, "per-layer-summary")] == [48]
    assert time.perf_counter() - start < 60


def test_real_inspect_run_renders(tmp_path: Path) -> None:
    """End to end with the inspect stage on a tiny random Mixtral (skips until the diagnostics land)."""
    pytest.importorskip("alphaq.diagnostics.esd_metrics")
    pytest.importorskip("alphaq.diagnostics.spectrum")
    from alphaq.audit.run import InspectConfig, inspect, save_inspect
    from tests.fixtures.tiny_models import SPECS, make_tiny_checkpoint

    spec = next(s for s in SPECS if s.model_type == "mixtral")
    checkpoint = make_tiny_checkpoint(spec, tmp_path / "ckpt")
    out = save_inspect(inspect(checkpoint, InspectConfig(fit="ww", tail_test=False)), tmp_path / "run")
    html = render_inspect(out).read_text(encoding="utf-8")
    assert tuple(parse(html).section_ids) == SECTION_IDS
    assert [t["total"] for t in tables_in(html, "expert-ranking")][0] == spec.moe_layers * 4


def test_reads_what_save_inspect_writes(tmp_path: Path) -> None:
    """The inspect stage's own writer (save_inspect) produces a folder this reader renders."""
    from alphaq.audit.expert_quality import expert_rows
    from alphaq.audit.run import InspectResult, save_inspect

    source = write_inspect_run(tmp_path / "synthetic", layers=2, experts=4)
    details = make_details(2, 4)
    rows = details.to_dict("records")
    manifest = json.loads((source / "inspect.json").read_text())
    manifest["timing"]["seconds"] = float("nan")  # written as null
    with np.load(source / "spectra.npz") as archive:
        spectra = {k: archive[k] for k in archive.files if "::" not in k}
    out = save_inspect(InspectResult(rows, expert_rows(rows), manifest, spectra), tmp_path / "saved")
    run = load_inspect_run(out)
    assert len(run.details) == len(details) and len(run.experts) == 8 and set(run.spectra) == set(spectra)
    name = next(iter(spectra))
    assert run.spectra[name].alpha == pytest.approx(float(details.set_index("name").at[name, "alpha"]))
    html = render_inspect(out).read_text(encoding="utf-8")
    assert tuple(parse(html).section_ids) == SECTION_IDS and html.count("<svg") == 3
    assert "\u2014" in section_html(html, "summary")  # unknown time
