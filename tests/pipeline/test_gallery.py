from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alphaq.pipeline.gallery import build_gallery

REPORTS = Path(__file__).resolve().parents[2] / "reports"
#: The saved artifacts the committed pages are rendered from (the quantized weights are not committed).
ARTIFACTS = ("inspect.json", "details.csv", "experts.csv", "spectra.npz", "plan.json", "plan_comparison.json",
             "sweep.csv", "eval.json", "eval_tensors.csv", "eval_experts.csv", "quantized/quantize.json",
             "compare/compare.json", "compare/compare.csv", "compare/expert_verification.csv")
PAGES = ("index.html", "inspect.html", "plan.html", "eval.html", "quantized/quantize.html", "compare/compare.html",
         "quantized/model_card.md")


def test_gallery_without_compare_renders_every_stage(tmp_path: Path, shared_data_dir: Path) -> None:
    out = tmp_path / "reports"
    (out / "quantized").mkdir(parents=True)
    (out / "quantized" / "stale.bin").write_bytes(b"old")  # the gallery's own folder is redone from scratch
    pages = build_gallery(out, compare=False, eval_windows=1)
    names = {p.relative_to(out).as_posix() for p in pages}
    assert names == {"inspect.html", "plan.html", "eval.html", "quantized/quantize.html", "quantized/model_card.md",
                     "index.html"}
    assert not (out / "quantized" / "stale.bin").exists()
    assert "## Quantization with alphaq" in (out / "quantized" / "model_card.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [*ARTIFACTS, *PAGES])
def test_committed_gallery_has_every_file(name: str) -> None:
    assert (REPORTS / name).is_file(), f"reports/{name} missing; regenerate with `alphaq gallery --out reports`"


def test_committed_gallery_is_of_the_bundled_model() -> None:
    """A gallery made before the bundled model changed is stale: every artifact names the model's fingerprint."""
    from alphaq.load import open_checkpoint
    from alphaq.zoo.demo import demo_model_path

    fingerprint = open_checkpoint(demo_model_path()).fingerprint
    for name in ("inspect.json", "plan.json", "eval.json", "quantized/quantize.json", "compare/compare.json"):
        record = json.loads((REPORTS / name).read_text(encoding="utf-8"))
        recorded = (record.get("checkpoint") or record.get("provenance", {}).get("checkpoint") or {})["fingerprint"]
        assert recorded == fingerprint, f"reports/{name} is of another checkpoint; run `alphaq gallery --out reports`"


def test_committed_pages_are_what_the_current_code_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-render every page from the committed artifacts: a page the current report code would write differently
    means the gallery is stale."""
    from alphaq.report.run import render_run

    copy = tmp_path / "reports"
    for name in ARTIFACTS:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPORTS / name, copy / name)
    monkeypatch.chdir(REPORTS.parent)  # pages show paths relative to where the command ran
    render_run(copy, model_card=True)
    for name in PAGES:
        assert (copy / name).read_bytes() == (REPORTS / name).read_bytes(), \
            f"reports/{name} differs from what this alphaq renders; run `alphaq gallery --out reports`"


def test_committed_plan_is_what_the_planner_makes_now(tmp_path: Path) -> None:
    """Re-plan the bundled model with the gallery's recorded options: the same plan fingerprint."""
    from alphaq.pipeline.gallery import GALLERY_BUDGET
    from alphaq.planning.planner import PlanConfig
    from alphaq.planning.run import run_plan

    committed = json.loads((REPORTS / "plan.json").read_text(encoding="utf-8"))
    for name in ("inspect.json", "details.csv", "experts.csv", "spectra.npz"):
        shutil.copy2(REPORTS / name, tmp_path / name)
    options = committed["provenance"]["options"]
    config = PlanConfig(budget=GALLERY_BUDGET, widths=tuple(options["widths"]), group_size=options["group_size"],
                        granularity=options["granularity"], allocator=options["allocator"], gamma=options["gamma"],
                        quant_method=options["quant_method"])
    result = run_plan(None, config, tmp_path)
    assert result.plan.plan_fingerprint == committed["plan_fingerprint"], \
        "reports/plan.json is not what the planner makes now; run `alphaq gallery --out reports`"
