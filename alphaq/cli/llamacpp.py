"""``alphaq llamacpp build | where`` and the ``--format gguf`` branch of ``alphaq export``.

Thin wrappers over :mod:`alphaq.export.llamacpp_tools` (build and find llama.cpp's tools from the
llama-cpp-python sdist) and :mod:`alphaq.export.gguf_export` (plan -> verified GGUF).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from alphaq.cli.common import user_errors

app = typer.Typer(
    name="llamacpp",
    help="llama.cpp's own tools (converter, llama-quantize, llama-perplexity, llama-imatrix), "
    "built from the llama-cpp-python sdist on PyPI.",
    no_args_is_help=True,
)


@app.command()
def build(
    dest: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Tools folder (default: $ALPHAQ_LLAMACPP_DIR, else ~/.cache/alphaq/llama.cpp/VERSION).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="llama-cpp-python release whose vendored llama.cpp is built.", show_default=False)
    ] = None,
    sdist: Annotated[
        Path | None,
        typer.Option(help="An already downloaded llama_cpp_python-*.tar.gz (skips pip).", show_default=False),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel compile jobs.")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the tools are already there.")] = False,
) -> None:
    """Download the llama-cpp-python sdist, build llama-quantize, llama-perplexity and llama-imatrix with cmake, install them and the converter."""
    from alphaq.export.llamacpp_tools import (
        LLAMA_CPP_PYTHON_VERSION,
        LlamaCppMissing,
        build_tools,
        default_dir,
        find_tools,
    )

    version = version or LLAMA_CPP_PYTHON_VERSION
    target = dest if dest is not None else default_dir(version)
    with user_errors():
        if not force:
            try:
                tools = find_tools(target)
            except LlamaCppMissing:
                tools = None
            else:
                if tools.imatrix is None:  # a folder built before llama-imatrix was part of the build
                    tools = None
            if tools is not None:
                typer.echo(f"llama.cpp tools already built in {tools.root} (pass --force to rebuild)")
                return
        start = time.perf_counter()
        result = build_tools(target, version=version, sdist=sdist, jobs=jobs, log=lambda line: typer.echo(line))
    info = result.tools.info
    typer.echo(
        f"built llama.cpp {info.get('llama_cpp_commit') or '(commit unknown)'} from llama-cpp-python "
        f"{info.get('llama_cpp_python')} in {time.perf_counter() - start:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in result.seconds.items())}) into {result.tools.root}"
    )


@app.command()
def where(
    llamacpp_dir: Annotated[
        Path | None, typer.Option(help="Look here instead of $ALPHAQ_LLAMACPP_DIR / the cache.", show_default=False)
    ] = None,
) -> None:
    """Print where llama.cpp's tools are (exit 2 with the build command when they are missing)."""
    from alphaq.export.llamacpp_tools import find_tools

    with user_errors():
        tools = find_tools(llamacpp_dir)
    typer.echo(json.dumps(tools.describe(), indent=2))


def export_gguf_command(
    plan: Path, out: Path | None, *, model: Path | None, keep_type: str, allow_fallback: bool, llamacpp_dir: Path | None
) -> None:
    """``alphaq export PLAN --format gguf --out model.gguf``: write, verify and report the GGUF."""
    from alphaq.errors import ConfigError
    from alphaq.export.gguf_check import format_verification
    from alphaq.export.gguf_export import GgufExportOptions, export_gguf
    from alphaq.export.llamacpp import format_report
    from alphaq.export.llamacpp_tools import find_tools

    with user_errors():
        if out is None or out.suffix.lower() != ".gguf":
            raise ConfigError("--format gguf writes one file: pass --out MODEL.gguf")
        options = GgufExportOptions(keep_type=keep_type, allow_fallback=allow_fallback)
        result = export_gguf(
            plan,
            out,
            model=model,
            options=options,
            tools=find_tools(llamacpp_dir),
            log=lambda line: typer.echo(line, err=True),
        )
    typer.echo(
        f"wrote {result.out} ({result.verification.file_bytes:,} bytes, experts at "
        f"{result.record['expert_bits_per_weight']:.3f} bits/weight); comparison in {result.record_path}"
    )
    for line in format_report(result.export):
        typer.echo(line)
    for line in format_verification(result.verification):
        typer.echo(line)
    for note in result.export.notes:
        typer.echo(f"note: {note}")
