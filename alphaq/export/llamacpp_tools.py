"""llama.cpp's own tools, built from the ``llama-cpp-python`` sdist on PyPI, found and run (the I/O side).

The sdist vendors the full llama.cpp tree (``vendor/llama.cpp``). :func:`build_tools` downloads it with pip,
builds ``llama-quantize`` and ``llama-perplexity`` with cmake and copies them, with the converter
(``convert_hf_to_gguf.py``, its ``conversion`` package and ``gguf-py``), into a cache folder::

    ${ALPHAQ_LLAMACPP_DIR:-~/.cache/alphaq/llama.cpp/<llama-cpp-python version>}/
        bin/llama-quantize  bin/llama-perplexity  bin/llama-imatrix  convert_hf_to_gguf.py  conversion/  gguf-py/  build.json

:func:`find_tools` looks there (or in a folder given explicitly, which may also be a llama.cpp checkout with
``build/bin``), then on ``PATH`` for the binaries, and raises :class:`LlamaCppMissing` with one line naming
``alphaq llamacpp build`` when something is missing. Parsing of their output is pure (:mod:`alphaq.export.gguf_check`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alphaq.errors import AlphaQError

#: The llama-cpp-python release whose vendored llama.cpp ``alphaq llamacpp build`` builds.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
#: Environment variable naming the tools folder.
ENV_DIR = "ALPHAQ_LLAMACPP_DIR"
BUILD_COMMAND = "alphaq llamacpp build"
BINARIES: tuple[str, ...] = ("llama-quantize", "llama-perplexity", "llama-imatrix")
#: Binaries a tools folder must have; ``llama-imatrix`` (only the calibrated reference presets use it) may be
#: missing from folders built before it was added.
REQUIRED_BINARIES: tuple[str, ...] = ("llama-quantize", "llama-perplexity")
CONVERTER = "convert_hf_to_gguf.py"
#: cmake options: portable (no -march=native), static, no network code, only what the tools need.
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
)
LogFn = Callable[[str], None]


class LlamaCppMissing(AlphaQError):
    """llama.cpp's tools are not built (or not where they were looked for)."""


class LlamaCppFailed(AlphaQError):
    """A llama.cpp tool ran and failed."""


