from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from alphaq.errors import AlphaQError
from alphaq.planning.plan_file import load_plan
from alphaq.planning.planner import SWEEP_COLUMNS, PlanConfig
from alphaq.report.page import fmt_bytes
from alphaq.report.plan_page import PlanArtifacts, load_plan_run, plan_page_html, render_plan
from tests.report.inspect_fixture import FAILED_EXPERT, parse, section_html, tables_in
from tests.report.plan_fixture import ALLOCATORS, BUDGETS, ENGINES, SECTION_IDS, big_plan_run, write_plan_run


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plan_run(tmp_path_factory.mktemp("plan") / "run")


@pytest.fixture(scope="module")
def plan_html(plan_run: Path) -> str:
    return render_plan(plan_run).read_text(encoding="utf-8")


def _rows_of(html: str, section: str) -> list[list[str]]:
    """Cell texts of the first table in a section."""
    body = section_html(html, section).split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


# -- tests --------------------------------------------------------------------------------------------


def test_fixture_plan_is_valid(plan_run: Path) -> None:
    plan = load_plan(plan_run / "plan.json")
    assert len(plan.tensors) == 1 + 3 * (4 + 1 + 24) + 1
    assert plan.provenance["failed_fits"] == [f"L{FAILED_EXPERT[0]}.E{FAILED_EXPERT[1]}"]
    assert list(pd.read_csv(plan_run / "sweep.csv").columns) == SWEEP_COLUMNS


def test_load_plan_run(plan_run: Path) -> None:
    run = load_plan_run(plan_run)
    assert isinstance(run, PlanArtifacts) and run.load_warnings == ()
    assert len(run.tensors) == 89 and int(run.tensors["routed"].sum()) == 72
    assert str(run.tensors["layer"].dtype) == "Int64"
    assert run.tensors["group_size"].isna().sum() == 5  # bf16: embedding, lm_head, 3 routers
    routed = run.routed
    assert routed["alpha"].notna().sum() == 72 - 3 - 1  # the failed expert's 3 matrices and one failed down_proj
    assert int(run.tensors["bytes"].sum()) == run.plan.summary["total_bytes"]
    assert int(run.tensors["bf16_bytes"].sum()) == run.plan.summary["total_bytes_bf16"]
    assert len(run.sweep) == len(BUDGETS) * len(ALLOCATORS) and run.sweep["budget"].tolist()[:4] == ["2.5"] * 4
    assert run.comparison["engines"] == ENGINES and run.experts is not None


def test_page_is_one_offline_file(plan_run: Path, plan_html: str) -> None:
    assert plan_html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", plan_html, re.I)
    assert "http://" not in plan_html and "https://" not in plan_html
    assert "<link" not in plan_html and "<script src" not in plan_html and "@import" not in plan_html
    assert not list(plan_run.glob(".plan.html.*"))


def test_sections_figures_and_provenance(plan_run: Path, plan_html: str) -> None:
    assert tuple(parse(plan_html).section_ids) == SECTION_IDS
    assert plan_html.count('<figure class="fig">') == 4 and plan_html.count("<svg") == 4
    assert plan_html.count("data:image/png;base64,") >= 1  # the heatmap's cells
    fingerprint = load_plan(plan_run / "plan.json").plan_fingerprint
    for text in (
        "synthetic-moe-3x8",
        "mixtral",
        "0123456789abcdef",
        "feedface",
        "2025-02-03T04:05:06+00:00",
        "plan fingerprint",
        fingerprint,
        "inspect fingerprint",
    ):
        assert text in plan_html, text
    assert '<span class="current">Plan</span>' in plan_html
    warnings = plan_html.split("<main>", 1)[1].split("</div>", 1)[0]
    assert "1 unit without a fitted" in warnings


def test_summary_cards(plan_run: Path, plan_html: str) -> None:
    summary = section_html(plan_html, "summary")
    plan = load_plan(plan_run / "plan.json")
    for text in (
        "alphaq",
        "expert",
        "3.5 bits/weight",
        "3.500",
        f"{plan.summary['effective_bits']:.3f}",
        fmt_bytes(plan.summary["expert_bytes"]),
        fmt_bytes(plan.summary["expert_bytes_bf16"]),
        f"{plan.summary['compression_ratio']:.2f}\u00d7",
        "optimal",
        "analytic",
        "attention=8",
        "24 units",
    ):
        assert text in summary, text
    assert ">16<" in summary  # gamma (the default)


