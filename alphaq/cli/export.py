"""``alphaq export PLAN --format llama.cpp``: a plan as llama-quantize tensor-type overrides (``--format
compressed-tensors``: a Hugging Face checkpoint folder, see :mod:`alphaq.export.compressed_tensors`; ``--format gguf``:
a quantized GGUF written and verified through llama.cpp, see :mod:`alphaq.export.gguf_export`).

A thin wrapper (registered by :mod:`alphaq.cli` with ``app.command()(export)``): load the plan, call
:func:`alphaq.export.llamacpp.export_llamacpp`, write the overrides file atomically, print the command line
and the cost report.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from alphaq.errors import AlphaQError, ConfigError

#: Export formats (``--format``).
FORMATS: tuple[str, ...] = ("llama.cpp", "compressed-tensors", "gguf")
#: Overrides file written beside the plan when ``--out`` is not given.
DEFAULT_OVERRIDES_NAME = "llama-quantize-tensor-types.txt"


def export(
    plan: Annotated[Path, typer.Argument(help="plan.json written by alphaq plan.", show_default=False)],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Target: llama.cpp (llama-quantize overrides) | compressed-tensors (HF checkpoint folder, --out DIR) | gguf (a quantized GGUF through llama.cpp, --out FILE.gguf).",
        ),
    ] = "llama.cpp",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help=f"Overrides file (default: {DEFAULT_OVERRIDES_NAME} beside the plan); compressed-tensors: the checkpoint folder to create; gguf: the .gguf file to write.",
            show_default=False,
        ),
    ] = None,
    base_type: Annotated[
        str, typer.Option(help="llama-quantize base type for tensors without an override (a quantized type).")
    ] = "Q8_0",
    keep_type: Annotated[
        str,
        typer.Option(
            "--keep-type",
            "--keep",
            help="Type of the matrices the plan keeps at 16 bits: bf16 | f16 | q8_0 | base (gguf: attention, embeddings, shared experts; not base).",
        ),
    ] = "bf16",
    fused_gate_up: Annotated[
        bool, typer.Option("--fused-gate-up", help="The GGUF was converted with --fuse-gate-up-exps.")
    ] = False,
    gguf: Annotated[
        Path | None, typer.Option(help="The bf16 GGUF to quantize (fills in the printed command).", show_default=False)
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="The checkpoint the plan was made for (compressed-tensors, gguf; default: the one plan.json records, relative to the plan's folder).",
            show_default=False,
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            help="compressed-tensors: quantizer rtn | rtn_clip | hqq (default: the plan's).", show_default=False
        ),
    ] = None,
    granularity: Annotated[
        str,
        typer.Option(
            help="compressed-tensors: expert (plan widths, zero points) | layer (one symmetric 4/8-bit scheme per layer, for vLLM) | model (one symmetric scheme for every routed expert at the widest planned width: loads with transformers' from_pretrained)."
        ),
    ] = "expert",
    allow_fallback: Annotated[
        bool,
        typer.Option(
            "--allow-fallback",
            help="gguf: accept expert tensors llama.cpp must store in a fallback type (rows not a multiple of 256); they are verified and reported as such.",
        ),
    ] = False,
    llamacpp_dir: Annotated[
        Path | None,
        typer.Option(
            help="gguf: llama.cpp tools folder (default: $ALPHAQ_LLAMACPP_DIR, else the cache `alphaq llamacpp build` fills).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a plan for an engine: llama-quantize overrides, a compressed-tensors checkpoint or a quantized GGUF."""
    from alphaq.atomic import write_text
    from alphaq.export.llamacpp import ExportOptions, export_llamacpp, format_report
    from alphaq.planning.plan_file import load_plan

    if format.lower() == "compressed-tensors":
        _export_compressed_tensors(plan, out, model=model, method=method, granularity=granularity)
        return
    if format.lower() == "gguf":
        from alphaq.cli.llamacpp import export_gguf_command

        export_gguf_command(
            plan, out, model=model, keep_type=keep_type, allow_fallback=allow_fallback, llamacpp_dir=llamacpp_dir
        )
        return
    target = out if out is not None else plan.parent / DEFAULT_OVERRIDES_NAME
    try:
        if format.lower() not in FORMATS:
            raise ConfigError(f"unknown export format {format!r}; use --format {' or '.join(FORMATS)}")
        options = ExportOptions(base_type=base_type, keep_type=keep_type, fused_gate_up=fused_gate_up)
        result = export_llamacpp(load_plan(plan), options)
        write_text(target, result.tensor_type_file_text())
    except AlphaQError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    except OSError as error:
        typer.echo(f"error: cannot write {target}: {error.strerror or error}; check the folder or pass --out", err=True)
        raise typer.Exit(code=2) from None

    gguf_in = str(gguf) if gguf is not None else "MODEL-BF16.gguf"
    gguf_out = str(gguf.with_name(f"{gguf.stem}-alphaq.gguf")) if gguf is not None else "MODEL-alphaq.gguf"
    n_lines = len(result.tensor_type_lines())
    typer.echo(f"wrote {n_lines} tensor-type override(s) to {target}")
    typer.echo("")
    typer.echo(result.command(str(target), gguf_in, gguf_out))
    typer.echo("")
    quoted = shlex.quote(str(target))
    typer.echo(
        f"(llama.cpp builds without --tensor-type-file: replace `--tensor-type-file {quoted}` by "
        f"`$(sed 's/^/--tensor-type /' {quoted})`)"
    )
    typer.echo("")
    for line in format_report(result):
        typer.echo(line)
    for note in result.notes:
        typer.echo(f"note: {note}")


def _export_compressed_tensors(
    plan: Path, out: Path | None, *, model: Path | None, method: str | None, granularity: str
) -> None:
    """``--format compressed-tensors``: write the checkpoint folder, then say which engines can serve it."""
    from alphaq.cli.common import progress_bar, user_errors
    from alphaq.export.compressed_tensors import MANIFEST_FILE, export_compressed_tensors

    with user_errors():
        if out is None:
            raise ConfigError("--format compressed-tensors writes a checkpoint folder: pass --out DIR")
        with progress_bar("export") as advance:
            result = export_compressed_tensors(
                plan, out, model=model, method=method, granularity=granularity, progress=advance
            )
    totals = result.manifest["totals"]
    typer.echo(
        f"wrote a compressed-tensors checkpoint to {result.out_dir}: {totals['quantized_modules']} quantized "
        f"module(s), {totals['average_bits']:.2f} bits on average, {totals['quantized_bytes'] / 1e6:.2f} MB "
        f"(plan: {totals['plan_bytes'] / 1e6:.2f} MB); provenance in {MANIFEST_FILE}"
    )
    for engine, verdict in result.manifest["engines"].items():
        typer.echo(f"{engine}: {verdict}")
    for warning in result.manifest["warnings"]:
        typer.echo(f"warning: {warning}")
