"""How robust is the routing-prior predictor (``routed_sq_error``), and does it hold on plans it was not chosen on?

The predictor weights each expert matrix's absolute squared quantization error ``||W||^2 e^2`` by the expert's
share in the data-free routing prior (routers' top-k on uniformly random token ids). Two plan sets of the bundled
model, each with its measured perplexity increases:

* the gallery's comparison (``reports/compare``: 21 plans, 7 allocators x 3 budgets, 128 windows), whose plan files
  are committed;
* the gamma study (``bench/results/gamma_sweep.json``: 28 plans, gamma 0..256 and uniform x 2.5..4 bits, 256
  windows), whose plans are re-made here with the plan stage's own ``make_plan`` from the committed inspect run.

For prior seeds 0-3 and 8, 32 and 64 windows of random tokens it prints the Spearman correlation of the predictor
with the measured increases on both sets, next to the prior-free ``abs_sq_error`` and to the same weighting by the
shares measured on the evaluation text itself (the first 128 windows of WikiText-2 test: not data-free, a
reference). It also estimates the ranking's noise ceiling on the gallery set: every plan's increase re-drawn from a
normal with its 95 % interval's width, Spearman of the re-drawn against the measured increases. Writes
bench/results/prior_predictor.json.

    ALPHAQ_DATA_DIR=/work/shared/data python bench/prior_predictor.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "prior_predictor.json"
SEEDS = (0, 1, 2, 3)
WINDOWS = (8, 32, 64)


def main() -> None:
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from alphaq.atomic import write_json
    from alphaq.evaluation import datasets
    from alphaq.evaluation.compare_job import text_tokens as _tokens
    from alphaq.evaluation.compare_stats import plan_predictors
    from alphaq.evaluation.perplexity import model_context
    from alphaq.evaluation.routing import random_token_routing, routing_stats
    from alphaq.load import open_checkpoint
    from alphaq.load.model import load_model
    from alphaq.planning.plan_file import load_plan
    from alphaq.planning.planner import PlanConfig, make_plan, measure_errors
    from alphaq.planning.run import plan_details
    from alphaq.provenance import versions
    from alphaq.zoo.demo import demo_model_path

    started = time.perf_counter()
    ckpt = open_checkpoint(demo_model_path())
    lm, tokenizer = load_model(ckpt.path, device="cpu", dtype=torch.float32)
    window = model_context(lm)
    inspect_dir = ROOT / "reports"
    details, _ = plan_details(ckpt, inspect_dir, inspect_dir=inspect_dir)
    refs = {m.name: m for m in ckpt.matrices}
    errors = measure_errors(details, lambda name: ckpt.read_matrix(refs[name]), PlanConfig(budget="3"))
    sq_norm = dict(zip(errors.names, (float(v) for v in errors.sq_norm)))
    alpha = {str(n): float(a) for n, a in zip(details["name"], details["alpha"])}

    compare = json.loads((inspect_dir / "compare" / "compare.json").read_text(encoding="utf-8"))
    gallery: list[tuple[object, float]] = []
    half_widths = []
    for row in compare["rows"]:
        if row["entry"] == "original":
            continue
        suffix = "" if row["seed"] is None else f"-seed{int(row['seed'])}"
        plan = load_plan(inspect_dir / "compare" / "plans" / f"{row['entry']}-{row['budget']}{suffix}.json")
        gallery.append((plan.tensors, float(row["ppl_increase"])))
        half_widths.append((float(row["ci_high"]) - float(row["ci_low"])) / 2)
    sweep = json.loads((ROOT / "bench" / "results" / "gamma_sweep.json").read_text(encoding="utf-8"))
    study: list[tuple[object, float]] = []
    for row in sweep["rows"]:
        plan = make_plan(
            details, None, PlanConfig(budget=row["budget"], gamma=row["gamma"]), errors=errors, provenance={}
        )
        study.append((plan.tensors, float(row["ppl_increase"])))
    for budget, row in sweep["uniform"].items():
        plan = make_plan(details, None, PlanConfig(budget=budget, allocator="uniform"), errors=errors, provenance={})
        study.append((plan.tensors, float(row["ppl_increase"])))

    def rho(plans: list[tuple[object, float]], key: str, prior: dict | None) -> float:
        values = [plan_predictors(t, sq_norm, alpha, ckpt.num_layers, prior)[key] for t, _ in plans]
        return float(spearmanr(values, [increase for _, increase in plans])[0])

    baseline = {"gallery": rho(gallery, "abs_sq_error", None), "gamma_study": rho(study, "abs_sq_error", None)}
    print(
        f"plans: gallery {len(gallery)}, gamma study {len(study)}; abs_sq_error (no prior): "
        f"{baseline['gallery']:.3f} / {baseline['gamma_study']:.3f}"
    )
    eval_shares = routing_stats(
        lm,
        _tokens(tokenizer, datasets.wikitext2_test()),
        context=window,
        max_windows=int(compare["protocol"]["max_windows"] or 128),
    ).shares()
    with_eval = {
        "gallery": rho(gallery, "routed_sq_error", eval_shares),
        "gamma_study": rho(study, "routed_sq_error", eval_shares),
    }
    print(
        f"weighted by the evaluation text's own shares (not data-free): {with_eval['gallery']:.3f} / "
        f"{with_eval['gamma_study']:.3f}"
    )
    measured = np.array([increase for _, increase in gallery])
    sigma = np.array(half_widths) / 1.96
    rng = np.random.default_rng(0)
    ceiling = [float(spearmanr(measured, measured + rng.normal(0.0, sigma))[0]) for _ in range(2000)]
    print(f"noise ceiling (gallery): mean {np.mean(ceiling):.3f}, 5th percentile {np.percentile(ceiling, 5):.3f}")
    rows = []
    for seed in SEEDS:
        for windows in WINDOWS:
            prior = random_token_routing(lm, context=window, windows=windows, seed=seed).shares()
            row = {
                "seed": seed,
                "windows": windows,
                "gallery": rho(gallery, "routed_sq_error", prior),
                "gamma_study": rho(study, "routed_sq_error", prior),
            }
            rows.append(row)
            print(
                f"prior seed {seed} windows {windows:>2}: routed_sq_error {row['gallery']:.3f} (gallery), "
                f"{row['gamma_study']:.3f} (gamma study)"
            )
    write_json(
        RESULTS,
        {
            "bench": "prior_predictor",
            "plans": {"gallery": len(gallery), "gamma_study": len(study)},
            "abs_sq_error": baseline,
            "eval_text_shares": with_eval,
            "noise_ceiling": {"mean": float(np.mean(ceiling)), "p05": float(np.percentile(ceiling, 5)), "draws": 2000},
            "rows": rows,
            "min": {"gallery": min(r["gallery"] for r in rows), "gamma_study": min(r["gamma_study"] for r in rows)},
            "seconds": round(time.perf_counter() - started, 1),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "versions": versions(),
        },
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
