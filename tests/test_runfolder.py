"""How artifacts record paths (no machine's absolute path) and read them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphaq.errors import AlphaQError
from alphaq.runfolder import BUNDLED_MODEL_LABEL, BUNDLED_MODEL_REF, display_path, record_path, resolve_recorded_path
from alphaq.zoo.demo import demo_model_dir


@pytest.fixture
def data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    (folder / "wikitext-2").mkdir(parents=True)
    (folder / "wikitext-2" / "test.txt").write_text("text", encoding="utf-8")
    monkeypatch.setenv("ALPHAQ_DATA_DIR", str(folder))
    return folder


def test_bundled_model_is_recorded_by_name_and_resolves_here(tmp_path: Path) -> None:
    assert record_path(demo_model_dir(), base=tmp_path) == BUNDLED_MODEL_REF == "alphaq:demo-moe"
    assert resolve_recorded_path(BUNDLED_MODEL_REF, base=tmp_path) == demo_model_dir()
    # an artifact written before paths were relative, on a machine where alphaq lived elsewhere
    assert resolve_recorded_path("/elsewhere/site-packages/alphaq/data/demo-moe", base=tmp_path) == demo_model_dir()
    assert display_path(BUNDLED_MODEL_REF) == BUNDLED_MODEL_LABEL


def test_data_file_is_recorded_by_its_name_in_the_data_folder(data_folder: Path, tmp_path: Path) -> None:
    recorded = record_path(data_folder / "wikitext-2" / "test.txt", base=tmp_path / "run")
    assert recorded == "data:wikitext-2/test.txt"
    assert resolve_recorded_path(recorded, base=tmp_path / "run") == data_folder.resolve() / "wikitext-2" / "test.txt"


def test_other_paths_are_recorded_relative_to_the_artifact_folder(data_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "a"
    checkpoint = tmp_path / "models" / "qwen"
    checkpoint.mkdir(parents=True)
    assert record_path(checkpoint, base=run) == "../../models/qwen"
    assert record_path(run / "plan.json", base=run / "quantized") == "../plan.json"
    assert resolve_recorded_path("../../models/qwen", base=run).resolve() == checkpoint.resolve()
    # the run and the checkpoint moved together (another machine): the relative record still finds it
    assert resolve_recorded_path("../../models/qwen", base=Path("/x/runs/a")) == Path("/x/models/qwen")
    assert record_path("alphaq:demo-moe", base=run) == "alphaq:demo-moe"  # already recorded: unchanged


def test_absolute_path_without_a_base_stays_absolute(data_folder: Path, tmp_path: Path) -> None:
    assert record_path(tmp_path / "x.txt") == str((tmp_path / "x.txt").resolve())
    assert resolve_recorded_path(str(tmp_path / "x.txt"), base="/anywhere") == tmp_path / "x.txt"


def test_data_reference_without_a_data_folder_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAQ_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(AlphaQError, match="ALPHAQ_DATA_DIR"):
        resolve_recorded_path("data:wikitext-2/test.txt", base=tmp_path)
