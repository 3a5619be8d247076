"""Hub model ids resolve through huggingface_hub's local cache, offline; folders keep working."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alphaq.errors import CheckpointError
from alphaq.load.hub import looks_like_model_id, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """A Hugging Face hub cache holding ``source`` as the ``main`` snapshot of ``repo_id`` (blobs + links)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in source.iterdir():
        if file.suffix in {".json", ".safetensors"}:
            blob = repo / "blobs" / file.name  # a real cache names blobs by their hash; any name links the same
            shutil.copyfile(file, blob)
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("Qwen/Qwen1.5-MoE-A2.7B", True),
        ("org/model@v1.0", True),
        ("./org/model", False),
        ("/abs/path", False),
        ("a/b/c", False),
        ("~/models", False),
        ("model", False),
    ],
)
def test_model_id_grammar(spec: str, expected: bool) -> None:
    assert looks_like_model_id(spec) is expected


def test_cached_model_id_resolves_offline(tmp_path: Path) -> None:
    import alphaq

    snapshot = lay_out_cache(tmp_path / "hub", "acme/tiny-moe", alphaq.demo_model_path())
    folder = resolve_model("acme/tiny-moe", cache_dir=tmp_path / "hub", local_files_only=True)
    assert folder == snapshot
    assert (folder / "config.json").is_file()
    assert resolve_model(f"acme/tiny-moe@{COMMIT}", cache_dir=tmp_path / "hub", local_files_only=True) == snapshot


def test_existing_folder_wins_over_an_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "acme" / "tiny-moe").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("acme/tiny-moe", cache_dir=tmp_path / "empty") == Path("acme/tiny-moe")


def test_uncached_id_offline_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not in the Hugging Face cache while offline; download it first") as err:
        resolve_model("acme/absent", cache_dir=tmp_path, local_files_only=True)
    assert "\n" not in str(err.value)


def test_cli_inspects_a_cached_model_id(tmp_path: Path) -> None:
    import alphaq

    lay_out_cache(tmp_path / "hub", "acme/tiny-moe", alphaq.demo_model_path())
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    alphaq_cli = str(Path(sys.executable).with_name("alphaq"))
    cmd = [alphaq_cli, "inspect", "acme/tiny-moe", "--out", str(tmp_path / "run"), "--no-html"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "experts.csv").is_file()
    absent = subprocess.run(
        [*cmd[:2], "acme/absent", *cmd[3:]], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert absent.returncode == 2
    assert absent.stderr.strip().count("\n") == 0 and "hf download acme/absent" in absent.stderr
