"""Pure parsing of ``llama-perplexity --kl-divergence`` output and of its base logits file's header.

llama.cpp's ``kl_divergence`` (tools/perplexity/perplexity.cpp) prints a running table, one row per chunk of means
over chunks ``1..k`` (PPL(Q), ln(PPL(Q)/PPL(base)), KLD, RMS Δp, same top token, each ``± uncertainty``), then the
summary statistics (mean KLD ±, its percentiles, same-top ±, PPL(Q), PPL(base), their ratio, Δp percentiles).
It prints no per-token values; :attr:`KldResult.chunk_kld` recovers each chunk's own mean from the running ones
(every chunk scores the same ``n_ctx - 1 - n_ctx // 2`` tokens), for paired bootstrap intervals over chunks.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: llama-perplexity prints no KLD statistics below this many scored tokens.
MIN_KLD_TOKENS = 100

_NUM = r"(-?(?:[0-9]+\.?[0-9]*|nan|inf)(?:[eE][+-]?\d+)?)"
_PM = rf"{_NUM}\s*±\s*{_NUM}"
_ROW = re.compile(rf"^\s*(\d+)\s+{_PM}\s+{_PM}\s+{_PM}\s+{_PM}\s*%\s+{_PM}\s*%\s*$", re.M)
_COMPUTING = re.compile(r"kl_divergence: computing over (\d+) chunks, n_ctx=(\d+)")
_STAT = {
    "ppl_q": rf"Mean PPL\(Q\)\s*:\s*{_PM}",
    "ppl_base": rf"Mean PPL\(base\)\s*:\s*{_PM}",
    "ln_ppl_ratio": rf"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*{_PM}",
    "ppl_ratio": rf"Mean PPL\(Q\)/PPL\(base\)\s*:\s*{_PM}",
    "ppl_diff": rf"Mean PPL\(Q\)-PPL\(base\)\s*:\s*{_PM}",
    "mean_kld": rf"Mean\s+KLD:\s*{_PM}",
    "mean_dp": rf"Mean\s+Δp:\s*{_PM}\s*%",
    "rms_dp": rf"RMS Δp\s*:\s*{_PM}\s*%",
    "same_top": rf"Same top p:\s*{_PM}\s*%",
}
_COR = re.compile(rf"Cor\(ln\(PPL\(Q\)\), ln\(PPL\(base\)\)\):\s*{_NUM}%")
_PCT = re.compile(rf"^\s*(Maximum|Minimum|Median|[0-9.]+%)\s+(KLD|Δp):\s*{_NUM}%?\s*$", re.M)
_PCT_AT = {"Maximum": 100.0, "Minimum": 0.0, "Median": 50.0}


def _frac(percent: str | float) -> float:
    """A printed percentage as a fraction (rounded to drop float noise: 0.059 % -> 0.00059)."""
    return round(float(percent) / 100, 12)


@dataclass(frozen=True)
class KldChunk:
    """One row of llama-perplexity's running table: means over chunks ``1..chunk`` (not the chunk's own).

    Fractions, not percent: ``rms_dp`` and ``same_top`` (and their ``_unc``) are divided by 100.
    """

    chunk: int
    ppl: float
    ppl_unc: float
    ln_ppl_ratio: float
    ln_ppl_ratio_unc: float
    kld: float
    kld_unc: float
    rms_dp: float
    rms_dp_unc: float
    same_top: float
    same_top_unc: float


@dataclass(frozen=True)
class KldResult:
    """``llama-perplexity --kl-divergence`` of a quantized GGUF against the base's saved log-probabilities.

    Attributes:
        chunks: windows scored; n_ctx: their length; each window's last ``n_ctx - 1 - n_ctx // 2`` tokens count.
        mean_kld, mean_kld_unc: mean KL(base || Q) per token (nats) and its standard error.
        kld_percentiles: percentile (0 = minimum, 50 = median, 100 = maximum, 99.0, 99.9, ...) -> per-token KLD.
        same_top, same_top_unc: fraction of tokens whose top-1 token is the base's, and its standard error.
        ppl_q, ppl_base (+ ``_unc``): perplexities of both on the same tokens.
        cor_ln_ppl: correlation of the two per-token log-likelihoods (fraction).
        ln_ppl_ratio, ppl_ratio, ppl_diff (+ ``_unc``): mean ln(PPL(Q)/PPL(base)), its exp, PPL(Q) - PPL(base).
        mean_dp, rms_dp (+ ``_unc``): mean and RMS of p(Q) - p(base) of the correct token (fractions).
        dp_percentiles: percentile -> Δp (fraction).
        running: the running table, one :class:`KldChunk` per chunk.
    """

    chunks: int
    n_ctx: int
    mean_kld: float
    mean_kld_unc: float
    kld_percentiles: dict[float, float]
    same_top: float
    same_top_unc: float
    ppl_q: float
    ppl_q_unc: float
    ppl_base: float
    ppl_base_unc: float
    cor_ln_ppl: float
    ln_ppl_ratio: float
    ln_ppl_ratio_unc: float
    ppl_ratio: float
    ppl_ratio_unc: float
    ppl_diff: float
    ppl_diff_unc: float
    mean_dp: float
    mean_dp_unc: float
    rms_dp: float
    rms_dp_unc: float
    dp_percentiles: dict[float, float] = field(default_factory=dict)
    running: tuple[KldChunk, ...] = ()

    @property
    def tokens_per_chunk(self) -> int:
        """Scored tokens per chunk (llama.cpp scores the second half of each window, less its last token)."""
        return self.n_ctx - 1 - self.n_ctx // 2

    @property
    def median_kld(self) -> float:
        """Median per-token KLD."""
        return self.kld_percentiles[50.0]

    @property
    def p99_kld(self) -> float:
        """99th percentile of the per-token KLD."""
        return self.kld_percentiles[99.0]

    @property
    def max_kld(self) -> float:
        """Largest per-token KLD."""
        return self.kld_percentiles[100.0]

    @property
    def chunk_kld(self) -> list[float]:
        """Each chunk's own mean KLD, from the running means printed with 5 decimals: the error of chunk k is at
        most ``5e-6 * (2k - 1)``, so use enough chunks' worth of signal (or :func:`slice_kld_base` for exact ones)."""
        return chunk_means([r.kld for r in self.running])

    @property
    def chunk_ln_ppl_ratio(self) -> list[float]:
        """Each chunk's own mean ln(PPL(Q)/PPL(base)) (same rounding caveat as :attr:`chunk_kld`)."""
        return chunk_means([r.ln_ppl_ratio for r in self.running])

    @property
    def chunk_same_top(self) -> list[float]:
        """Each chunk's own same-top-token fraction, exact: counts are integers, recovered by rounding."""
        t = self.tokens_per_chunk
        counts = [round(r.same_top * r.chunk * t) for r in self.running]
        return [(c - p) / t for c, p in zip(counts, [0, *counts[:-1]], strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (percentile keys as strings, the per-chunk values included)."""
        out = asdict(self)
        out["kld_percentiles"] = {f"{k:g}": v for k, v in self.kld_percentiles.items()}
        out["dp_percentiles"] = {f"{k:g}": v for k, v in self.dp_percentiles.items()}
        out["running"] = [asdict(r) for r in self.running]
        out.update(
            tokens_per_chunk=self.tokens_per_chunk,
            median_kld=self.median_kld,
            p99_kld=self.p99_kld,
            max_kld=self.max_kld,
            chunk_kld=self.chunk_kld,
            chunk_ln_ppl_ratio=self.chunk_ln_ppl_ratio,
            chunk_same_top=self.chunk_same_top,
        )
        return out


def chunk_means(running: Sequence[float]) -> list[float]:
    """Each chunk's own mean from running means over equal-sized chunks: ``m_k * k - m_{k-1} * (k - 1)``."""
    return [m * k - p * (k - 1) for k, (m, p) in enumerate(zip(running, [0.0, *running[:-1]], strict=True), start=1)]


def parse_kld(output: str) -> KldResult:
    """Parse ``llama-perplexity --kl-divergence`` output (tools/perplexity/perplexity.cpp, ``kl_divergence``).

    Args:
        output: the tool's stdout and stderr.

    Returns:
        The :class:`KldResult`.

    Raises:
        ValueError: the output holds no statistics (the run failed, or scored fewer than 100 tokens).
    """
    found: dict[str, tuple[float, float]] = {}
    for key, pattern in _STAT.items():
        match = re.search(pattern, output)
        if match is None:
            raise ValueError(f"llama-perplexity printed no KL-divergence statistics ({key} missing)")
        found[key] = (float(match.group(1)), float(match.group(2)))
    kld_pct: dict[float, float] = {}
    dp_pct: dict[float, float] = {}
    for match in _PCT.finditer(output):
        label = match.group(1)
        at = _PCT_AT[label] if label in _PCT_AT else float(label.rstrip("%"))
        if match.group(2) == "KLD":
            kld_pct[at] = float(match.group(3))
        else:
            dp_pct[at] = _frac(match.group(3))
    cor = _COR.search(output)
    running = tuple(
        KldChunk(int(m[0]), *(float(v) for v in m[1:7]), *(_frac(v) for v in m[7:11])) for m in _ROW.findall(output)
    )
    computing = _COMPUTING.search(output)
    if computing is None:
        raise ValueError("llama-perplexity printed no 'kl_divergence: computing over N chunks, n_ctx=C' line")
    chunks = int(computing.group(1))
    if [r.chunk for r in running] != list(range(1, chunks + 1)):
        raise ValueError(f"llama-perplexity's per-chunk table has {len(running)} of {chunks} rows")
    return KldResult(
        chunks=chunks,
        n_ctx=int(computing.group(2)),
        mean_kld=found["mean_kld"][0],
        mean_kld_unc=found["mean_kld"][1],
        kld_percentiles=kld_pct,
        same_top=_frac(found["same_top"][0]),
        same_top_unc=_frac(found["same_top"][1]),
        ppl_q=found["ppl_q"][0],
        ppl_q_unc=found["ppl_q"][1],
        ppl_base=found["ppl_base"][0],
        ppl_base_unc=found["ppl_base"][1],
        cor_ln_ppl=_frac(cor.group(1)) if cor else float("nan"),
        ln_ppl_ratio=found["ln_ppl_ratio"][0],
        ln_ppl_ratio_unc=found["ln_ppl_ratio"][1],
        ppl_ratio=found["ppl_ratio"][0],
        ppl_ratio_unc=found["ppl_ratio"][1],
        ppl_diff=found["ppl_diff"][0],
        ppl_diff_unc=found["ppl_diff"][1],
        mean_dp=_frac(found["mean_dp"][0]),
        mean_dp_unc=_frac(found["mean_dp"][1]),
        rms_dp=_frac(found["rms_dp"][0]),
        rms_dp_unc=_frac(found["rms_dp"][1]),
        dp_percentiles=dp_pct,
        running=running,
    )


@dataclass(frozen=True)
class KldBase:
    """Header of a ``--kl-divergence-base`` logits file."""

    n_ctx: int
    n_vocab: int
    chunks: int

    @property
    def tokens_per_chunk(self) -> int:
        """Scored tokens per chunk."""
        return self.n_ctx - 1 - self.n_ctx // 2

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one chunk's uint16 log-probabilities."""
        return self.tokens_per_chunk * (2 * ((self.n_vocab + 1) // 2) + 4) * 2


#: ``_logits_`` magic, ``u32 n_ctx``, ``i32 n_vocab``, ``i32 n_chunk`` (then the tokens and log-probabilities).
HEADER = struct.Struct("<8sIii")


def parse_kld_header(raw: bytes) -> KldBase | None:
    """The :class:`KldBase` of a logits file's first :data:`HEADER` bytes; None if they are not one's."""
    if len(raw) < HEADER.size or raw[:8] != b"_logits_":
        return None
    _, n_ctx, n_vocab, chunks = HEADER.unpack(raw[: HEADER.size])
    return KldBase(n_ctx=n_ctx, n_vocab=n_vocab, chunks=chunks)
