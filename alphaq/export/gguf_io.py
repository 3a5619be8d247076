"""GGUF files through llama.cpp's own tools: convert a checkpoint, quantize it with overrides, read it back.

* :func:`convert_checkpoint`: ``convert_hf_to_gguf.py`` (via :mod:`alphaq.export.convert_shim`) -> a 16-bit GGUF.
* :func:`quantize_gguf`: ``llama-quantize --tensor-type-file`` with the export's overrides and flags.
* :func:`read_types`: name -> (ggml type, bytes) of every tensor, with ``gguf.GGUFReader``.
* :func:`expert_slices`: the dequantized ``[E, rows, cols]`` routed-expert tensors of a GGUF (``gguf.quants``).
* :func:`run_perplexity`: ``llama-perplexity`` on a text file, parsed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError
from alphaq.export.gguf_check import Perplexity, last_error_line, parse_perplexity
from alphaq.export.llamacpp_tools import LlamaCppFailed, LlamaCppTools, run_parsed, run_tool

#: ``blk.N.ffn_{gate,up,down}_exps.weight`` (and a fused ``gate_up``).
EXPERT_TENSOR = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down|gate_up)_exps\.weight$")
#: llama-quantize pattern that selects every routed-expert tensor.
EXPERT_PATTERN = r"ffn_(gate|up|down|gate_up)_exps\.weight$"
GGUF_INSTALL = "pip install 'alphaq[gguf]'"


def import_gguf() -> Any:
    """The ``gguf`` package (llama.cpp's reader), or one line saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise AlphaQError(f"reading GGUF files needs the gguf package; {GGUF_INSTALL}") from None
    return gguf


def convert_checkpoint(
    tools: LlamaCppTools, model_dir: str | Path, out: str | Path, *, outtype: str = "auto", timeout: float = 3600
) -> Path:
    """Convert a Hugging Face checkpoint folder with llama.cpp's ``convert_hf_to_gguf.py``.

    Args:
        tools: the llama.cpp tools (their converter).
        model_dir: checkpoint folder.
        out: GGUF to write.
        outtype: converter ``--outtype`` (``auto``: bf16 for a bf16 checkpoint, ``f16``, ``f32``).
        timeout: seconds.

    Returns:
        ``out``.

    Raises:
        AlphaQError: the converter does not support the architecture, or failed (its own last error line).
    """
    args = [
        sys.executable,
        "-m",
        "alphaq.export.convert_shim",
        tools.converter,
        str(model_dir),
        "--outfile",
        str(out),
        "--outtype",
        outtype,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    output = done.stdout + done.stderr
    unsupported = re.search(r"Model (\S+) is not supported", output)
    if unsupported:
        raise AlphaQError(
            f"llama.cpp's converter does not support architecture {unsupported.group(1)} of {model_dir}; "
            "GGUF export needs an architecture convert_hf_to_gguf.py knows (Mixtral, Qwen-MoE, OLMoE, ...)"
        )
    if done.returncode != 0 or not Path(out).is_file():
        raise LlamaCppFailed(
            f"convert_hf_to_gguf.py failed on {model_dir} (exit {done.returncode}): {last_error_line(output)}"
        )
    return Path(out)


#: ``llama-quantize --max-buffer-size`` (MiB) of every alphaq run: the rows converted at once, float32 included.
QUANTIZE_BUFFER_MIB = 256


def quantize_gguf(
    tools: LlamaCppTools,
    source: str | Path,
    out: str | Path,
    *,
    tensor_type_file: str | Path | None,
    flags: Sequence[str] = (),
    base_type: str = "Q8_0",
    threads: int = 2,
    timeout: float = 3600,
    max_buffer_mib: int = QUANTIZE_BUFFER_MIB,
) -> str:
    """``llama-quantize --max-buffer-size M [--tensor-type-file F] [flags] SOURCE OUT BASE THREADS``; returns its
    output.

    ``max_buffer_mib`` bounds the rows llama-quantize converts at once (its default, 8 GiB, holds a whole tensor: a
    151936 x 2048 bf16 output head took 2.5 GB converted to F16); the bytes written are the same.
    """
    args: list[str | Path] = [tools.quantize, "--max-buffer-size", str(max_buffer_mib)]
    if tensor_type_file is not None:
        args += ["--tensor-type-file", tensor_type_file]
    args += [*flags, source, out, base_type, str(threads)]
    done = run_tool(args, what="llama-quantize", timeout=timeout)
    return done.stdout + done.stderr


def read_types(path: str | Path) -> dict[str, tuple[str, int]]:
    """Every tensor of a GGUF: name -> (ggml type name, bytes), read with ``gguf.GGUFReader``."""
    gguf = import_gguf()
    reader = gguf.GGUFReader(str(path))
    return {t.name: (t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors}


def expert_slices(path: str | Path) -> Iterator[tuple[int, str, Any]]:
    """``(layer, proj, weights)`` per routed-expert tensor of a GGUF, dequantized to float32 ``[E, rows, cols]``.

    ``gguf.quants.dequantize`` decodes every k-quant and Q8_0; ``proj`` is ``gate``, ``up``, ``down`` (or
    ``gate_up``, fused).
    """
    import numpy as np

    gguf = import_gguf()
    reader = gguf.GGUFReader(str(path))
    for t in reader.tensors:
        match = EXPERT_TENSOR.match(t.name)
        if match is None:
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)  # [E, rows, cols]
        yield int(match.group(1)), match.group(2), values


def run_perplexity(
    tools: LlamaCppTools,
    gguf_path: str | Path,
    text_file: str | Path,
    *,
    ctx: int,
    chunks: int | None = None,
    threads: int = 2,
    timeout: float = 3600,
) -> Perplexity:
    """``llama-perplexity -m GGUF -f TEXT -c CTX [--chunks N]``, parsed (:func:`parse_perplexity`).

    Raises:
        LlamaCppFailed: the tool failed or printed no final estimate (e.g. the text is shorter than 2 x ctx).
    """
    args: list[str | Path] = [
        tools.perplexity,
        "-m",
        gguf_path,
        "-f",
        text_file,
        "-c",
        str(ctx),
        "-t",
        str(threads),
        "-b",
        str(max(ctx, 512)),
    ]
    if chunks is not None:
        args += ["--chunks", str(chunks)]
    return run_parsed(args, parse_perplexity, what="llama-perplexity", timeout=timeout)
