"""Would the data-free routing prior help the allocator too, not only the damage prediction?

The prior (:func:`alphaq.evaluation.routing.random_token_routing`: routers' top-k on uniformly random token ids,
no text read) predicts the measured damage of the gallery's plans far better than alpha alone (Spearman 0.95 vs
0.82). This bench asks the allocator question on the bundled model: at budgets 2.5, 3 and 3.5 bits it plans
(rtn, group 128, widths {2, 3, 4, 8}, expert granularity)

* ``alphaq``: the default, importance ``(median alpha / alpha)^16``;
* ``prior``: importance = the expert's share in the prior (the frequency allocator fed the prior's shares);
* ``prior x alpha^g`` for g in 1 and 4: importance = share * ``(median alpha / alpha)^g``;
* ``uniform``, for reference;

applies each plan by simulated quantization, scores it on the first WINDOWS windows of WikiText-2 test and reports
the increase over the original with its paired-bootstrap 95 % interval, and the difference from the alphaq plan on
the same windows (significant when its interval excludes 0). Prints a table and writes
bench/results/routing_prior_allocator.json. It is an experiment: the plan stage stays model-free, and the prior
needs a forward pass of the whole model, which a checkpoint too large for the machine cannot have.

    ALPHAQ_DATA_DIR=/work/shared/data python bench/routing_prior_allocator.py [--windows 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "routing_prior_allocator.json"
BUDGETS = ("2.5", "3", "3.5")
PRIOR_GAMMAS = (1.0, 4.0)


def main() -> None:
    import numpy as np
    import torch

    from alphaq.atomic import write_json
    from alphaq.audit.artifacts import expert_alphas
    from alphaq.evaluation import datasets
    from alphaq.evaluation.bootstrap import paired_bootstrap
    from alphaq.evaluation.compare_job import restore_weights as _restore
    from alphaq.evaluation.compare_job import snapshot_weights as _snapshot
    from alphaq.evaluation.compare_job import text_tokens as _tokens
    from alphaq.evaluation.perplexity import model_context, perplexity
    from alphaq.evaluation.routing import PRIOR_SEED, PRIOR_WINDOWS, random_token_routing
    from alphaq.evaluation.simulate import apply_plan
    from alphaq.load import open_checkpoint
    from alphaq.load.model import load_model
    from alphaq.planning.planner import PlanConfig, make_plan, measure_errors
    from alphaq.planning.run import plan_details
    from alphaq.provenance import versions
    from alphaq.zoo.demo import demo_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=128)
    parser.add_argument(
        "--inspect-dir",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "reports",
        help="an inspect run of the bundled model (default: the committed gallery)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    ckpt = open_checkpoint(demo_model_path())
    lm, tokenizer = load_model(ckpt.path, device="cpu", dtype=torch.float32)
    window = model_context(lm)
    prior = random_token_routing(lm, context=window).shares()
    alphas = expert_alphas(args.inspect_dir)
    median = float(np.median(list(alphas.values())))
    details, _ = plan_details(ckpt, args.inspect_dir, inspect_dir=args.inspect_dir)
    refs = {m.name: m for m in ckpt.matrices}
    errors = measure_errors(details, lambda name: ckpt.read_matrix(refs[name]), PlanConfig(budget=BUDGETS[0]))
    ids = _tokens(tokenizer, datasets.wikitext2_test())
    snapshot = _snapshot(lm)
    original = perplexity(lm, ids, window, max_windows=args.windows)

    def score(config: PlanConfig, shares: dict[tuple[int, int], float] | None) -> tuple[Any, Any]:
        plan = make_plan(details, None, config, errors=errors, routing_shares=shares, provenance={})
        try:
            apply_plan(lm, plan)
            return plan, perplexity(lm, ids, window, max_windows=args.windows)
        finally:
            _restore(lm, snapshot)

    entries: list[tuple[str, str, dict[tuple[int, int], float] | None]] = [
        ("alphaq", "alphaq", None),
        ("uniform", "uniform", None),
        ("prior", "frequency", prior),
        *(
            (f"prior x alpha^{g:g}", "frequency", {k: s * (median / alphas[k]) ** g for k, s in prior.items()})
            for g in PRIOR_GAMMAS
        ),
    ]
    rows = []
    print(f"original {original.ppl:.3f} on {original.windows} windows")
    print(
        f"{'budget':>6} {'allocator':<18} {'increase':>9} {'95% interval':>18} {'vs alphaq':>10} {'95% interval':>18}"
    )
    for budget in BUDGETS:
        scored = {
            name: score(PlanConfig(budget=budget, allocator=allocator), shares) for name, allocator, shares in entries
        }
        reference = scored["alphaq"][1]
        for name, (plan, result) in scored.items():
            ci = paired_bootstrap(result.window_nll, original.window_nll, result.window_tokens)
            vs = paired_bootstrap(result.window_nll, reference.window_nll, result.window_tokens)
            row = {
                "budget": budget,
                "allocator": name,
                "ppl": result.ppl,
                "ppl_increase": result.ppl - original.ppl,
                "ci": [ci.low, ci.high],
                "vs_alphaq": vs.delta,
                "vs_alphaq_ci": [vs.low, vs.high],
                "significant_vs_alphaq": bool(vs.significant) and name != "alphaq",
                "average_payload_bits": plan.summary["average_payload_bits"],
            }
            rows.append(row)
            print(
                f"{budget:>6} {name:<18} {row['ppl_increase']:>+9.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"
                f" {vs.delta:>+10.3f} [{vs.low:+.3f}, {vs.high:+.3f}]" + (" *" if row["significant_vs_alphaq"] else "")
            )
    write_json(
        RESULTS,
        {
            "bench": "routing_prior_allocator",
            "windows": original.windows,
            "original_ppl": original.ppl,
            "prior": {
                "method": "uniformly random token ids",
                "windows": PRIOR_WINDOWS,
                "seed": PRIOR_SEED,
                "context": window,
            },
            "prior_gammas": list(PRIOR_GAMMAS),
            "rows": rows,
            "seconds": round(time.perf_counter() - started, 1),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "versions": versions(),
        },
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
