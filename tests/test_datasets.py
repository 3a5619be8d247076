from __future__ import annotations

from pathlib import Path

import pytest

from alphaq import datasets
from alphaq.errors import AlphaQError


def _make_data(root: Path) -> Path:
    for rel in (datasets.WIKITEXT2_TEST, datasets.WIKITEXT2_VALID, datasets.SHAKESPEARE, datasets.GUTENBERG):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"text of {rel}\n", encoding="utf-8")
    return root


def test_env_var_wins_over_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAQ_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "default_data_dir", lambda: pytest.fail("default consulted"))
    assert datasets.data_dir() == tmp_path.resolve()


def test_env_var_pointing_nowhere_is_a_clear_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAQ_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(AlphaQError) as info:
        datasets.data_dir()
    message = str(info.value)
    assert "\n" not in message
    assert "ALPHAQ_DATA_DIR" in message and "--text-file" in message and "missing" in message


def test_default_is_shared_data_beside_the_repository(monkeypatch):
    import alphaq

    monkeypatch.delenv("ALPHAQ_DATA_DIR", raising=False)
    repo = Path(alphaq.__file__).resolve().parents[1]
    assert (repo / "pyproject.toml").is_file()
    assert datasets.default_data_dir() == (repo.parent / "shared" / "data").resolve()


def test_default_used_when_env_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("ALPHAQ_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "default_data_dir", lambda: tmp_path)
    assert datasets.data_dir() == tmp_path


def test_no_data_anywhere_is_a_clear_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ALPHAQ_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "default_data_dir", lambda: tmp_path / "nope")
    with pytest.raises(AlphaQError) as info:
        datasets.data_dir()
    message = str(info.value)
    assert "\n" not in message
    assert "set ALPHAQ_DATA_DIR" in message and "--text-file" in message


def test_named_files_resolve_inside_the_data_dir(tmp_path, monkeypatch):
    root = _make_data(tmp_path)
    monkeypatch.setenv("ALPHAQ_DATA_DIR", str(root))
    assert datasets.wikitext2_test() == root.resolve() / "wikitext-2" / "test.txt"
    assert datasets.wikitext2_valid() == root.resolve() / "wikitext-2" / "valid.txt"
    assert datasets.shakespeare() == root.resolve() / "tinyshakespeare" / "input.txt"
    assert datasets.gutenberg() == root.resolve() / "gutenberg" / "big.txt"
    assert datasets.read_text(datasets.gutenberg()) == "text of gutenberg/big.txt\n"


def test_missing_named_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAQ_DATA_DIR", str(tmp_path))
    with pytest.raises(AlphaQError, match=r"wikitext-2/test.txt not found"):
        datasets.wikitext2_test()


def test_read_text_replaces_bad_bytes_and_reports_missing_files(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"ok \xff end")
    assert datasets.read_text(path) == "ok \ufffd end"
    with pytest.raises(AlphaQError, match="cannot read text file"):
        datasets.read_text(tmp_path / "absent.txt")
