from __future__ import annotations

from pathlib import Path

import pytest

from alphaq.errors import AlphaQError
from alphaq.evaluation import datasets


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


# --- hub texts (the `datasets` package is always faked: no test reaches a hub) -------------------------------


class _FakeHub:
    """Stands in for the `datasets` module: records load_dataset calls, returns a dict-like split."""

    def __init__(self, rows: list[str] | None = None, error: Exception | None = None) -> None:
        self.rows = rows if rows is not None else [" = Title = \n", " first line \n", "", " second line \n"]
        self.error = error
        self.calls: list[tuple[tuple, dict]] = []

    def load_dataset(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return {"text": list(self.rows)}


def _install_hub(monkeypatch, hub) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "datasets", hub)


def test_hub_text_joins_rows_like_gptq_and_caches(tmp_path, monkeypatch):
    hub = _FakeHub()
    _install_hub(monkeypatch, hub)
    path = datasets.hub_dataset_text("wikitext2", cache_dir=tmp_path)
    assert path == tmp_path / "wikitext2-test.txt"
    assert path.read_text(encoding="utf-8") == " = Title = \n\n\n first line \n\n\n\n\n second line \n"
    assert hub.calls == [(("wikitext", "wikitext-2-raw-v1"), {"split": "test"})]
    again = datasets.hub_dataset_text("WikiText-2", "test", cache_dir=tmp_path)
    assert again == path and len(hub.calls) == 1  # the cache file is reused
    assert [p.name for p in tmp_path.iterdir()] == ["wikitext2-test.txt"]  # no temporary file left behind


def test_hub_cache_reuse_needs_no_datasets_package(tmp_path, monkeypatch):
    import sys

    (tmp_path / "wikitext2-validation.txt").write_text("cached", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` would fail
    path = datasets.hub_dataset_text("wikitext2", "validation", cache_dir=tmp_path)
    assert path.read_text(encoding="utf-8") == "cached"


def test_hub_default_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAQ_CACHE_DIR", str(tmp_path / "c"))
    assert datasets.default_cache_dir() == tmp_path / "c" / "datasets"
    monkeypatch.delenv("ALPHAQ_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.default_cache_dir() == tmp_path / "xdg" / "alphaq" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.default_cache_dir() == tmp_path / "home" / ".cache" / "alphaq" / "datasets"
    hub = _FakeHub(rows=["a", "b"])
    _install_hub(monkeypatch, hub)
    monkeypatch.setenv("ALPHAQ_CACHE_DIR", str(tmp_path / "c"))
    path = datasets.hub_dataset_text("wikitext2")
    assert path == tmp_path / "c" / "datasets" / "wikitext2-test.txt" and path.read_text() == "a\n\nb"


def test_hub_without_datasets_package_is_a_one_line_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(AlphaQError) as info:
        datasets.hub_dataset_text("wikitext2", cache_dir=tmp_path)
    message = str(info.value)
    assert message == "the datasets package is not installed; pip install datasets, or pass --text-file"
    assert not any(tmp_path.iterdir())


def test_hub_load_failure_names_the_dataset_and_the_ways_out(tmp_path, monkeypatch):
    _install_hub(monkeypatch, _FakeHub(error=ConnectionError("Couldn't reach 'wikitext' on the Hub\nmore")))
    with pytest.raises(AlphaQError) as info:
        datasets.hub_dataset_text("wikitext2", cache_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "wikitext2" in message and "wikitext-2-raw-v1" in message and "Couldn't reach 'wikitext'" in message
    assert "--text-file" in message and "ALPHAQ_DATA_DIR" in message
    assert isinstance(info.value.__cause__, ConnectionError)
    assert not any(tmp_path.iterdir())  # nothing cached after a failure


def test_hub_unknown_dataset_or_split_is_a_config_error(tmp_path, monkeypatch):
    from alphaq.errors import ConfigError

    hub = _FakeHub()
    _install_hub(monkeypatch, hub)
    with pytest.raises(ConfigError, match=r"unknown dataset 'c5'; use one of wikitext2"):
        datasets.hub_dataset_text("c5", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"no split 'dev'"):
        datasets.hub_dataset_text("wikitext2", "dev", cache_dir=tmp_path)
    assert hub.calls == []


def test_resolve_eval_text_precedence(tmp_path, monkeypatch):
    from alphaq.errors import ConfigError

    root = _make_data(tmp_path / "data")
    monkeypatch.setenv("ALPHAQ_DATA_DIR", str(root))
    monkeypatch.setenv("ALPHAQ_CACHE_DIR", str(tmp_path / "cache"))
    hub = _FakeHub(rows=["x", "y"])
    _install_hub(monkeypatch, hub)
    own = tmp_path / "own.txt"
    own.write_text("mine", encoding="utf-8")

    with pytest.raises(ConfigError, match="either --text-file or --dataset, not both"):
        datasets.resolve_eval_text(own, "wikitext2")
    assert datasets.resolve_eval_text(own, None) == own
    assert datasets.resolve_eval_text(str(own), None) == own
    assert hub.calls == []
    from_hub = datasets.resolve_eval_text(None, "wikitext2")
    assert from_hub == tmp_path / "cache" / "datasets" / "wikitext2-test.txt" and from_hub.read_text() == "x\n\ny"
    assert datasets.resolve_eval_text(None, None) == root.resolve() / "wikitext-2" / "test.txt"
    assert len(hub.calls) == 1


def test_resolve_eval_text_keeps_the_existing_error_messages(tmp_path, monkeypatch):
    with pytest.raises(AlphaQError, match=r"none.txt: text file not found; pass an existing --text-file"):
        datasets.resolve_eval_text(tmp_path / "none.txt", None)
    monkeypatch.setenv("ALPHAQ_DATA_DIR", str(tmp_path))
    with pytest.raises(AlphaQError, match=r"wikitext-2/test.txt not found"):
        datasets.resolve_eval_text(None, None)
