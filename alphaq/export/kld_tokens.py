"""Per-token KL divergence from two saved log-probability files (``llama-perplexity --kl-divergence-base``).

``llama-perplexity --kl-divergence`` prints only means and percentiles. Saving the quantized model's
log-probabilities too (:func:`alphaq.export.llamacpp_runs.kld_base` on the quantized GGUF, same text, ctx and
chunks) gives both models' per-token distributions; :func:`token_kld` then computes, token by token, what
llama.cpp averages: ``KL = sum_i p_base_i (ln p_base_i - ln p_q_i)`` over tokens with ``ln p_base_i > -16``,
whether the top token agrees, and both negative log-likelihoods of the actual next token.

Both files store each token's log-probabilities as uint16 over the 16 nats below the top one (step at most
16 / 65535 = 2.4e-4 nats), so the values differ from llama.cpp's (which uses the quantized model's float logits)
by rounding of that order; a file against itself gives exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphaq.errors import ConfigError
from alphaq.export.gguf_check import Perplexity
from alphaq.export.kld_output import HEADER, KldBase, parse_kld_header

#: llama.cpp's cut: base log-probabilities at or below this do not enter the KL sum.
LOG_PROB_FLOOR = -16.0


@dataclass(frozen=True)
class TokenKld:
    """Per-token statistics of a quantized model against the base, ``[chunks, tokens_per_chunk]`` each.

    Attributes:
        kld: KL(base || Q) per token (nats).
        same_top: whether both models' most likely token agree.
        nll_q: -ln p_Q(next token).
        nll_base: -ln p_base(next token).
    """

    kld: Any
    same_top: Any
    nll_q: Any
    nll_base: Any

    def chunk_means(self) -> dict[str, Any]:
        """Each chunk's own means (``[chunks]``): kld, same_top, ln_ppl_ratio (mean nll_q - nll_base)."""
        return {
            "kld": self.kld.mean(axis=1),
            "same_top": self.same_top.mean(axis=1),
            "ln_ppl_ratio": (self.nll_q - self.nll_base).mean(axis=1),
        }


def decode_log_probs(block: Any, n_vocab: int) -> Any:
    """One chunk's stored rows (``[tokens, nv]`` uint16) as float32 log-probabilities ``[tokens, n_vocab]``."""
    import numpy as np

    head = np.ascontiguousarray(block[:, :4]).view(np.float32)  # [T, 2]: scale, min log-prob
    return block[:, 4 : 4 + n_vocab].astype(np.float32) * head[:, :1] + head[:, 1:2]  # [T, V]


def token_kld_block(base_lp: Any, q_lp: Any, next_tokens: Any) -> tuple[Any, Any, Any, Any]:
    """KL, top-token agreement and both NLLs for one chunk.

    Args:
        base_lp: base log-probabilities ``[T, V]``.
        q_lp: quantized model's log-probabilities ``[T, V]``.
        next_tokens: the token each position predicts ``[T]``.

    Returns:
        ``(kld [T], same_top [T], nll_q [T], nll_base [T])``.
    """
    import numpy as np

    keep = base_lp > LOG_PROB_FLOOR  # [T, V]
    p_base = np.where(keep, np.exp(base_lp), 0.0)  # [T, V]
    kld = (p_base * np.where(keep, base_lp - q_lp, 0.0)).sum(axis=1, dtype=np.float64)  # [T]
    same_top = base_lp.argmax(axis=1) == q_lp.argmax(axis=1)  # [T]
    rows = np.arange(len(next_tokens))
    return kld, same_top, -q_lp[rows, next_tokens], -base_lp[rows, next_tokens]


def _read_header(path: Path) -> KldBase:
    with open(path, "rb") as f:
        base = parse_kld_header(f.read(HEADER.size))
    if base is None:
        raise ConfigError(
            f"{path} is not a llama-perplexity logits file; write one with kld_base (--kl-divergence-base)"
        )
    return base


