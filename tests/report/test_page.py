from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphaq.report.page import (
    Section,
    figure_html,
    provenance_from_manifest,
    render_page,
    stat_cards,
    table_html,
    write_page,
)

PROVENANCE = {
    "model": "tiny-moe",
    "model_type": "mixtral",
    "path": "/m/tiny-moe",
    "fingerprint": "feedbeef00112233",
    "alphaq_version": "0.1.0",
    "created": "2025-01-02T03:04:05+00:00",
    "stage_fingerprints": {"plan": "abcdabcd"},
    "seed": 7,
    "empty": "",
}


def _rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr(?: class=\"gap\")?>.*?</tr>", body)


def _figure(seed: int = 0):
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot(rng.normal(size=20), label="x")
    ax.set_title("demo \u03b1")
    ax.legend()
    return fig


def test_section_anchor_from_title() -> None:
    assert Section("Spectra (ESD)", "").anchor == "spectra-esd"
    assert Section("!!!", "").anchor == "section"
    assert Section("A", "", anchor="custom").anchor == "custom"


def test_render_page_layout(tmp_path: Path) -> None:
    (tmp_path / "plan.html").write_text("x")
    (tmp_path / "index.html").write_text("x")
    sections = [Section("Alpha", "<p>one</p>", note="a < b"), Section("Alpha", "<p>two</p>")]
    html = render_page(
        "Report <1>",
        PROVENANCE,
        sections,
        warnings=["careful <now>", "  "],
        run_dir=tmp_path,
        current="inspect.html",
        subtitle="sub",
    )
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<title>Report &lt;1&gt;</title>" in html
    # provenance: known keys with labels, stage fingerprints, extra keys; empty ones left out
    for text in ("Checkpoint fingerprint", "feedbeef00112233", "plan fingerprint", "abcdabcd", "Seed", ">7<", "0.1.0"):
        assert text in html
    assert "Empty" not in html
    # nav: links to sibling pages that exist, the current page highlighted, missing ones absent
    assert '<a href="plan.html">Plan</a>' in html and '<a href="index.html">Overview</a>' in html
    assert '<span class="current">Inspect</span>' in html
    assert "eval.html" not in html and "quantize.html" not in html
    # sections keep order, get unique anchors, notes escaped, bodies trusted
    assert re.findall(r'<section class="card" id="([^"]+)">', html) == ["alpha", "alpha-2"]
    assert "a &lt; b" in html and "<p>one</p>" in html
    # warnings box escapes and drops blank lines
    assert "Warnings (1)" in html and "careful &lt;now&gt;" in html
    assert "http://" not in html and "https://" not in html


def test_render_page_without_run_dir_or_warnings() -> None:
    html = render_page("T", {"model": "m"}, [])
    assert 'class="warnbox"' not in html and "<a href=" not in html


def test_write_page_is_atomic(tmp_path: Path) -> None:
    path = write_page(tmp_path / "sub" / "page.html", "<html></html>")
    assert path.read_text() == "<html></html>" and [p.name for p in path.parent.iterdir()] == ["page.html"]


def test_table_html_values_and_escaping() -> None:
    df = pd.DataFrame(
        {
            "name": ["<b>", "ok"],
            "alpha": [2.34567, np.nan],
            "n": pd.array([3, None], dtype="Int64"),
            "quality": ["ok", "failed"],
        }
    )
    html = table_html(
        df,
        float_format="{:.2f}",
        cell_class={"quality": lambda q: "q-bad" if q == "failed" else ""},
        headers={"alpha": "\u03b1"},
    )
    assert 'data-total-rows="2"' in html and len(_rows(html)) == 2
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert '<td class="num" data-v="2.34567">2.35</td>' in html
    assert html.count('<td class="num na" data-v="">\u2014</td>') == 2  # NaN and <NA>
    assert '<td class="q-bad">failed</td>' in html and "<td>ok</td>" in html
    assert '<th class="num">\u03b1</th>' in html and "<th>name</th>" in html
    assert 'class="data sortable"' in html


def test_table_html_truncates_long_frames() -> None:
    df = pd.DataFrame({"i": range(250)})
    html = table_html(df, max_rows=20, sortable=False, caption="All rows are in x.csv.")
    rows = _rows(html)
    assert len(rows) == 21 and 'class="gap"' in rows[10] and "230 rows not shown" in rows[10]
    assert 'data-total-rows="250" data-shown-rows="20"' in html
    assert ">0<" in rows[0] and ">249<" in rows[-1]
    assert "All rows are in x.csv. Showing 20 of 250 rows (first and last 10)." in html
    assert 'class="data"' in html


def test_table_html_empty_frame() -> None:
    html = table_html(pd.DataFrame(columns=["a", "b"]))
    assert 'data-total-rows="0"' in html and "No rows." in html


def test_figure_svg_is_inline_and_deterministic() -> None:
    first, second = figure_html(_figure(), caption="cap <x>", alt="demo"), figure_html(_figure(), alt="demo")
    assert first.replace("<figcaption>cap &lt;x&gt;</figcaption>", "") == second
    assert first.startswith('<figure class="fig"><svg ') and "<?xml" not in first and "DOCTYPE" not in first
    assert "<metadata>" not in first and "http" not in first and "xmlns" not in first
    assert 'aria-label="demo"' in first and "demo \u03b1</text>" in first  # text stays text
    assert figure_html(_figure(seed=1)) != second


def test_figure_png_is_base64_and_deterministic() -> None:
    first, second = figure_html(_figure(), fmt="png", alt="a"), figure_html(_figure(), fmt="png", alt="a")
    assert first == second
    payload = re.search(r'src="data:image/png;base64,([^"]+)"', first).group(1)
    assert base64.b64decode(payload)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="svg"):
        figure_html(_figure(), fmt="jpg")


def test_stat_cards_and_provenance_from_manifest() -> None:
    html = stat_cards([("Layers", 3, "all"), ("Model", "<m>", "")])
    assert html.count('class="stat"') == 2 and "&lt;m&gt;" in html and html.count('class="hint"') == 1
    prov = provenance_from_manifest(
        {
            "alphaq_version": "0.1.0",
            "created": "c",
            "checkpoint": {"path": "/a/b/Mixtral-8x7B", "fingerprint": "f", "model_type": "mixtral"},
        },
        plan="p1",
    )
    assert (
        prov["model"] == "Mixtral-8x7B" and prov["fingerprint"] == "f" and prov["stage_fingerprints"] == {"plan": "p1"}
    )


def test_imports_have_no_heavy_side_effects() -> None:
    code = (
        "import sys, alphaq.report, alphaq.report.page, alphaq.report.figures, alphaq.report.inspect_page; "
        "print(sorted(m for m in ('matplotlib', 'seaborn', 'jinja2', 'pandas', 'scipy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_lazy_package_exports() -> None:
    import alphaq.report as report

    assert report.render_page is render_page and callable(report.render_inspect)
    with pytest.raises(AttributeError):
        report.nothing_here  # noqa: B018


def test_format_helpers() -> None:
    from alphaq.report.page import fmt_count, fmt_seconds
    from alphaq.runfolder import one_line

    assert fmt_count(12345) == "12,345" and fmt_count(None) == "\u2014" and fmt_count(float("nan")) == "\u2014"
    assert fmt_count(pd.NA) == "\u2014"
    assert fmt_seconds(12.345) == "12.3 s" and fmt_seconds(245) == "4 min 5 s" and fmt_seconds(7200) == "2.0 h"
    assert one_line(ValueError("a\n  b")) == "a b" and one_line(ValueError()) == "ValueError"
