"""One writer per output folder: OS locks through filelock, a second writer refused at once, stale locks from killed
runs, the lock file removed on release without ever letting two writers in."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alphaq.cli import app
from alphaq.errors import AlphaQError
from alphaq.load import open_checkpoint
from alphaq.locking import OutputLockedError, describe_os_error, lock_path, output_lock
from tests.quantization.quantize_helpers import make_plan

runner = CliRunner()


def _hold_lock(out: Path, command: str = "quantize") -> subprocess.Popen[str]:
    """Another process that takes the lock of ``out`` and sleeps; returns once it holds it."""
    code = textwrap.dedent(f"""
        import sys, time
        from alphaq.locking import output_lock
        with output_lock({str(out)!r}, {command!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_file_sits_beside_the_output_and_is_removed_on_release(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert lock_path(out) == tmp_path / ".run.alphaq-lock"
    with output_lock(out, "plan") as path:
        assert path.is_file() and '"command": "plan"' in path.read_text()
        with output_lock(out, "plan"):  # re-entrant in one process (alphaq run calls the stages)
            pass
        assert path.is_file()
    assert not path.exists()


def test_second_writer_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "q"
    holder = _hold_lock(out)
    try:
        started = time.perf_counter()
        with pytest.raises(OutputLockedError, match=rf"is being written by alphaq quantize \(pid {holder.pid}\); wait"):
            with output_lock(out, "quantize"):
                pass
        assert time.perf_counter() - started < 1.0
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_does_not_block_a_rerun(tmp_path: Path) -> None:
    out = tmp_path / "q"
    holder = _hold_lock(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(out).exists()  # the file stays, but the kernel released the flock with the process
    with output_lock(out, "quantize"):
        pass


def test_concurrent_quantize_into_the_same_folder_is_refused_and_writes_nothing(
    tiny_checkpoints, tmp_path: Path
) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    plan1 = make_plan(open_checkpoint(model), tmp_path / "p1.json")
    plan2 = make_plan(open_checkpoint(model), tmp_path / "p2.json", lambda m: 4 if m.role.value == "expert" else 16)
    out = tmp_path / "q"
    holder = _hold_lock(out)  # the first run, still before its progress file exists
    try:
        result = runner.invoke(app, ["quantize", str(model), "--plan", str(plan2), "--out", str(out)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("error: ") and "is being written by alphaq quantize" in result.output
    assert not out.exists()
    ok = runner.invoke(app, ["quantize", str(model), "--plan", str(plan1), "--out", str(out)])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("command", [["inspect"], ["plan", "--budget", "3"], ["eval", "--max-windows", "1"]])
def test_every_writing_command_takes_the_lock(tiny_checkpoints, tmp_path: Path, command: list[str]) -> None:
    out = tmp_path / "run"
    holder = _hold_lock(out, "inspect")
    try:
        result = runner.invoke(app, [command[0], str(tiny_checkpoints["mixtral"]), "--out", str(out), *command[1:]])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2, result.output
    assert "is being written by alphaq inspect" in result.output and result.output.count("\n") == 1


def test_os_errors_get_advice_that_fits_the_cause(tmp_path: Path) -> None:
    full = describe_os_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x")), tmp_path)
    assert full.startswith(f"cannot write {tmp_path / 'x'}: No space left on device; free space")
    read_only = describe_os_error(OSError(errno.EROFS, "Read-only file system", "/ro/x"))
    assert "read-only; pass a writable --out" in read_only and "free space" not in read_only
    not_dir = describe_os_error(OSError(errno.ENOTDIR, "Not a directory", "/f/x"))
    assert "is a file, not a folder" in not_dir and "free space" not in not_dir
    copy = OSError(errno.ENOSPC, "No space left on device")
    copy.filename, copy.filename2 = "/source/model.safetensors", "/out/model.safetensors"
    assert describe_os_error(copy).startswith("cannot write /out/model.safetensors:")  # the output, not the input


def test_read_only_out_is_one_line(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    import alphaq.locking

    real_open = os.open

    def read_only(path, flags, *args):  # noqa: ANN001 - a read-only file system under tmp_path/ro
        if str(path).startswith(str(tmp_path / "ro")) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(alphaq.locking.os, "open", read_only)
    (tmp_path / "ro").mkdir()
    result = runner.invoke(app, ["inspect", str(tiny_checkpoints["mixtral"]), "--out", str(tmp_path / "ro" / "run")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert (
        f"cannot write {tmp_path / 'ro' / 'run'}: Read-only file system; that file system is read-only" in result.output
    )


def test_out_that_is_a_file_is_one_line(tiny_checkpoints, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    for command in (["inspect"], ["plan", "--budget", "3"]):
        result = runner.invoke(app, [command[0], str(tiny_checkpoints["mixtral"]), "--out", str(target), *command[1:]])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        assert "existing file" in result.output or "not a folder" in result.output
    assert target.read_text() == "x"


def test_full_disk_during_inspect_leaves_no_file(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    from alphaq.audit import table_files

    def full(path, *args, **kwargs):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(table_files, "write_csv", full)  # the disk fills while the tables are written
    out = tmp_path / "run"
    result = runner.invoke(app, ["inspect", str(tiny_checkpoints["mixtral"]), "--out", str(out)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "No space left on device" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_writers_racing_for_one_output_never_overlap(tmp_path: Path) -> None:
    """Four processes take and release the same lock as fast as they can (the lock file is removed at each release):
    an O_EXCL marker made inside the lock shows that no two ever hold it at once, and each gets it at least once."""
    out, inside = tmp_path / "q", tmp_path / "inside"
    code = textwrap.dedent(f"""
        import os, sys, time
        from alphaq.locking import OutputLockedError, output_lock
        won = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                with output_lock({str(out)!r}, "quantize"):
                    fd = os.open({str(inside)!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holds it
                    os.close(fd)
                    won += 1
                    time.sleep(0.001)
                    os.unlink({str(inside)!r})
            except OutputLockedError:
                pass
        print(won)
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-800:] for _, err in results]
    assert all(int(stdout) > 0 for stdout, _ in results), results
    assert not lock_path(out).exists() and not inside.exists()


def test_no_alphaq_module_imports_fcntl() -> None:
    """The lock is filelock's, so every stage module imports on Windows too."""
    import ast

    import alphaq

    root = Path(alphaq.__file__).parent
    for source in root.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) else [])
            )
            assert "fcntl" not in names, source


def test_locked_error_is_an_alphaq_error() -> None:
    assert issubclass(OutputLockedError, AlphaQError)
