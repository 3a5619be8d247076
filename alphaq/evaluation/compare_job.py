"""The per-plan work of ``alphaq compare``: what every plan of one run shares (:class:`CompareJob`), and
:func:`evaluate_entry`, which makes one plan, applies it to the loaded model by simulated quantization, scores its
perplexity and KL divergence from the original, and undoes it (:func:`snapshot_weights` / :func:`restore_weights`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from alphaq.errors import AlphaQError
from alphaq.evaluation.compare_stats import plan_predictors, row_key
from alphaq.evaluation.divergence import DivergenceMeter
from alphaq.runfolder import COMPARE_PLANS_DIR

if TYPE_CHECKING:
    from alphaq.planning.costs import MatrixErrors
    from alphaq.planning.planner import PlanConfig


def text_tokens(tokenizer: Any, path: Path) -> Any:
    """The token ids of a text file.

    Args:
        tokenizer: the model's tokenizer.
        path: the text file.

    Returns:
        A 1-D ``torch.long`` tensor of token ids.
    """
    import torch

    from alphaq.evaluation.datasets import read_text
    from alphaq.load.model import tokenize_text

    return torch.tensor(tokenize_text(tokenizer, read_text(path)), dtype=torch.long)


def snapshot_weights(model: Any) -> dict[str, Any]:
    """Copies of the parameters a plan may change (routed experts and every 2-D weight).

    Args:
        model: the loaded model.

    Returns:
        Parameter name -> a detached copy of its value.
    """
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.dim() >= 2}


def restore_weights(model: Any, snapshot: dict[str, Any]) -> None:
    """Copy a :func:`snapshot_weights` back into ``model`` in place (undoes an applied plan).

    Args:
        model: the model the snapshot was taken of.
        snapshot: what :func:`snapshot_weights` returned.
    """
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in snapshot.items():
            params[name].data.copy_(value)


def expert_shares(model: Any, ids: Any, context: int, max_windows: int | None) -> dict[tuple[int, int], float]:
    """Each routed expert's share of the routing decisions on ``ids`` (windows of ``context`` tokens).

    Args:
        model: the loaded model.
        ids: 1-D token ids.
        context: window length.
        max_windows: at most this many windows (None: all).

    Returns:
        ``(layer, expert)`` -> share.
    """
    from alphaq.evaluation.routing import routing_stats

    return routing_stats(model, ids, context=context, max_windows=max_windows).shares()


@dataclasses.dataclass
class CompareJob:
    """What every plan of one compare run shares: the loaded model, its text, the cost tables, the outputs."""

    lm: Any
    ids: Any
    window: int
    max_windows: int | None
    snapshot: dict[str, Any]
    details: pd.DataFrame
    errors: MatrixErrors
    provenance: dict[str, Any]
    shares: dict[str, Any]
    eval_shares: dict[tuple[int, int], float]
    routing_prior: dict[tuple[int, int], float]
    out: Path
    original_ppl: float
    num_layers: int
    sq_norm: dict[str, float]
    alpha: dict[str, float]
    reference: Any = None
    windows: dict[str, tuple[Sequence[float], Sequence[int]]] = dataclasses.field(default_factory=dict)
    kld_windows: dict[str, tuple[Sequence[float], Sequence[int]]] = dataclasses.field(default_factory=dict)
    verification: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def evaluate_entry(
    job: CompareJob,
    cfg: PlanConfig,
    entry: str,
    budget: str,
    seed: int | None,
    *,
    calibration: str | None,
    routing_shares: Any,
) -> dict[str, Any]:
    """Plan one (budget, allocator[, seed]) with the plan stage's own make_plan, apply it, score it, undo it.

    Args:
        job: the run's shared state (its ``windows``, ``kld_windows`` and ``verification`` are appended to).
        cfg: the plan options of this entry.
        entry: the entry's name (allocator, or ``frequency-in``/``frequency-out``).
        budget: the budget as given.
        seed: the random allocator's seed (None for the others).
        calibration: the calibration text's record path (frequency entries), else None.
        routing_shares: the calibration text's expert shares (frequency entries), else None.

    Returns:
        The entry's row of the compare table (``status`` ``infeasible`` with a message where no plan fits).
    """
    from alphaq.evaluation.perplexity import perplexity
    from alphaq.evaluation.simulate import apply_plan
    from alphaq.planning.plan_file import save_plan
    from alphaq.planning.planner import make_plan

    row: dict[str, Any] = {
        "entry": entry,
        "allocator": cfg.allocator,
        "budget": budget,
        "seed": seed,
        "calibration": calibration,
    }
    try:
        plan = make_plan(
            job.details,
            None,
            cfg,
            errors=job.errors,
            routing_shares=routing_shares,
            provenance={**job.provenance, "calibration_text": calibration},
        )
    except AlphaQError as error:
        return {**row, "status": "infeasible", "message": str(error)}
    suffix = "" if seed is None else f"-seed{seed}"
    save_plan(plan, job.out / COMPARE_PLANS_DIR / f"{entry}-{budget}{suffix}.json")
    meter = DivergenceMeter(job.reference)
    try:
        sim = apply_plan(job.lm, plan)
        result = perplexity(job.lm, job.ids, job.window, max_windows=job.max_windows, on_logits=meter.record)
    finally:
        restore_weights(job.lm, job.snapshot)
    job.windows[row_key(row)] = (result.window_nll, result.window_tokens)
    divergence = meter.result()
    job.kld_windows[row_key(row)] = (divergence.window_kld, divergence.window_tokens)
    params = {t.name: t.params for t in plan.tensors}
    weight = sum(params[c.name] for c in sim.checks)
    measured = sum(params[c.name] * c.rel_error for c in sim.checks) / weight if weight else math.nan
    for c in sim.checks:
        share = job.eval_shares.get((c.layer, c.expert), math.nan) if c.expert is not None else math.nan
        job.verification.append(
            {
                "entry": entry,
                "budget": budget,
                "seed": seed,
                "name": c.name,
                "layer": c.layer,
                "expert": c.expert,
                "bits": c.bits,
                "predicted_error": c.predicted_error,
                "rel_error": c.rel_error,
                "eval_routing_share": share,
            }
        )
    return {
        **row,
        "status": plan.provenance["solver"]["status"],
        "average_payload_bits": plan.summary["average_payload_bits"],
        "effective_bits": plan.summary["effective_bits"],
        "expert_bytes": plan.summary["expert_bytes"],
        "predicted_error": plan.summary["predicted_error"],
        "alpha_objective": plan.summary["alpha_objective"],
        **plan_predictors(plan.tensors, job.sq_norm, job.alpha, job.num_layers, job.routing_prior),
        "measured_rel_error": measured,
        "ppl": result.ppl,
        "nll": result.nll,
        "ppl_increase": result.ppl - job.original_ppl,
        "mean_kld": divergence.mean_kld,
        "median_kld": divergence.median_kld,
        "p99_kld": divergence.p99_kld,
        "same_top": divergence.same_top,
        "tokens": result.tokens,
        "windows": result.windows,
        "plan_fingerprint": plan.plan_fingerprint,
        "message": "; ".join(plan.provenance.get("notes") or []),
    }


__all__ = ["CompareJob", "evaluate_entry", "expert_shares", "restore_weights", "snapshot_weights", "text_tokens"]
