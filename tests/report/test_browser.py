"""The HTML reports in a real browser: headless Chromium opens each page with no console error, every image
loaded, every internal link (file and #fragment) resolving, and no request leaving the machine.

Needs Chromium (Debian: ``apt-get install chromium``; or ``$ALPHAQ_CHROMIUM``). Skips without it, except when
``$CI`` is set: CI installs it, so a missing binary there is a failure.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.browser_check import Browser, BrowserError, ChromiumNotFound, PageReport, check_page, find_chromium

ROOT = Path(__file__).resolve().parents[2]
COMMITTED_PAGES = sorted((ROOT / "reports").glob("**/*.html"))
INSTALL = "apt-get install chromium"
# A 1x1 PNG: an image that loads.
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def chromium_or_skip() -> str:
    """The Chromium binary; skip without one, fail when $CI is set (CI installs it)."""
    try:
        return find_chromium()
    except ChromiumNotFound as exc:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests need Chromium and CI is set (.ci/run must `{INSTALL}`): {exc}", pytrace=False)
        pytest.skip(f"browser tests need Chromium (`{INSTALL}`): {exc}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(chromium_or_skip()) as running:
        yield running


def describe(report: PageReport) -> str:
    return f"{report.path}:\n  " + "\n  ".join(report.problems())


# -- the committed example reports ----------------------------------------------------------------------


@pytest.mark.parametrize("page", COMMITTED_PAGES, ids=[str(p.relative_to(ROOT)) for p in COMMITTED_PAGES])
def test_committed_report_pages(browser: Browser, page: Path) -> None:
    report = browser.check(page)
    assert report.ok, describe(report)
    assert report.links > 0  # at least the section navigation


# -- pages rendered now, from a small run folder --------------------------------------------------------


def write_compare_run(folder: Path) -> Path:
    """compare.json, compare.csv and expert_verification.csv as ``alphaq compare`` writes them (synthetic)."""
    from alphaq.evaluation.compare import COMPARE_COLUMNS

    rows = [
        {
            "entry": "original",
            "allocator": "original",
            "status": "ok",
            "average_payload_bits": 16.0,
            "ppl": 20.0,
            "nll": float(np.log(20.0)),
            "ppl_increase": 0.0,
            "tokens": 1024,
            "windows": 4,
        }
    ]
    for budget in ("2.5", "3.5"):
        for i, allocator in enumerate(("alphaq", "uniform")):
            ppl = 20.0 + (4.0 - float(budget)) * (2 + i)
            rows.append(
                {
                    "entry": allocator,
                    "allocator": allocator,
                    "budget": budget,
                    "status": "optimal",
                    "average_payload_bits": float(budget),
                    "effective_bits": float(budget) + 0.25,
                    "expert_bytes": 1000 * float(budget),
                    "predicted_error": 0.1 / float(budget) * (1 + i),
                    "alpha_objective": 0.2 / float(budget) * (1 + i),
                    "measured_rel_error": 0.1 / float(budget),
                    "ppl": ppl,
                    "nll": float(np.log(ppl)),
                    "ppl_increase": ppl - 20.0,
                    "tokens": 1024,
                    "windows": 4,
                    "plan_fingerprint": f"{i}{budget}abc",
                    "message": "",
                }
            )
    table = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    table.to_csv(folder / "compare.csv", index=False)
    meta = {
        "checkpoint": {"path": "/models/synthetic-moe", "fingerprint": "0123456789abcdef", "model_type": "mixtral"},
        "created": "2025-03-04T05:06:07+00:00",
        "eval_text": {"path": "/data/test.txt", "sha256": "ab" * 32},
        "original_ppl": 20.0,
        "versions": {"alphaq": "0.1.0"},
        "protocol": {"context": 256, "windows": 4, "tokens": 1024, "max_windows": 4, "remainder": "dropped"},
        "prediction_check": {
            "predicted_error": {"rho": 0.8, "p_value": 0.2, "plans": 4, "status": "ok"},
            "alpha_objective": {"rho": 0.6, "p_value": 0.4, "plans": 4, "status": "ok"},
        },
        "rows": json.loads(table.to_json(orient="records")),
    }
    (folder / "compare.json").write_text(json.dumps(meta), encoding="utf-8")
    verification = [
        {
            "entry": entry,
            "budget": budget,
            "name": f"model.layers.0.mlp.experts.{e}.w1",
            "layer": 0,
            "expert": e,
            "bits": 3,
            "predicted_error": 0.1,
            "rel_error": 0.1 + 0.01 * e,
            "eval_routing_share": 0.25,
        }
        for entry in ("alphaq", "uniform")
        for budget in ("2.5", "3.5")
        for e in range(4)
    ]
    pd.DataFrame(verification).to_csv(folder / "expert_verification.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def fresh_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run folder with every page the report code renders today (inspect, plan, quantize, compare)."""
    chromium_or_skip()  # before building the tiny checkpoints, which a skip would waste
    tiny_checkpoints: dict[str, Path] = request.getfixturevalue("tiny_checkpoints")
    from alphaq.load import open_checkpoint
    from alphaq.quantization import run as qrun
    from alphaq.report.compare_page import render_compare
    from alphaq.report.run import render_run
    from tests.quantization.quantize_helpers import make_plan
    from tests.report.inspect_fixture import write_inspect_run
    from tests.report.plan_fixture import write_plan_run

    root = tmp_path_factory.mktemp("browser")
    folder = write_plan_run(root / "run", layers=2, experts=4)  # plan.json, sweep, comparison, inspect artifacts
    write_inspect_run(folder, layers=2, experts=4, hidden=64, spectra=True)  # the same tables, plus spectra.npz
    model = tiny_checkpoints["gpt_oss"]
    plan = make_plan(
        open_checkpoint(model),
        root / "quantize-plan.json",
        lambda m: (4 if m.expert != 1 else 16) if m.role.value == "expert" else 16,
    )
    qrun.run_quantize(model, plan, root / "quantized", max_shard_bytes=60_000)
    (folder / "quantize.json").write_bytes((root / "quantized" / "quantize.json").read_bytes())
    write_compare_run(folder)
    pages = [p.name for p in render_run(folder)]
    if "compare.html" not in pages:  # older render_run: no compare stage
        pages.append(render_compare(folder).name)
    assert set(pages) >= {"inspect.html", "plan.html", "quantize.html", "compare.html"}, pages
    return folder


