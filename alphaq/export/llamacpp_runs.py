"""Runs of llama.cpp's own tools that measure quantized GGUFs: KL divergence, importance matrices, preset sizes.

* :func:`kld_base`: ``llama-perplexity --kl-divergence-base`` on the F16 GGUF saves its log-probabilities.
* :func:`kld`: ``llama-perplexity --kl-divergence`` of a quantized GGUF against them, parsed by :func:`parse_kld`
  (the summary statistics and, from the running per-chunk table, each chunk's own means for paired intervals).
  llama-perplexity prints no per-token values (only percentiles of them), so chunks are the finest unit.
* :func:`imatrix` / :func:`read_imatrix`: ``llama-imatrix`` to a GGUF importance matrix (the format
  ``llama-quantize --imatrix`` reads) and back (``<weight>.in_sum2`` and ``<weight>.counts`` tensors).
* :func:`preset_size`: ``llama-quantize F16 OUT PRESET``: the file's bytes and per-tensor types.
* :func:`synthetic_token_text`: uniformly random token ids decoded to text (data-free imatrix input).

The base logits file (``_logits_`` magic, ``u32 n_ctx, i32 n_vocab, i32 n_chunk``, ``n_chunk * n_ctx`` int32
tokens, then per chunk ``(n_ctx - 1 - n_ctx // 2) * nv`` uint16 log-probabilities, ``nv = 2 * ceil(n_vocab / 2) + 4``)
is read by :func:`read_kld_base` and cut to a subset of chunks by :func:`slice_kld_base`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphaq.errors import ConfigError
from alphaq.export.gguf_check import Perplexity, last_error_line, parse_perplexity
from alphaq.export.gguf_io import import_gguf, read_types
from alphaq.export.kld_output import HEADER, MIN_KLD_TOKENS, KldBase, KldChunk, KldResult, parse_kld, parse_kld_header
from alphaq.export.kld_tokens import saved_perplexity
from alphaq.export.llamacpp_tools import ATTEMPTS, ERROR_LINE, LlamaCppFailed, LlamaCppTools, run_parsed, run_tool

__all__ = [
    "KldBase",
    "KldChunk",
    "KldResult",
    "PresetSize",
    "imatrix",
    "kld",
    "kld_base",
    "parse_kld",
    "preset_size",
    "read_imatrix",
    "read_kld_base",
    "slice_kld_base",
    "synthetic_token_text",
]
#: Runs of llama-perplexity whose summary went missing (see :func:`_run_parsed`) are repeated this often.

#: ``llama-quantize`` type names of the vendored llama.cpp (``QUANT_OPTIONS`` in tools/quantize/quantize.cpp).
KNOWN_PRESETS: tuple[str, ...] = (
    "Q1_0", "Q2_0", "Q4_0", "Q4_1", "MXFP4_MOE", "Q5_0", "Q5_1", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S",
    "IQ1_M", "TQ1_0", "TQ2_0", "Q2_K", "Q2_K_S", "IQ3_XXS", "IQ3_S", "IQ3_M", "Q3_K", "IQ3_XS", "Q3_K_S", "Q3_K_M",
    "Q3_K_L", "IQ4_NL", "IQ4_XS", "Q4_K", "Q4_K_S", "Q4_K_M", "Q5_K", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "F16",
    "BF16", "F32", "COPY",
)  # fmt: skip
#: The k-quant reference presets (and Q8_0).
REFERENCE_PRESETS: tuple[str, ...] = (
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0",
)  # fmt: skip
#: Presets llama-quantize refuses without ``--imatrix`` (types tensor_requires_imatrix names, src/llama-quant.cpp).
IMATRIX_PRESETS: frozenset[str] = frozenset(
    {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"}
)


def read_kld_base(path: str | Path) -> KldBase:
    """The header of a logits file written by :func:`kld_base`; ConfigError if it is not one."""
    with open(path, "rb") as f:
        raw = f.read(HEADER.size)
    base = parse_kld_header(raw)
    if base is None:
        raise ConfigError(
            f"{path} is not a llama-perplexity logits file; write one with kld_base (--kl-divergence-base)"
        )
    return base


def slice_kld_base(path: str | Path, out: str | Path, chunks: Sequence[int]) -> Path:
    """Write a logits file holding only ``chunks`` (0-based, in that order) of ``path``; returns ``out``."""
    base = read_kld_base(path)
    bad = [c for c in chunks if not 0 <= c < base.chunks]
    if bad or not chunks:
        raise ConfigError(f"chunks {bad or '[]'} are not in 0..{base.chunks - 1} of {path}; pick existing chunks")
    tokens_start = HEADER.size
    probs_start = tokens_start + 4 * base.n_ctx * base.chunks
    with open(path, "rb") as src, open(out, "wb") as dst:
        dst.write(HEADER.pack(b"_logits_", base.n_ctx, base.n_vocab, len(chunks)))
        for c in chunks:
            src.seek(tokens_start + 4 * base.n_ctx * c)
            dst.write(src.read(4 * base.n_ctx))
        for c in chunks:
            src.seek(probs_start + base.chunk_bytes * c)
            dst.write(src.read(base.chunk_bytes))
    return Path(out)


def _perplexity_args(tools: LlamaCppTools, gguf: str | Path, ctx: int, threads: int) -> list[str | Path]:
    return [tools.perplexity, "-m", gguf, "-c", str(ctx), "-t", str(threads), "-b", str(max(ctx, 512))]


def kld_base(
    tools: LlamaCppTools,
    f16_gguf: str | Path,
    text_file: str | Path,
    logits_out: str | Path,
    *,
    ctx: int,
    chunks: int,
    threads: int = 2,
    timeout: float = 3600,
) -> Perplexity:
    """``llama-perplexity -m F16 -f TEXT -c CTX --chunks N --kl-divergence-base LOGITS``: save the reference.

    Args:
        tools: the llama.cpp tools.
        f16_gguf: the unquantized GGUF (or a quantized one: two such files give per-token values,
            :func:`alphaq.export.kld_tokens.token_kld`).
        text_file: evaluation text (needs ``chunks * ctx`` tokens).
        logits_out: logits file to write (``chunks * (ctx // 2) * n_vocab * 2`` bytes, about).
        ctx: window length; chunks: windows.
        threads: CPU threads.
        timeout: seconds.

    Returns:
        The model's perplexity on those windows (recomputed from the saved file when llama.cpp's log was cut).

    Raises:
        ConfigError: fewer than 100 scored tokens (llama-perplexity would print no KLD statistics later).
        LlamaCppFailed: the tool failed.
    """
    if chunks * (ctx - 1 - ctx // 2) < MIN_KLD_TOKENS:
        raise ConfigError(
            f"{chunks} chunk(s) of ctx {ctx} score under {MIN_KLD_TOKENS} tokens, too few for llama-perplexity's "
            "KLD statistics; raise chunks or ctx"
        )
    args = [*_perplexity_args(tools, f16_gguf, ctx, threads), "-f", text_file, "--chunks", str(chunks)]
    args += ["--kl-divergence-base", logits_out]
    done = run_tool(args, what="llama-perplexity --kl-divergence-base", timeout=timeout)
    output = done.stdout + done.stderr
    try:
        return parse_perplexity(output)
    except ValueError as error:
        if ERROR_LINE.search(output) or not Path(logits_out).is_file():
            raise LlamaCppFailed(f"{error}: {last_error_line(output)}") from None
    return saved_perplexity(logits_out)  # the log was cut at exit (see _run_parsed); the file is complete


def kld(
    tools: LlamaCppTools,
    gguf: str | Path,
    logits_file: str | Path,
    *,
    ctx: int | None = None,
    chunks: int | None = None,
    threads: int = 2,
    timeout: float = 3600,
    work_dir: str | Path | None = None,
    attempts: int = ATTEMPTS,
) -> KldResult:
    """``llama-perplexity -m Q --kl-divergence-base LOGITS --kl-divergence``, parsed (:func:`parse_kld`).

    Args:
        tools: the llama.cpp tools.
        gguf: the GGUF to compare (quantized, or the F16 itself: KLD 0).
        logits_file: written by :func:`kld_base` for the same vocabulary.
        ctx: window length; None: the file's (another value is an error, llama.cpp needs the same).
        chunks: score only the file's first ``chunks`` windows (a sliced copy goes to ``work_dir``, default
            beside ``logits_file``); None: all.
        threads: CPU threads.
        timeout: seconds (per run).
        work_dir: folder for the sliced copy.
        attempts: runs before giving up when llama.cpp's log is cut at exit (no statistics, no error).

    Returns:
        The :class:`KldResult`.

    Raises:
        ConfigError: ``ctx`` or ``chunks`` do not fit the logits file.
        LlamaCppFailed: the tool failed or printed no statistics.
    """
    base = read_kld_base(logits_file)
    if ctx is not None and ctx != base.n_ctx:
        raise ConfigError(f"{logits_file} holds ctx {base.n_ctx} windows, not {ctx}; pass ctx={base.n_ctx} or None")
    if chunks is not None and not 0 < chunks <= base.chunks:
        raise ConfigError(f"{logits_file} holds {base.chunks} chunks, cannot score {chunks}; pass 1..{base.chunks}")
    source = Path(logits_file)
    if chunks is not None and chunks < base.chunks:
        folder = Path(work_dir) if work_dir is not None else source.parent
        source = slice_kld_base(logits_file, folder / f"{source.stem}.first{chunks}{source.suffix}", range(chunks))
    args = [*_perplexity_args(tools, gguf, base.n_ctx, threads), "--kl-divergence-base", source, "--kl-divergence"]
    try:
        return run_parsed(args, parse_kld, what="llama-perplexity --kl-divergence", timeout=timeout, attempts=attempts)
    finally:
        if source != Path(logits_file):
            source.unlink(missing_ok=True)


def imatrix(
    tools: LlamaCppTools,
    gguf: str | Path,
    text_file: str | Path,
    out: str | Path,
    *,
    ctx: int,
    chunks: int,
    threads: int = 2,
    timeout: float = 3600,
) -> Path:
    """``llama-imatrix -m GGUF -f TEXT -o OUT.gguf -c CTX --chunks N --no-ppl``: a GGUF importance matrix.

    Args:
        tools: the llama.cpp tools (their ``llama-imatrix``).
        gguf: the model (usually the F16 GGUF).
        text_file: calibration text (or :func:`synthetic_token_text`).
        out: ``.gguf`` file to write (the format ``llama-quantize --imatrix`` reads; read back by
            :func:`read_imatrix`).
        ctx: window length; chunks: windows.
        threads: CPU threads.
        timeout: seconds.

    Returns:
        ``out``.

    Raises:
        LlamaCppMissing: the tools folder has no llama-imatrix.
        ConfigError: ``out`` does not end in ``.gguf``.
        LlamaCppFailed: the tool failed or wrote nothing.
    """
    binary = tools.require_imatrix()
    if Path(out).suffix != ".gguf":
        raise ConfigError(f"imatrix output {out} must end in .gguf (llama-imatrix writes a GGUF importance matrix)")
    args: list[str | Path] = [binary, "-m", gguf, "-f", text_file, "-o", out, "-c", str(ctx), "--chunks", str(chunks)]
    done = run_tool(
        [*args, "-t", str(threads), "-b", str(max(ctx, 512)), "--no-ppl"], what="llama-imatrix", timeout=timeout
    )
    if not Path(out).is_file():
        raise LlamaCppFailed(f"llama-imatrix wrote no {out}: {last_error_line(done.stdout + done.stderr)}")
    return Path(out)


def read_imatrix(path: str | Path) -> dict[str, tuple[Any, Any]]:
    """A GGUF importance matrix: weight name -> (sums of squared inputs ``[n_mat, n_per_row]``, counts ``[n_mat]``).

    ``n_mat`` is the number of experts for routed-expert tensors (``blk.N.ffn_*_exps.weight``, counts per expert)
    and 1 for dense ones; ``sums / counts[:, None]`` is the mean squared input per column.
    """
    import numpy as np

    gguf = import_gguf()
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    out: dict[str, tuple[Any, Any]] = {}
    for name, t in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        weight = name.removesuffix(".in_sum2")
        counts = tensors.get(f"{weight}.counts")
        if counts is None:
            raise ConfigError(f"{path} has {name} but no {weight}.counts; regenerate it with llama-imatrix")
        n_mat = int(np.asarray(counts.data).size)
        sums = np.asarray(t.data, dtype=np.float32).reshape(n_mat, -1)  # [n_mat, n_per_row]
        out[weight] = (sums, np.asarray(counts.data, dtype=np.float32).reshape(n_mat))  # [n_mat]
    if not out:
        raise ConfigError(f"{path} holds no importance-matrix tensors (*.in_sum2); write it with llama-imatrix")
    return out


@dataclass(frozen=True)
class PresetSize:
    """A ``llama-quantize`` preset applied to the F16 GGUF.

    Attributes:
        preset: llama-quantize's type name (``Q4_K_M``).
        file_bytes: size of the quantized GGUF.
        types: tensor name -> (ggml type, bytes).
        path: the GGUF (None when it was deleted).
        imatrix: the importance matrix used, if any.
    """

    preset: str
    file_bytes: int
    types: dict[str, tuple[str, int]]
    path: Path | None
    imatrix: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "preset": self.preset,
            "file_bytes": self.file_bytes,
            "tensor_bytes": sum(b for _, b in self.types.values()),
            "types": {n: list(v) for n, v in self.types.items()},
            "path": str(self.path) if self.path else None,
            "imatrix": str(self.imatrix) if self.imatrix else None,
        }


def check_preset(preset: str, *, imatrix: bool = False) -> str:
    """llama-quantize's name for ``preset`` (case-insensitive), or ConfigError listing the known ones."""
    name = preset.upper()
    if name not in KNOWN_PRESETS:
        raise ConfigError(f"llama-quantize knows no preset {preset!r}; use one of {', '.join(KNOWN_PRESETS)}")
    if name in IMATRIX_PRESETS and not imatrix:
        raise ConfigError(f"llama-quantize needs an importance matrix for {name}; pass imatrix= (see imatrix())")
    return name


