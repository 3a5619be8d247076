"""``alphaq compare`` with its I/O: plans per (budget, allocator) -> perplexity table.

One checkpoint is loaded once; every plan is applied by simulated quantization (:mod:`alphaq.evaluation.simulate`)
and undone before the next. Written into ``out_dir``: ``compare.csv`` (one row per plan plus the original model),
``compare.json`` (rows, provenance, the data-free prediction check and the random-token routing prior behind its
``routed_sq_error`` predictor; ``measured_rel_error`` is the
parameter-weighted mean relative error of the quantized matrices, on the scale of ``predicted_error``), ``expert_verification.csv`` (per matrix:
measured vs predicted error and the expert's routing share on the eval text) and ``plans/*.json``.

This module holds the run (:func:`run_compare`) and the writing of its outputs; the per-plan work (make a plan,
apply it, score it, undo it) is in :mod:`alphaq.evaluation.compare_job`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from alphaq.errors import AlphaQError, ConfigError
from alphaq.evaluation.compare_job import CompareJob, evaluate_entry, expert_shares, snapshot_weights, text_tokens
from alphaq.evaluation.compare_stats import ORIGINAL, add_intervals, prediction_check, seed_spread
from alphaq.evaluation.divergence import ReferenceLogprobs
from alphaq.evaluation.options import FREQUENCY_ENTRIES, CompareConfig, expand_allocators
from alphaq.evaluation.routing import PRIOR_SEED, PRIOR_WINDOWS, random_token_routing
from alphaq.locking import locks_output
from alphaq.progress import ProgressFn
from alphaq.provenance import text_record, versions
from alphaq.runfolder import COMPARE_CSV, COMPARE_JSON, COMPARE_PLANS_DIR, EXPERT_VERIFICATION_CSV

COMPARE_COLUMNS = [
    "entry",
    "allocator",
    "seed",
    "calibration",
    "budget",
    "status",
    "average_payload_bits",
    "effective_bits",
    "expert_bytes",
    "predicted_error",
    "alpha_objective",
    "abs_sq_error",
    "alpha_sq_error",
    "depth_sq_error",
    "routed_sq_error",
    "measured_rel_error",
    "ppl",
    "nll",
    "ppl_increase",
    "mean_kld",
    "median_kld",
    "p99_kld",
    "same_top",
    "tokens",
    "windows",
    "plan_fingerprint",
    "message",
]
CALIBRATION_WINDOWS = 64


@locks_output("out_dir", "compare")
def run_compare(
    model: str | Path | None, config: CompareConfig, out_dir: str | Path, *, progress: ProgressFn | None = None
) -> pd.DataFrame:
    """Plan the checkpoint for every (budget, allocator), evaluate each plan's perplexity and KL
    divergence from the original, write the results.

    Args:
        model: checkpoint folder (None: the bundled demo model).
        config: the :class:`~alphaq.evaluation.options.CompareConfig` (budgets, allocators, base plan options,
            texts, seeds, windows, device, intervals).
        out_dir: run folder (created).
        progress: ``progress(1, item, total)`` per plan evaluated.

    Returns:
        The results table (:data:`COMPARE_COLUMNS` and the interval columns), first row the original model.

    Raises:
        AlphaQError: missing data, a checkpoint that cannot be loaded; ConfigError: CUDA asked for and missing.
    """
    with contextlib.ExitStack() as stack:  # the original's log-probabilities (KLD reference) live for the run
        return _compare(model, config, out_dir, progress, stack)


def _compare(
    model: str | Path | None,
    config: CompareConfig,
    out_dir: str | Path,
    progress: ProgressFn | None,
    stack: contextlib.ExitStack,
) -> pd.DataFrame:
    import torch

    from alphaq.evaluation import datasets
    from alphaq.evaluation.perplexity import model_context, perplexity, scored_windows
    from alphaq.load import open_checkpoint
    from alphaq.load.model import load_model
    from alphaq.planning.planner import PlanConfig, measure_errors
    from alphaq.planning.run import plan_details
    from alphaq.zoo.demo import demo_model_path

    entries = expand_allocators(config.allocators)
    budget_list, seed_list = list(config.budgets), list(config.seeds)
    text_file, calib_in, calib_out, inspect_dir = (
        config.text_file,
        config.calib_in,
        config.calib_out,
        config.inspect_dir,
    )
    max_windows, context, device, dtype = config.max_windows, config.context, config.device, config.dtype
    resamples, level = config.resamples, config.level
    base = config.plan if config.plan is not None else PlanConfig(budget=budget_list[0])
    eval_path = Path(text_file) if text_file is not None else datasets.wikitext2_test()
    needs = {FREQUENCY_ENTRIES[e] for e in entries if e in FREQUENCY_ENTRIES}
    calib_paths = {
        "out": Path(calib_out) if calib_out is not None else (datasets.shakespeare() if "out" in needs else None),
        "in": Path(calib_in) if calib_in is not None else (datasets.wikitext2_valid() if "in" in needs else None),
    }
    for path in [eval_path, *calib_paths.values()]:
        if path is not None and not path.is_file():
            raise AlphaQError(f"{path}: text file not found; pass an existing file or set $ALPHAQ_DATA_DIR")

    out = Path(out_dir)
    (out / COMPARE_PLANS_DIR).mkdir(parents=True, exist_ok=True)
    ckpt = open_checkpoint(model if model is not None else demo_model_path())
    details, inspect_manifest = plan_details(ckpt, out, inspect_dir=Path(inspect_dir) if inspect_dir else None)
    refs = {m.name: m for m in ckpt.matrices}
    errors = measure_errors(details, lambda name: ckpt.read_matrix(refs[name]), base)

    options = config.options
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device} requested but CUDA is not available; pass --device cpu")
    lm, tokenizer = load_model(ckpt.path, device=options.device, dtype=getattr(torch, options.dtype))
    window = context or model_context(lm)
    ids = text_tokens(tokenizer, eval_path)
    shares = {
        side: expert_shares(lm, text_tokens(tokenizer, path), window, CALIBRATION_WINDOWS)
        for side, path in calib_paths.items()
        if side in needs and path is not None
    }
    eval_shares = expert_shares(lm, ids, window, max_windows)
    prior = random_token_routing(lm, context=window).shares()  # data-free: no text is read
    n_windows = scored_windows(int(ids.numel()), window, max_windows=max_windows)
    reference = ReferenceLogprobs(
        max(1, min(n_windows, options.kld_windows or n_windows)),
        spill_dir=stack.enter_context(tempfile.TemporaryDirectory(prefix="alphaq-kld-")),
    )
    stack.callback(reference.close)
    original = perplexity(lm, ids, window, max_windows=max_windows, on_logits=reference.record)
    from alphaq.runfolder import record_path  # paths relative to the compare folder, the bundled model by name

    provenance = {
        "checkpoint": {
            "path": record_path(ckpt.path, base=out),
            "fingerprint": ckpt.fingerprint,
            "model_type": ckpt.model_type,
        },
        "diagnostics": {
            "fit": inspect_manifest["options"]["fit"],
            "inspect_created": inspect_manifest["created"],
            "inspect_dir": record_path(inspect_dir or out, base=out),
        },
    }
    job = CompareJob(
        lm=lm,
        ids=ids,
        window=window,
        max_windows=max_windows,
        snapshot=snapshot_weights(lm),
        details=details,
        errors=errors,
        provenance=provenance,
        shares=shares,
        eval_shares=eval_shares,
        routing_prior=prior,
        out=out,
        original_ppl=original.ppl,
        num_layers=ckpt.num_layers,
        sq_norm=dict(zip(errors.names, (float(v) for v in errors.sq_norm))),
        alpha={str(n): float(a) for n, a in zip(details["name"], details["alpha"])},
        reference=reference,
    )
    rows: list[dict[str, Any]] = [
        {
            "entry": ORIGINAL,
            "allocator": ORIGINAL,
            "calibration": None,
            "budget": None,
            "status": original.status,
            "average_payload_bits": 16.0,
            "ppl": original.ppl,
            "nll": original.nll,
            "ppl_increase": 0.0,
            "mean_kld": 0.0,
            "median_kld": 0.0,
            "p99_kld": 0.0,
            "same_top": 1.0,
            "tokens": original.tokens,
            "windows": original.windows,
        }
    ]
    job.windows[ORIGINAL] = (original.window_nll, original.window_tokens)
    runs = [
        (budget, entry, seed)
        for budget in budget_list
        for entry in entries
        for seed in (seed_list if entry == "random" else [None])
    ]
    for budget, entry, seed in runs:
        side = FREQUENCY_ENTRIES.get(entry)
        cfg = dataclasses.replace(
            base,
            budget=budget,
            allocator="frequency" if side else entry,
            **({"seed": seed} if seed is not None else {}),
        )
        calibration = record_path(calib_paths[side], base=out) if side else None
        row = evaluate_entry(
            job, cfg, entry, budget, seed, calibration=calibration, routing_shares=shares.get(side) if side else None
        )
        rows.append(row)
        if progress:
            label = f"ppl {row['ppl']:.3f}" if row.get("ppl") is not None else row["status"]
            progress(1, f"{entry}{'' if seed is None else f'#{seed}'} @ {budget}: {label}", len(runs))

    table = add_intervals(
        pd.DataFrame(rows, columns=COMPARE_COLUMNS),
        job.windows,
        resamples=resamples,
        level=level,
        kld_windows=job.kld_windows,
    )
    _write_compare(
        out,
        table,
        job,
        eval_path=eval_path,
        calib_texts={side: calib_paths[side] for side in needs},
        original=original,
        options={
            "budgets": budget_list,
            "allocators": entries,
            "widths": list(base.widths),
            "group_size": base.group_size,
            "granularity": base.granularity,
            "gamma": base.gamma,
            "quant_method": base.quant_method,
            "seeds": seed_list,
            "device": device,
            "dtype": dtype,
        },
        intervals={"method": "paired bootstrap over windows", "resamples": resamples, "level": level, "seed": 0},
    )
    return table


def _prior_record(job: CompareJob) -> dict[str, Any]:
    """How the data-free routing prior was drawn, its shares, and (a diagnostic, from the evaluation text) how well
    it ranks the experts' shares on that text."""
    from scipy.stats import spearmanr

    keys = sorted(job.routing_prior)
    rho = math.nan
    if len(keys) > 2 and all(k in job.eval_shares for k in keys):
        rho = float(spearmanr([job.routing_prior[k] for k in keys], [job.eval_shares[k] for k in keys])[0])
    return {
        "method": "uniformly random token ids, top-k of the routers' logits",
        "windows": PRIOR_WINDOWS,
        "seed": PRIOR_SEED,
        "context": job.window,
        "spearman_with_eval_shares": rho,
        "shares": [
            {"layer": layer, "expert": expert, "share": job.routing_prior[(layer, expert)]} for layer, expert in keys
        ],
    }