def default_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """``$ALPHAQ_LLAMACPP_DIR``, else ``$XDG_CACHE_HOME/alphaq/llama.cpp/<version>`` (``~/.cache`` by default)."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "alphaq" / "llama.cpp" / version


@dataclass(frozen=True)
class LlamaCppTools:
    """Where llama.cpp's tools are.

    Attributes:
        root: the folder searched (holds the converter).
        quantize: ``llama-quantize``.
        perplexity: ``llama-perplexity``.
        imatrix: ``llama-imatrix`` (importance matrices for the calibrated reference presets), None when the
            folder predates it (:meth:`require_imatrix` names the rebuild).
        converter: ``convert_hf_to_gguf.py`` (with ``conversion/`` and ``gguf-py/`` beside it).
        info: ``build.json`` written by :func:`build_tools` (empty for other builds).
    """

    root: Path
    quantize: Path
    perplexity: Path
    imatrix: Path | None
    converter: Path
    info: dict[str, Any] = field(default_factory=dict)

    def require_imatrix(self) -> Path:
        """``llama-imatrix``, or :class:`LlamaCppMissing` naming the rebuild that adds it."""
        if self.imatrix is None:
            raise LlamaCppMissing(
                f"llama-imatrix is missing in {self.root} (built before alphaq used it); rerun `{BUILD_COMMAND}`"
            )
        return self.imatrix

    def describe(self) -> dict[str, Any]:
        """JSON-ready paths and build facts (recorded in ``gguf_export.json``)."""
        return {
            "root": str(self.root),
            "quantize": str(self.quantize),
            "perplexity": str(self.perplexity),
            "imatrix": str(self.imatrix) if self.imatrix is not None else None,
            "converter": str(self.converter),
            "llama_cpp_python": self.info.get("llama_cpp_python"),
            "llama_cpp_commit": self.info.get("llama_cpp_commit"),
        }


def find_tools(directory: str | Path | None = None) -> LlamaCppTools:
    """The tools in ``directory`` (or :func:`default_dir`), the binaries also on ``PATH``.

    Args:
        directory: a folder from ``alphaq llamacpp build``, or a llama.cpp checkout built with cmake
            (``build/bin``); None: ``$ALPHAQ_LLAMACPP_DIR`` or the default cache folder.

    Returns:
        The :class:`LlamaCppTools`.

    Raises:
        LlamaCppMissing: a binary or the converter is not found; the message names the build command.
    """
    root = Path(directory).expanduser() if directory is not None else default_dir()
    found: dict[str, Path] = {}
    for name in BINARIES:
        for candidate in (root / "bin" / name, root / "build" / "bin" / name):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found[name] = candidate
                break
        else:
            on_path = shutil.which(name) if directory is None else None
            if on_path:
                found[name] = Path(on_path)
    missing = [n for n in REQUIRED_BINARIES if n not in found]
    if not (root / CONVERTER).is_file():
        missing.append(CONVERTER)
    if missing:
        raise LlamaCppMissing(
            f"llama.cpp tools not found ({', '.join(missing)} missing in {root}); run "
            f"`{BUILD_COMMAND}` (or point --llamacpp-dir / ${ENV_DIR} at a llama.cpp build)"
        )
    info_file = root / "build.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    return LlamaCppTools(
        root=root,
        quantize=found["llama-quantize"],
        perplexity=found["llama-perplexity"],
        imatrix=found.get("llama-imatrix"),
        converter=root / CONVERTER,
        info=info,
    )


#: Runs of a tool whose summary is missing from its log (see :func:`run_parsed`).
ATTEMPTS = 6
#: A line of llama.cpp's log that reports an error.
ERROR_LINE = re.compile(r"^\S+ E |error|failed", re.M | re.I)
T = TypeVar("T")


def run_parsed(
    args: Sequence[str | Path], parse: Callable[[str], T], *, what: str, timeout: float, attempts: int = ATTEMPTS
) -> T:
    """Run a tool and parse its output, rerunning it when the summary is missing without any error line.

    llama.cpp's tools log through an asynchronous queue (common/log.cpp) that is not flushed at exit
    (ggml-org/llama.cpp#22142), so on a busy machine the last lines (the statistics) are sometimes lost although
    the run succeeded (exit 0).

    Raises:
        LlamaCppFailed: an error line in the output, or no summary in ``attempts`` runs.
    """
    from alphaq.export.gguf_check import last_error_line

    output = ""
    for _ in range(attempts):
        done = run_tool(args, what=what, timeout=timeout)
        output = done.stdout + done.stderr
        try:
            return parse(output)
        except ValueError as error:
            if ERROR_LINE.search(output):
                raise LlamaCppFailed(f"{what}: {error}: {last_error_line(output)}") from None
    raise LlamaCppFailed(f"{what} printed no results in {attempts} runs (its log was cut): {last_error_line(output)}")


def run_tool(
    args: Sequence[str | Path], *, what: str, timeout: float | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one command, capture its output; raise :class:`LlamaCppFailed` with its last error line if it fails."""
    from alphaq.export.gguf_check import last_error_line

    try:
        done = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise LlamaCppFailed(f"{what} did not finish within {timeout:g} s") from None
    except OSError as error:
        raise LlamaCppMissing(
            f"{what}: cannot run {args[0]}: {error.strerror or error}; run `{BUILD_COMMAND}`"
        ) from None
    if done.returncode != 0:
        raise LlamaCppFailed(f"{what} failed (exit {done.returncode}): {last_error_line(done.stdout + done.stderr)}")
    return done


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_tools` did: the tools and how long each step took (seconds)."""

    tools: LlamaCppTools
    seconds: dict[str, float]


def build_tools(
    dest: str | Path | None = None,
    *,
    version: str = LLAMA_CPP_PYTHON_VERSION,
    sdist: str | Path | None = None,
    jobs: int = 2,
    log: LogFn | None = None,
) -> BuildResult:
    """Download the llama-cpp-python sdist, build llama.cpp's tools with cmake, install them into ``dest``.

    Args:
        dest: tools folder (default :func:`default_dir`); replaced atomically, so a failed build leaves the
            previous one (or nothing).
        version: llama-cpp-python release to download.
        sdist: an already downloaded ``llama_cpp_python-*.tar.gz`` (skips pip).
        jobs: parallel compile jobs.
        log: called with one line per step.

    Returns:
        The :class:`BuildResult`.

    Raises:
        LlamaCppFailed: pip, cmake or the compiler failed (the line names the log).
        LlamaCppMissing: cmake or a C++ compiler is not installed.
    """
    say = log or (lambda line: None)
    target = Path(dest).expanduser() if dest is not None else default_dir(version)
    if shutil.which("cmake") is None:
        raise LlamaCppMissing(
            "cmake is not installed; install it (apt-get install cmake build-essential or "
            "pip install cmake) and rerun `alphaq llamacpp build`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=".llamacpp-build-", dir=target.parent) as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        if sdist is None:
            say(f"downloading llama-cpp-python=={version} (sdist) with pip")
            run_tool(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"llama-cpp-python=={version}",
                    "-d",
                    work / "sdist",
                ],
                what="pip download llama-cpp-python",
            )
            sdist = next((work / "sdist").glob("llama_cpp_python-*.tar.gz"))
        seconds["download"] = time.perf_counter() - start
        start = time.perf_counter()
        say(f"extracting {Path(sdist).name}")
        source = _extract_vendor(Path(sdist), work / "src")
        seconds["extract"] = time.perf_counter() - start
        build = work / "build"
        start = time.perf_counter()
        say("configuring with cmake " + " ".join(CMAKE_FLAGS))
        _logged(["cmake", "-S", source, "-B", build, *CMAKE_FLAGS], work / "cmake.log", "cmake configure")
        seconds["configure"] = time.perf_counter() - start
        start = time.perf_counter()
        say(f"building {', '.join(BINARIES)} with {jobs} job(s)")
        _logged(["cmake", "--build", build, "-j", str(jobs), "--target", *BINARIES], work / "build.log", "cmake build")
        seconds["build"] = time.perf_counter() - start
        stage = work / "install"
        (stage / "bin").mkdir(parents=True)
        for name in BINARIES:
            shutil.copy2(build / "bin" / name, stage / "bin" / name)
        shutil.copy2(source / CONVERTER, stage / CONVERTER)
        for folder in ("conversion", "gguf-py"):
            shutil.copytree(source / folder, stage / folder, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        for log_file in ("cmake.log", "build.log"):
            shutil.copy2(work / log_file, stage / log_file)
        from alphaq.export.gguf_check import vendored_commit

        changelog = source.parent.parent / "CHANGELOG.md"
        info = {
            "llama_cpp_python": version,
            "sdist": Path(sdist).name,
            "llama_cpp_commit": vendored_commit(changelog.read_text(encoding="utf-8"), version)
            if changelog.is_file()
            else None,
            "cmake_flags": list(CMAKE_FLAGS),
            "jobs": jobs,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (stage / "build.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        old = work / "previous"
        if target.exists():
            target.rename(old)
        stage.rename(target)
    return BuildResult(tools=find_tools(target), seconds=seconds)


def _extract_vendor(sdist: Path, into: Path) -> Path:
    """Extract the sdist; return its ``vendor/llama.cpp`` folder."""
    try:
        with tarfile.open(sdist) as archive:
            archive.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise LlamaCppFailed(f"cannot extract {sdist}: {error}; download the sdist again") from None
    found = sorted(into.glob("*/vendor/llama.cpp/CMakeLists.txt"))
    if not found:
        raise LlamaCppFailed(f"{sdist.name} has no vendor/llama.cpp; pass a llama-cpp-python sdist")
    return found[0].parent


def _logged(args: Sequence[str | Path], log_file: Path, what: str) -> None:
    with open(log_file, "w", encoding="utf-8") as log:
        code = subprocess.run([str(a) for a in args], stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
        kept = Path(tempfile.gettempdir()) / f"alphaq-llamacpp-{log_file.name}"
        shutil.copy2(log_file, kept)
        raise LlamaCppFailed(f"{what} failed (exit {code}): {tail[0][:200]}; full log in {kept}")
