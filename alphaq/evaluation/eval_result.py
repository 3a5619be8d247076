"""What ``alphaq eval`` returns: :class:`EvalResult` (the ``eval.json`` record with typed views) and the record's
KL-divergence entry (:func:`divergence_record`). Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EvalResult:
    """What ``alphaq eval`` measured.

    Attributes:
        record: the ``eval.json`` content (source, checkpoint, protocol, perplexity, baseline, memory, verification).
        out_dir: the folder it was written to (None: nothing written).
    """

    record: Mapping[str, Any]
    out_dir: Path | None = None

    @property
    def kind(self) -> str:
        """What was evaluated: ``original``, ``quantized`` or ``simulated``."""
        return str(self.record["source"]["kind"])

    @property
    def ppl(self) -> float:
        """Perplexity of the evaluated model (NaN when no window fits the text)."""
        return float(self.record["ppl"])

    @property
    def nll(self) -> float:
        """Mean token negative log-likelihood (nats)."""
        return float(self.record["nll"])

    @property
    def baseline_ppl(self) -> float | None:
        """Perplexity of the original model on the same windows (None: no baseline was measured)."""
        baseline = self.record.get("baseline")
        return float(baseline["ppl"]) if baseline else None

    @property
    def ppl_increase(self) -> float | None:
        """``ppl - baseline_ppl`` (None without a baseline)."""
        increase = self.record.get("ppl_increase")
        return float(increase) if increase is not None else None

    @property
    def kld(self) -> Mapping[str, Any] | None:
        """KL divergence from the original on the same windows (``mean_kld``, ``median_kld``, ``p99_kld``,
        ``same_top`` and their intervals); None without a baseline."""
        return self.record.get("kld")

    @property
    def windows(self) -> int:
        """Windows evaluated."""
        return int(self.record["windows"])

    @property
    def tokens(self) -> int:
        """Tokens scored."""
        return int(self.record["tokens"])

    @property
    def verification(self) -> Mapping[str, Any]:
        """The plan-vs-measured summary (empty tensor list for the original model)."""
        return self.record["verification"]

    def to_dict(self) -> dict[str, Any]:
        """A copy of :attr:`record` (the ``eval.json`` content)."""

        return copy.deepcopy(dict(self.record))


def divergence_record(result: Any, *, resamples: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """The ``kld`` entry of eval.json: the :class:`~alphaq.evaluation.divergence.DivergenceResult` summary with
    paired-bootstrap 95 % intervals over windows of the mean KLD and of the same-top-token rate.

    Args:
        result: a ``DivergenceResult`` (None: no KLD was measured).
        resamples: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        The record, or None.
    """
    if result is None:
        return None
    record = result.record()
    if result.windows >= 2:
        from alphaq.evaluation.bootstrap import paired_mean_bootstrap

        zeros = [0.0] * result.windows
        record["mean_kld_interval"] = paired_mean_bootstrap(
            result.window_kld, zeros, result.window_tokens, resamples=resamples, seed=seed
        ).to_dict()
        record["same_top_interval"] = paired_mean_bootstrap(
            result.window_same_top, zeros, result.window_tokens, resamples=resamples, seed=seed
        ).to_dict()
    return record


__all__ = ["EvalResult", "divergence_record"]