def test_memory_table(plan_run: Path, plan_html: str) -> None:
    plan = load_plan(plan_run / "plan.json")
    rows = _rows_of(plan_html, "memory")
    assert [r[0] for r in rows] == [
        "routed experts",
        "kept: attention",
        "kept: embedding",
        "kept: lm_head",
        "kept: router",
        "kept, all roles",
        "total",
    ]
    by_part = {r[0]: r for r in rows}
    assert by_part["total"][6] == str(plan.summary["total_bytes"])
    assert by_part["routed experts"][6] == str(plan.summary["expert_bytes"])
    assert by_part["kept: attention"][3] == "8" and by_part["kept: embedding"][3] == "16 (bf16)"
    assert by_part["total"][7] == "100.00"
    assert by_part["total"][8] == f"{plan.summary['compression_ratio']:.2f}"


def test_deployability(plan_run: Path, plan_html: str) -> None:
    section = section_html(plan_html, "deployability")
    comparison = json.loads((plan_run / "plan_comparison.json").read_text())
    layer, expert = comparison["layer_plan"]["objective"], comparison["expert_plan"]["objective"]
    assert f"{100 * (layer - expert) / layer:.1f}%" in section
    assert fmt_bytes(comparison["rounded_up_per_layer_bytes"]) in section
    assert "mix widths across experts" in section
    assert '<span class="chip q-ok">alphaq runtime</span>' in section
    assert "llama.cpp (GGUF): round up per layer" in section
    assert [t["total"] for t in tables_in(plan_html, "deployability")] == [2]


def test_sweep_section(plan_html: str) -> None:
    tables = tables_in(plan_html, "budget-sweep")
    assert [(t["total"], t["rows"]) for t in tables] == [(5, 5), (20, 20)]
    section = section_html(plan_html, "budget-sweep")
    assert "<svg" in section and "AlphaQ vs best other" in section
    assert [r[0] for r in _rows_of(plan_html, "budget-sweep")] == list(BUDGETS)


def test_failed_fits_and_tensor_table(plan_run: Path, plan_html: str) -> None:
    assert [r[0] for r in _rows_of(plan_html, "failed-fits-and-notes")] == ["L0.E2"]
    assert [(t["total"], t["rows"]) for t in tables_in(plan_html, "per-tensor-plan")] == [(89, 89)]
    assert "not shown" not in section_html(plan_html, "per-tensor-plan")
    html = plan_page_html(load_plan_run(plan_run), top_n=20)
    assert [(t["total"], t["rows"]) for t in tables_in(html, "per-tensor-plan")] == [(20, 20)]
    assert "69 not shown; plan.json lists all 89 tensors." in section_html(html, "per-tensor-plan")
    errors = [float(r[10]) for r in _rows_of(html, "per-tensor-plan")]
    assert errors == sorted(errors, reverse=True)


def test_heatmap_marks_the_failed_unit(plan_html: str) -> None:
    heatmap = section_html(plan_html, "bit-width-map")
    assert "Red outline" in heatmap and [t["total"] for t in tables_in(plan_html, "bit-width-map")] == [3]
    assert "Spearman" in section_html(plan_html, "alpha-vs-bits")


def test_rendering_is_deterministic(plan_run: Path, plan_html: str) -> None:
    assert render_plan(plan_run).read_text(encoding="utf-8") == plan_html


def test_degrades_without_optional_files(tmp_path: Path) -> None:
    folder = write_plan_run(tmp_path / "bare", layers=2, experts=4, sweep_csv=False, comparison=False, inspect=False)
    html = render_plan(folder).read_text(encoding="utf-8")
    assert tuple(parse(html).section_ids) == SECTION_IDS
    assert "No inspect artifacts" in section_html(html, "alpha-vs-bits")
    assert "No sweep.csv" in section_html(html, "budget-sweep")
    assert "No plan_comparison.json" in section_html(html, "deployability")
    assert html.count("<svg") == 2  # heatmap and histogram
    assert "synthetic-moe-3x8" in html  # provenance from plan.json alone
    assert "alpha" not in [c for c in re.findall(r"<th[^>]*>(.*?)</th>", section_html(html, "per-tensor-plan"))]


