from __future__ import annotations

from pathlib import Path

import pytest

from alphaq.pipeline.gallery import build_gallery


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


@pytest.mark.parametrize("name", ["index.html", "eval.html"])
def test_committed_gallery_has_the_run_pages(name: str) -> None:
    reports = Path(__file__).resolve().parents[2] / "reports"
    assert (reports / name).is_file()
    assert (reports / "quantized" / "quantize.json").is_file() and (reports / "compare" / "compare.json").is_file()