def token_kld(base_logits: str | Path, q_logits: str | Path) -> TokenKld:
    """Per-token KL divergence, top-token agreement and NLLs from two logits files of the same windows.

    Args:
        base_logits: the F16's file (:func:`alphaq.export.llamacpp_runs.kld_base`).
        q_logits: the quantized GGUF's file, written the same way on the same text, ctx and chunks.

    Returns:
        The :class:`TokenKld` (``[chunks, n_ctx - 1 - n_ctx // 2]`` arrays).

    Raises:
        ConfigError: not logits files, or not of the same windows (ctx, vocabulary, chunks or tokens differ).
    """
    import numpy as np

    paths = (Path(base_logits), Path(q_logits))
    base, other = (_read_header(p) for p in paths)
    if base != other:
        raise ConfigError(
            f"{paths[1]} ({other}) does not match {paths[0]} ({base}); save both with the same text, ctx and chunks"
        )
    n_tok = base.n_ctx * base.chunks
    first, t = base.n_ctx // 2, base.tokens_per_chunk
    nv = base.chunk_bytes // (2 * t)
    out = {k: np.zeros((base.chunks, t), dtype=np.float64) for k in ("kld", "nll_q", "nll_base")}
    same = np.zeros((base.chunks, t), dtype=bool)
    with open(paths[0], "rb") as fb, open(paths[1], "rb") as fq:
        fb.seek(HEADER.size)
        fq.seek(HEADER.size)
        tokens = [np.frombuffer(f.read(4 * n_tok), dtype=np.int32) for f in (fb, fq)]
        if not np.array_equal(*tokens):
            raise ConfigError(f"{paths[1]} scores other tokens than {paths[0]}; save both from the same text file")
        windows = tokens[0].reshape(base.chunks, base.n_ctx)  # [chunks, n_ctx]
        for c in range(base.chunks):
            blocks = [np.frombuffer(f.read(base.chunk_bytes), dtype=np.uint16).reshape(t, nv) for f in (fb, fq)]
            lp_b, lp_q = (decode_log_probs(b, base.n_vocab) for b in blocks)  # [T, V] each
            kld, same[c], out["nll_q"][c], out["nll_base"][c] = token_kld_block(
                lp_b, lp_q, windows[c, first + 1 : first + 1 + t]
            )
            out["kld"][c] = kld
    return TokenKld(kld=out["kld"], same_top=same, nll_q=out["nll_q"], nll_base=out["nll_base"])


def saved_nll(path: str | Path) -> Any:
    """-ln p(next token) of every scored token in one logits file, ``[chunks, n_ctx - 1 - n_ctx // 2]``."""
    import numpy as np

    base = _read_header(Path(path))
    first, t = base.n_ctx // 2, base.tokens_per_chunk
    nv = base.chunk_bytes // (2 * t)
    nll = np.zeros((base.chunks, t), dtype=np.float64)
    with open(path, "rb") as f:
        f.seek(HEADER.size)
        windows = np.frombuffer(f.read(4 * base.n_ctx * base.chunks), dtype=np.int32).reshape(base.chunks, -1)
        for c in range(base.chunks):
            block = np.frombuffer(f.read(base.chunk_bytes), dtype=np.uint16).reshape(t, nv)
            head = np.ascontiguousarray(block[:, :4]).view(np.float32)  # [T, 2]: scale, min log-prob
            stored = block[np.arange(t), 4 + windows[c, first + 1 : first + 1 + t]].astype(np.float64)  # [T]
            nll[c] = -(stored * head[:, 0] + head[:, 1])
    return nll


def saved_perplexity(path: str | Path) -> Perplexity:
    """llama-perplexity's estimate recomputed from a saved logits file (uint16: within ~1e-4 nats per token)."""
    import numpy as np

    nll = saved_nll(path).ravel()  # [tokens]
    base = _read_header(Path(path))
    ppl = float(np.exp(nll.mean()))
    stderr = ppl * float(nll.std() / np.sqrt(nll.size - 1))
    return Perplexity(ppl=ppl, stderr=stderr, chunks=base.chunks, n_ctx=base.n_ctx)