@pytest.mark.parametrize("granularity", ["layer", "matrix"])
def test_other_granularities(tmp_path: Path, granularity: str) -> None:
    folder = write_plan_run(tmp_path / granularity, layers=2, experts=4, granularity=granularity, sweep_csv=False)
    html = render_plan(folder).read_text(encoding="utf-8")
    heatmap = section_html(html, "bit-width-map")
    deploy = section_html(html, "deployability")
    if granularity == "layer":
        assert "layer, projection" in heatmap and ">gate_proj<" in heatmap
        assert "Every (layer, projection) of this plan has one width (6 groups)" in deploy
        assert '<span class="chip q-ok">llama.cpp (GGUF)</span>' in deploy
    else:
        assert "parameter-weighted mean" in heatmap and ">expert<" in heatmap


@pytest.mark.parametrize("layer_plan", ["absent", "infeasible"])
def test_comparison_as_the_plan_command_writes_it(tmp_path: Path, layer_plan: str) -> None:
    """plan_comparison.json of `alphaq plan`: deployable_on, expert bytes; no layer plan for a layer-granularity
    plan, or an infeasible one."""
    folder = write_plan_run(tmp_path / "run", layers=2, experts=4, sweep_csv=False)
    data = json.loads((folder / "plan_comparison.json").read_text())
    plan = load_plan(folder / "plan.json")
    data["expert_plan"]["expert_bytes"] = plan.summary["expert_bytes"]
    data["rounded_up_per_layer_bytes"] = 2 * plan.summary["expert_bytes"]
    data["deployable_on"] = ["alphaq runtime (alphaq.load_quantized)"]
    if layer_plan == "absent":
        del data["layer_plan"]
    else:
        data["layer_plan"] = {"status": "infeasible", "message": "budget 3.5 is below the smallest feasible value"}
    (folder / "plan_comparison.json").write_text(json.dumps(data))
    run = load_plan_run(folder)
    assert run.load_warnings == ()
    section = section_html(plan_page_html(run), "deployability")
    assert '<span class="chip q-ok">alphaq runtime (alphaq.load_quantized)</span>' in section
    assert "+100.0% vs this plan&#x27;s" in section and "expert bytes" in section
    rows = _rows_of(plan_page_html(run), "deployability")
    if layer_plan == "absent":
        assert "this plan is itself one width per (layer, projection)" in section
        assert [r[0] for r in rows] == ["this plan"]
    else:
        assert "no layer plan to compare: infeasible" in section
        assert [r[0] for r in rows] == ["best layer plan", "this plan"]
        assert "below the smallest feasible value" in section