def test_freshly_rendered_pages(browser: Browser, fresh_run: Path) -> None:
    pages = sorted(fresh_run.glob("**/*.html"))  # every page, an index.html too where render_run writes one
    reports = [browser.check(page) for page in pages]
    failed = [describe(r) for r in reports if not r.ok]
    assert not failed, "\n".join(failed)
    by_name = {str(r.path.relative_to(fresh_run)): r for r in reports}
    # the nav bar links every other page of the run, so each page has links into its siblings, all resolving
    for name, report in by_name.items():
        assert report.links >= len(pages) - 1, name
        assert not report.external_links, (name, report.external_links)
    assert by_name["inspect.html"].images >= 2  # heatmap cells and colorbar: PNG inside the SVG
    assert by_name["plan.html"].sort_clicks > 0  # the sortable tables' script ran without an error


def test_pages_of_a_real_run(browser: Browser, demo_run: Path) -> None:
    """``alphaq run`` on the bundled model: index, inspect, plan, quantized/quantize and eval pages."""
    pages = sorted(demo_run.glob("**/*.html"))
    names = {str(p.relative_to(demo_run)) for p in pages}
    assert names >= {"index.html", "inspect.html", "plan.html", "eval.html", "quantized/quantize.html"}, names
    reports = [browser.check(page) for page in pages]
    failed = [describe(r) for r in reports if not r.ok]
    assert not failed, "\n".join(failed)
    for report in reports:  # every page links the four others (nav bar), across the quantized/ sub-folder
        assert report.links >= 4, report.path


# -- the checker itself ---------------------------------------------------------------------------------


