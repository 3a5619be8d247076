from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alphaq.pipeline.gallery import build_gallery

REPORTS = Path(__file__).resolve().parents[2] / "reports"
#: The saved artifacts the committed pages are rendered from (the quantized weights are not committed).
ARTIFACTS = (
    "inspect.json",
    "details.csv",
    "experts.csv",
    "spectra.npz",
    "plan.json",
    "plan_comparison.json",
    "sweep.csv",
    "eval.json",
    "eval_tensors.csv",
    "eval_experts.csv",
    "quantized/quantize.json",
    "compare/compare.json",
    "compare/compare.csv",
    "compare/expert_verification.csv",
)
PAGES = (
    "index.html",
    "inspect.html",
    "plan.html",
    "eval.html",
    "quantized/quantize.html",
    "compare/compare.html",
    "quantized/model_card.md",
)


def test_gallery_without_compare_renders_every_stage(tmp_path: Path, shared_data_dir: Path) -> None:
    out = tmp_path / "reports"
    (out / "quantized").mkdir(parents=True)
    (out / "quantized" / "stale.bin").write_bytes(b"old")  # the gallery's own folder is redone from scratch
    pages = build_gallery(out, compare=False, eval_windows=1)
    names = {p.relative_to(out).as_posix() for p in pages}
    assert names == {
        "inspect.html",
        "plan.html",
        "eval.html",
        "quantized/quantize.html",
        "quantized/model_card.md",
        "index.html",
    }
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
        assert (copy / name).read_bytes() == (REPORTS / name).read_bytes(), (
            f"reports/{name} differs from what this alphaq renders; run `alphaq gallery --out reports`"
        )


def test_committed_plan_is_what_the_planner_makes_now(tmp_path: Path) -> None:
    """Re-plan the bundled model with the gallery's recorded options: the same plan fingerprint."""
    from alphaq.pipeline.gallery import GALLERY_BUDGET
    from alphaq.planning.planner import PlanConfig
    from alphaq.planning.run import run_plan

    committed = json.loads((REPORTS / "plan.json").read_text(encoding="utf-8"))
    for name in ("inspect.json", "details.csv", "experts.csv", "spectra.npz"):
        shutil.copy2(REPORTS / name, tmp_path / name)
    options = committed["provenance"]["options"]
    config = PlanConfig(
        budget=GALLERY_BUDGET,
        widths=tuple(options["widths"]),
        group_size=options["group_size"],
        granularity=options["granularity"],
        allocator=options["allocator"],
        gamma=options["gamma"],
        quant_method=options["quant_method"],
    )
    result = run_plan(None, config, tmp_path)
    assert result.plan.plan_fingerprint == committed["plan_fingerprint"], (
        "reports/plan.json is not what the planner makes now; run `alphaq gallery --out reports`"
    )


#: An absolute POSIX path in text (not a URL, not a closing tag, not a ratio such as GB/s), or a Windows drive path.
_ABSOLUTE_IN_TEXT = re.compile(r"(?<![\w.:/<>~-])/(?:[\w.+-]+/)+[\w.+-]*|\b[A-Za-z]:\\[\w.]")
_MACHINE_ROOTS = ("/work/", "/home/", "/root/", "/tmp/", "/Users/", "/mnt/", "/opt/", "/usr/", "/var/", "/private/")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _absolute_paths(path: Path) -> list[str]:
    """The absolute paths a committed artifact holds: JSON strings and CSV cells that start with '/' (or a drive),
    and absolute paths anywhere in the text of every file."""
    text = path.read_text(encoding="utf-8")
    found = [root for root in _MACHINE_ROOTS if root in text]
    if path.suffix == ".json":
        values = list(_strings(json.loads(text)))
    elif path.suffix == ".csv":
        values = [cell for row in csv.reader(text.splitlines()) for cell in row]
    else:
        values = []
    found += [v for v in values if v.startswith("/") or re.match(r"[A-Za-z]:[\\/]", v)]
    found += _ABSOLUTE_IN_TEXT.findall(re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=\s]+", "", text))  # not images
    return found


def test_absolute_path_detector_catches_every_form(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"checkpoint": {"path": "/srv/models/x"}}), encoding="utf-8")
    (tmp_path / "b.csv").write_text("entry,calibration\nfrequency-in,/data/wikitext-2/valid.txt\n", encoding="utf-8")
    (tmp_path / "c.html").write_text("<td>C:\\Users\\me\\model</td>", encoding="utf-8")
    (tmp_path / "d.md").write_text("run `alphaq eval --quantized /scratch/run/quantized`", encoding="utf-8")
    (tmp_path / "ok.html").write_text(
        '<a href="https://x.org/a/b">GB/s</a> data:wikitext-2/test.txt ../plan.json '
        'alphaq:demo-moe 2/3 <img src="data:image/png;base64,iVBO/x/y+z=">',
        encoding="utf-8",
    )
    for name in ("a.json", "b.csv", "c.html", "d.md"):
        assert _absolute_paths(tmp_path / name), name
    assert _absolute_paths(tmp_path / "ok.html") == []


@pytest.mark.parametrize(
    "name", sorted(n for n in {*ARTIFACTS, *PAGES} if n.endswith((".json", ".csv", ".md", ".html")))
)
def test_committed_artifacts_hold_no_absolute_path(name: str) -> None:
    """Artifacts record paths relative to their folder, the bundled model by name and data files by their name
    in the data folder: none holds the absolute path of the machine that wrote it."""
    found = _absolute_paths(REPORTS / name)
    assert not found, (
        f"reports/{name} holds absolute path(s) {sorted(set(found))[:3]}; regenerate with "
        "`alphaq gallery --out reports`"
    )