def test_real_plan_run_renders(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """End to end: the plan stage's own writer on a tiny Qwen2-MoE (skips without the plan stage)."""
    planning = pytest.importorskip("alphaq.planning.run")
    out = tmp_path / "run"
    config = PlanConfig(budget="3", keep="attention=16,shared=8", sweep_budgets=("2.5", "3", "4"))
    planning.run_plan(tiny_checkpoints["qwen2_moe"], config, out)
    html = render_plan(out).read_text(encoding="utf-8")
    assert tuple(parse(html).section_ids) == SECTION_IDS
    assert html.count("<svg") == 4 and "Spearman" in html and "No plan_comparison.json" not in html
    assert [t["total"] for t in tables_in(html, "budget-sweep")][0] == 3
    assert "kept: shared_expert" in section_html(html, "memory")


@pytest.mark.parametrize(
    "damage, message",
    [
        ("sweep_garbage", "sweep.csv lacks column(s) allocator"),
        ("sweep_binary", "sweep.csv is unreadable"),
        ("comparison_json", "plan_comparison.json is unreadable"),
        ("comparison_shape", "plan_comparison.json lacks the expert_plan"),
        ("experts_empty", "inspect artifacts unreadable"),
    ],
)
def test_bad_optional_files_are_warnings(tmp_path: Path, damage: str, message: str) -> None:
    folder = write_plan_run(tmp_path / "run", layers=1, experts=4)
    target, content = {
        "sweep_garbage": ("sweep.csv", b"a,b\n1,2\n"),
        "sweep_binary": ("sweep.csv", b"\xff\xfe\x00\x81"),
        "comparison_json": ("plan_comparison.json", b"{oops"),
        "comparison_shape": ("plan_comparison.json", b"[1, 2]"),
        "experts_empty": ("experts.csv", b""),
    }[damage]
    (folder / target).write_bytes(content)
    run = load_plan_run(folder)
    assert len(run.load_warnings) == 1 and message in run.load_warnings[0] and "\n" not in run.load_warnings[0]
    html = render_plan(folder).read_text(encoding="utf-8")
    assert message in html.split("<main>", 1)[1].split("</div>", 1)[0]
    assert tuple(parse(html).section_ids) == SECTION_IDS


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_folder", "plan run folder not found"),
        ("no_plan", "no plan.json"),
        ("bad_json", "is not valid JSON"),
        ("schema", "schema_version 2"),
        ("fingerprint", "plan_fingerprint does not match"),
        ("bits", "has bits=9"),
        ("empty", "tensors must be a non-empty list"),
    ],
)
def test_bad_folders_give_one_line_errors(tmp_path: Path, breakage: str, message: str) -> None:
    folder = write_plan_run(tmp_path / "run", layers=1, experts=4, sweep_csv=False, comparison=False)
    data = json.loads((folder / "plan.json").read_text())
    if breakage == "no_folder":
        folder = tmp_path / "absent"
    elif breakage == "no_plan":
        (folder / "plan.json").unlink()
    elif breakage == "bad_json":
        (folder / "plan.json").write_text("{not json")
    else:
        if breakage == "schema":
            data["schema_version"] = 2
        elif breakage == "fingerprint":
            data["tensors"][0]["error"] = 0.5
        elif breakage == "bits":
            data["tensors"][1]["bits"] = 9
        elif breakage == "empty":
            data["tensors"] = []
        (folder / "plan.json").write_text(json.dumps(data))
    with pytest.raises(AlphaQError, match=re.escape(message)) as info:
        render_plan(folder)
    assert "\n" not in str(info.value)
    assert not (folder / "plan.html").exists()


def test_inspect_artifacts_of_another_checkpoint_are_ignored(tmp_path: Path) -> None:
    folder = write_plan_run(tmp_path / "other", layers=1, experts=4, sweep_csv=False, comparison=False)
    manifest = json.loads((folder / "inspect.json").read_text())
    manifest["checkpoint"]["fingerprint"] = "ffffffffffffffff"
    (folder / "inspect.json").write_text(json.dumps(manifest))
    run = load_plan_run(folder)
    assert run.experts is None and run.tensors["alpha"].isna().all()
    assert "the inspect artifacts are of checkpoint ffffffffffffffff" in run.load_warnings[0]


def test_fmt_bytes() -> None:
    assert [fmt_bytes(v) for v in (512, 76_800, 118_016, 12.35e9, None, float("nan"))] == [
        "512 B",
        "76.80 kB",
        "118.0 kB",
        "12.35 GB",
        "\u2014",
        "\u2014",
    ]


def test_large_plan_page_stays_small(tmp_path: Path) -> None:
    folder = big_plan_run(tmp_path / "big", layers=58, experts=256)
    start = time.perf_counter()
    path = render_plan(folder)
    seconds = time.perf_counter() - start
    size = path.stat().st_size
    assert size < 3_000_000, size
    html = path.read_text(encoding="utf-8")
    assert [(t["total"], t["rows"]) for t in tables_in(html, "per-tensor-plan")] == [(100, 100)]
    assert f"{58 * 256 * 3 + 58 - 100} not shown" in html
    assert html.count("<svg") == 4
    assert "14848 experts; Spearman" in section_html(html, "alpha-vs-bits")
    assert seconds < 60, seconds