def test_checker_reports_every_kind_of_breakage(tmp_path: Path) -> None:
    chromium_or_skip()
    (tmp_path / "other.html").write_text(
        '<!DOCTYPE html><p id="present">here</p><a name="named">n</a>', encoding="utf-8"
    )
    page = tmp_path / "bad.html"
    page.write_text(
        f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>broken on purpose</title></head>
<body>
<h1 id="here">Broken page</h1>
<img src="missing.png" alt="absent">
<img src="data:image/png;base64,{PIXEL}" alt="one pixel">
<img src="https://example.com/remote.png" alt="remote">
<svg width="4" height="4"><image href="gone.png" width="4" height="4"/></svg>
<a href="missing.html">a missing file</a>
<a href="#nowhere">a missing anchor</a>
<a href="#here">an anchor on this page</a>
<a href="other.html#present">an id on another page</a>
<a href="other.html#named">an a[name] on another page</a>
<a href="other.html#absent">an anchor missing on another page</a>
<a href="https://example.com/docs">outside</a>
<script>console.error("deliberate failure", 42);</script>
<script>window.addEventListener("load", () => {{ notDefinedAnywhere(); }});</script>
</body></html>""",
        encoding="utf-8",
    )
    report = check_page(page, timeout=30)
    assert not report.ok
    errors = "\n".join(report.console_errors)
    assert "console.error: deliberate failure 42 (bad.html:" in errors
    assert "notDefinedAnywhere is not defined" in errors
    assert sorted(report.broken_images) == [
        "<img src=https://example.com/remote.png>",
        "<img src=missing.png>",
        "<svg image href=gone.png>",
    ]
    assert report.images == 4
    broken = sorted(report.broken_links)
    assert len(broken) == 3 and report.links == 7, broken
    assert broken[0].startswith("#nowhere: no element with id or name 'nowhere' in bad.html")
    assert broken[1].startswith("missing.html: ") and broken[1].endswith("does not exist")
    assert broken[2] == "other.html#absent: no element with id or name 'absent' in other.html"
    assert report.external_links == ["https://example.com/docs"]
    assert report.network_requests == ["https://example.com/remote.png"]  # requested, and failed before leaving
    assert "net::ERR_FILE_NOT_FOUND (file://" in errors and "ERR_BLOCKED_BY_CLIENT" in errors  # the loads that failed


def test_a_clean_page_passes_and_one_browser_serves_many(browser: Browser, tmp_path: Path) -> None:
    pages = []
    for i in range(3):
        pages.append(tmp_path / f"p{i}.html")
        pages[-1].write_text(
            f'<!DOCTYPE html><h1 id="top-{i}">P{i}</h1><img src="data:image/png;base64,{PIXEL}" '
            f'alt="px"><a href="p{(i + 1) % 3}.html#top-{(i + 1) % 3}">next</a><a href="#">top</a>'
            '<svg width="4" height="4"><rect width="4" height="4"/></svg>',
            encoding="utf-8",
        )
    for page in pages:
        report = browser.check(page)
        assert report.ok, describe(report)
        assert (report.images, report.links) == (1, 2)


def test_hung_page_times_out_and_the_browser_is_killed(tmp_path: Path) -> None:
    binary = chromium_or_skip()
    page = tmp_path / "hang.html"
    page.write_text("<!DOCTYPE html><script>while (true) {}</script>", encoding="utf-8")
    start = time.monotonic()
    with Browser(binary) as hung:
        with pytest.raises(BrowserError, match="did not answer in time"):
            hung.check(page, timeout=2)
        process = hung._proc
    assert process is not None and process.poll() is not None  # gone after the context manager
    assert time.monotonic() - start < 20


def test_missing_binary_skips_locally_and_fails_on_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALPHAQ_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(ChromiumNotFound, match="apt-get install chromium"):
        find_chromium()
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        chromium_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        chromium_or_skip()


def test_missing_page_is_an_error(browser: Browser, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such page"):
        browser.check(tmp_path / "absent.html")