def preset_size(
    tools: LlamaCppTools,
    f16_gguf: str | Path,
    preset: str,
    *,
    work_dir: str | Path,
    imatrix: str | Path | None = None,
    keep: bool = False,
    threads: int = 2,
    timeout: float = 3600,
) -> PresetSize:
    """``llama-quantize [--imatrix I] F16 OUT PRESET``: the preset's file size and per-tensor types.

    Args:
        tools: the llama.cpp tools.
        f16_gguf: the unquantized GGUF.
        preset: a llama-quantize type name (:data:`REFERENCE_PRESETS`, or any of :data:`KNOWN_PRESETS`).
        work_dir: where ``<f16 stem>-<PRESET>.gguf`` (``-<PRESET>-imatrix.gguf`` with an imatrix) is written.
        imatrix: a GGUF importance matrix (:func:`imatrix`) for ``--imatrix``.
        keep: keep the quantized file (``path`` set); else it is deleted after reading.
        threads: CPU threads.
        timeout: seconds.

    Returns:
        The :class:`PresetSize`.

    Raises:
        ConfigError: unknown preset (checked before running), or one that needs an imatrix without one.
        LlamaCppFailed: llama-quantize failed.
    """
    name = check_preset(preset, imatrix=imatrix is not None)
    out = Path(work_dir) / f"{Path(f16_gguf).stem}-{name}{'-imatrix' if imatrix is not None else ''}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    args: list[str | Path] = [tools.quantize]
    if imatrix is not None:
        args += ["--imatrix", imatrix]
    run_tool([*args, f16_gguf, out, name, str(threads)], what=f"llama-quantize {name}", timeout=timeout)
    try:
        result = PresetSize(
            preset=name,
            file_bytes=out.stat().st_size,
            types=read_types(out),
            path=out if keep else None,
            imatrix=Path(imatrix) if imatrix is not None else None,
        )
    finally:
        if not keep:
            out.unlink(missing_ok=True)
    return result


def synthetic_token_text(tokenizer: str | Path, n_tokens: int, seed: int) -> str:
    """Uniformly random non-special token ids decoded to text: data-free input for a synthetic imatrix.

    Args:
        tokenizer: a ``tokenizer.json`` or a checkpoint folder holding one.
        n_tokens: ids to draw (llama.cpp re-tokenizes the text, so it yields about, not exactly, that many).
        seed: random seed (same seed, same text).

    Returns:
        The decoded text.

    Raises:
        ConfigError: no tokenizer.json there, or ``n_tokens`` < 1.
    """
    import numpy as np
    from tokenizers import Tokenizer

    path = Path(tokenizer)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"no tokenizer.json at {tokenizer}; pass a tokenizer.json or a checkpoint folder with one")
    if n_tokens < 1:
        raise ConfigError(f"n_tokens must be at least 1, got {n_tokens}")
    tok = Tokenizer.from_file(str(path))
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    ids = np.array([i for i in range(tok.get_vocab_size(with_added_tokens=True)) if i not in special])  # [V']
    drawn = np.random.default_rng(seed).choice(ids, size=n_tokens, replace=True)  # [n_tokens]
    return tok.decode(drawn.tolist(), skip_special_tokens=True)
