from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny architecture saved once per session, keyed by model_type."""
    from tests.fixtures.tiny_models import SPECS, make_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    return {spec.model_type: make_tiny_checkpoint(spec, root / spec.model_type) for spec in SPECS}


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real text data (../shared/data or $ALPHAQ_DATA_DIR); tests that need it skip when absent."""
    env = os.environ.get("ALPHAQ_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (path / "wikitext-2" / "test.txt").is_file():
        pytest.skip(f"text data not found at {path}; set ALPHAQ_DATA_DIR to the shared data folder")
    return path


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``alphaq run`` on the bundled model (budget 3.5, a short text, 2 windows, model card), once per session."""
    from typer.testing import CliRunner

    from alphaq.cli import app

    root = tmp_path_factory.mktemp("demo-run")
    text = root / "text.txt"
    text.write_text(
        "The river ran past the old mill, and the miller's sons watched the water rise. " * 60, encoding="utf-8"
    )
    out = root / "run"
    result = CliRunner().invoke(
        app, ["run", "--out", str(out), "--text-file", str(text), "--max-windows", "2", "--model-card"]
    )
    assert result.exit_code == 0, result.output
    return out