def _write_compare(
    out: Path,
    table: pd.DataFrame,
    job: CompareJob,
    *,
    eval_path: Path,
    calib_texts: dict[str, Any],
    original: Any,
    options: dict[str, Any],
    intervals: dict[str, Any],
) -> None:
    """compare.csv, expert_verification.csv and compare.json (last), written as one set."""
    import datetime as _dt

    from alphaq.atomic import staged_files

    with staged_files(out) as files:
        files.write_with(COMPARE_CSV, lambda p: table.to_csv(p, index=False))
        files.write_with(EXPERT_VERIFICATION_CSV, lambda p: pd.DataFrame(job.verification).to_csv(p, index=False))
        files.write_json(
            COMPARE_JSON,
            {
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": versions(),
                **job.provenance,
                "protocol": {
                    "context": job.window,
                    "stride": job.window,
                    "max_windows": job.max_windows,
                    "windows": original.windows,
                    "tokens": original.tokens,
                    "dropped_tokens": original.dropped_tokens,
                    "remainder": "dropped",
                    "simulated": True,
                },
                "eval_text": text_record(eval_path, base=out),
                "calibration": {side: text_record(path, base=out) for side, path in calib_texts.items()},
                "options": options,
                "intervals": intervals,
                "original_ppl": original.ppl,
                "prediction_check": prediction_check(table),
                "routing_prior": _prior_record(job),
                "random_seeds": seed_spread(table),
                "rows": table.astype(object).where(table.notna(), None).to_dict("records"),
            },
        )


__all__ = ["COMPARE_COLUMNS", "FREQUENCY_ENTRIES", "expand_allocators", "prediction_check", "run_compare"]
