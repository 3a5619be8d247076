"""alphaq's whole-model GGUF plans against llama.cpp's presets, by KL divergence at the same file size.

For one checkpoint (the bundled demo, or the zoo's second model ``qwen2moe-16e``) and each llama-quantize preset
(Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M):

* the preset, made by ``llama-quantize`` without an importance matrix (data-free), and with one (``llama-imatrix``
  on WikiText-2 *valid*: the calibrated reference);
* alphaq's whole-model plans at the preset's file size (:mod:`alphaq.planning.gguf_run`, errors measured with
  llama.cpp): the default (``fisher``: the model's self-Fisher, no data), the AlphaQ principle (``alpha``),
  uniform (``uniform``: every weight's relative error alike), and a calibrated plan (errors weighted by the
  WikiText-2-valid importance matrix's mean squared inputs, the data-aware counterpart of the default);

every GGUF scored by ``llama-perplexity --kl-divergence`` against the F16 GGUF's saved logits on the first
``--chunks`` windows of ``--ctx`` tokens of WikiText-2 *test*: mean KLD, p99 KLD, same top token, perplexity; and a
95 % paired bootstrap interval over windows of each mean KLD minus the preset's (per-token values from both
models' saved logits, :mod:`alphaq.export.kld_tokens`).

``--study`` instead scores every importance form on held-out text that the results never use (WikiText-2 *valid*
and the last 10 % of Tiny Shakespeare) at every preset size: the evidence the default was chosen on.

    python bench/gguf_presets.py [--model demo|qwen2moe-16e|DIR] [--study] [--chunks 100]

Saves ``bench/results/gguf_presets_<model>.json`` (or ``gguf_study_<model>.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M")
STUDY_FORMS: tuple[tuple[str, float], ...] = (
    ("fisher", 0.0),
    ("fisher_alpha", 1.0),
    ("alpha", 1.0),
    ("alpha", 4.0),
    ("kurtosis", 1.0),
    ("absolute", 0.0),
    ("uniform", 0.0),
    ("relative", 0.0),
)


def model_dir(name: str) -> Path:
    """``demo`` (bundled), a zoo recipe name, or a folder."""
    if name == "demo":
        from alphaq.zoo.demo import demo_model_path

        return demo_model_path()
    from alphaq.zoo.recipes import RECIPES, zoo_model_path

    return zoo_model_path(name) if name in RECIPES else Path(name)


def texts(work: Path, study: bool) -> dict[str, Path]:
    """The evaluation texts: WikiText-2 test (results) or valid + held-out Shakespeare (study)."""
    from alphaq.evaluation import datasets

    if not study:
        return {"wikitext2_test": datasets.wikitext2_test()}
    shakespeare = datasets.read_text(datasets.shakespeare())
    split = shakespeare.find("\n", int(len(shakespeare) * 0.9)) + 1  # as the zoo's recipes hold it out
    held = work / "shakespeare_heldout.txt"
    held.write_text(shakespeare[split:], encoding="utf-8")
    return {"wikitext2_valid": datasets.wikitext2_valid(), "shakespeare_heldout": held}


def write_plan_gguf(tools: Any, f16: Path, types: dict[str, str], out: Path) -> Path:
    """``llama-quantize`` with every tensor's type named exactly; checks the file holds them."""
    from alphaq.export.gguf_export import whole_model_lines
    from alphaq.export.gguf_io import quantize_gguf, read_types

    overrides = out.with_suffix(".types.txt")
    overrides.write_text("".join(line + "\n" for line in whole_model_lines(types)), encoding="utf-8")
    quantize_gguf(tools, f16, out, tensor_type_file=overrides, base_type="Q8_0")
    found = read_types(out)
    wrong = [n for n, t in types.items() if found[n][0] != t]
    if wrong:
        raise SystemExit(f"{out}: {wrong[0]} stored as {found[wrong[0]][0]}, planned {types[wrong[0]]}")
    return out


def score(
    tools: Any, gguf: Path, base_logits: Path, text: Path, ctx: int, chunks: int, work: Path, *, windows: bool
) -> dict[str, Any]:
    """llama.cpp's KLD statistics and (``windows``) the per-window KLD sums for paired intervals."""
    import numpy as np

    from alphaq.export.kld_tokens import token_kld
    from alphaq.export.llamacpp_runs import kld, kld_base

    stats = kld(tools, gguf, base_logits)
    summary = {
        "file_bytes": gguf.stat().st_size,
        "mean_kld": stats.mean_kld,
        "mean_kld_unc": stats.mean_kld_unc,
        "median_kld": stats.median_kld,
        "p99_kld": stats.p99_kld,
        "same_top": stats.same_top,
        "ppl": stats.ppl_q,
    }
    if not windows:
        return summary
    own = work / f"{gguf.stem}.logits"
    kld_base(tools, gguf, text, own, ctx=ctx, chunks=chunks)
    per = token_kld(base_logits, own)
    own.unlink()
    return {
        **summary,
        "window_kld_sums": np.asarray(per.kld, dtype=np.float64).sum(axis=1).tolist(),
        "tokens_per_window": int(np.asarray(per.kld).shape[1]),
    }


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """95 % paired bootstrap interval of mean KLD(a) - mean KLD(b) over windows."""
    from alphaq.evaluation.bootstrap import paired_mean_bootstrap

    ci = paired_mean_bootstrap(a["window_kld_sums"], b["window_kld_sums"], a["tokens_per_window"])
    return {"diff": ci.delta, "low": ci.low, "high": ci.high}


def prepare(model: Path, work: Path, tools: Any) -> tuple[Any, Any, Path, Any, Any]:
    """Checkpoint, inspect details, F16 GGUF, measurements (with the self-Fisher) and signals."""
    from alphaq.load import open_checkpoint
    from alphaq.planning.config import PlanConfig
    from alphaq.planning.gguf_run import f16_gguf, measurements
    from alphaq.planning.run import plan_details

    ckpt = open_checkpoint(model)
    details, _ = plan_details(ckpt, work)
    folder = work / "gguf"
    m = measurements(tools, ckpt, folder, PlanConfig(target="gguf", budget="Q3_K_M"), progress=None)
    return ckpt, details, f16_gguf(tools, ckpt, folder), m, folder


def run(args: argparse.Namespace) -> dict[str, Any]:

    from alphaq.export.gguf_measure import activation_weights, measure_gguf_model
    from alphaq.export.llamacpp_runs import imatrix, kld_base, preset_size
    from alphaq.export.llamacpp_tools import find_tools
    from alphaq.planning import gguf_model as gm
    from alphaq.planning.gguf_signals import alpha_by_tensor

    tools = find_tools()
    model = model_dir(args.model)
    label = args.model if args.model in ("demo",) or "/" not in args.model else Path(args.model).name
    cache = Path(args.work or Path.home() / ".cache" / "alphaq" / "bench" / "gguf_presets" / label)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.time()
    ckpt, details, f16, m, folder = prepare(model, cache, tools)
    alpha = alpha_by_tensor(details)
    sizes = {p: preset_size(tools, f16, p, work_dir=cache).file_bytes for p in args.presets}
    result: dict[str, Any] = {
        "model": label,
        "fingerprint": ckpt.fingerprint,
        "ctx": args.ctx,
        "chunks": args.chunks,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "llama_cpp": tools.describe(),
        "preset_bytes": sizes,
        "f16_bytes": f16.stat().st_size,
    }
    with tempfile.TemporaryDirectory(prefix="gguf-presets-", dir=cache) as tmp:
        work = Path(tmp)
        eval_texts = texts(work, args.study)
        rows: list[dict[str, Any]] = []
        plans: dict[tuple[str, str], dict[str, str]] = {}

        def plan(form: str, gamma: float, capacity: int, errors: Any = None) -> dict[str, str]:
            signals = gm.Signals(
                fisher_error=m.weighted_error.get("fisher"),
                fisher_expert_error=m.expert_weighted_error.get("fisher", {}),
                alpha=alpha,
                kurtosis=m.kurtosis,
                gamma=gamma,
            )
            cost = gm.importance_costs(m, form, signals) if errors is None else errors
            return dict(gm.solve_gguf(m, cost, capacity).types)

        calibrated_cost = None
        calibrated_imatrix = None
        if not args.study:
            calibrated_imatrix = imatrix(
                tools, f16, eval_texts_valid(), cache / "valid.imatrix.gguf", ctx=args.ctx, chunks=args.imatrix_chunks
            )
            weights = {"activation": activation_weights(calibrated_imatrix)}
            mc = measure_gguf_model(tools, f16, work / "measure-cal", column_weights=weights)
            calibrated_cost = mc.weighted_error["activation"]
        for text_name, text in eval_texts.items():
            base = work / f"base-{text_name}.logits"
            kld_base(tools, f16, text, base, ctx=args.ctx, chunks=args.chunks)
            for preset in args.presets:
                capacity = sizes[preset]
                entries: list[tuple[str, Path]] = []
                entries.append(("preset", Path(preset_size(tools, f16, preset, work_dir=work, keep=True).path)))
                if args.study:
                    for form, gamma in STUDY_FORMS:
                        name = (
                            form
                            if form.startswith(("fisher", "absolute", "relative", "uniform"))
                            else f"{form}(g={gamma:g})"
                        )
                        types = plans.setdefault((preset, name), plan(form, gamma, capacity))
                        entries.append((name, write_plan_gguf(tools, f16, types, work / f"{preset}-{name}.gguf")))
                else:
                    named = {
                        "imatrix preset (calibrated)": None,
                        "alphaq default (fisher)": ("fisher", 0.0),
                        "alphaq alpha (AlphaQ, gamma 16)": ("alpha", 16.0),
                        "uniform (every weight alike)": ("uniform", 0.0),
                        "calibrated plan (imatrix-weighted)": "calibrated",
                    }
                    for name, spec in named.items():
                        if spec is None:
                            path = preset_size(
                                tools, f16, preset, work_dir=work, imatrix=calibrated_imatrix, keep=True
                            ).path
                            entries.append((name, Path(path)))
                            continue
                        types = (
                            plan("relative", 0.0, capacity, calibrated_cost)
                            if spec == "calibrated"
                            else plan(spec[0], spec[1], capacity)
                        )
                        slug = re.sub(r"\W+", "_", name)
                        entries.append((name, write_plan_gguf(tools, f16, types, work / f"{preset}-{slug}.gguf")))
                scored = {
                    name: score(tools, path, base, text, args.ctx, args.chunks, work, windows=not args.study)
                    for name, path in entries
                }
                for path in {p for _, p in entries}:
                    path.unlink(missing_ok=True)
                for name, s in scored.items():
                    row = {
                        "text": text_name,
                        "preset": preset,
                        "method": name,
                        **{k: v for k, v in s.items() if k != "window_kld_sums"},
                    }
                    if name != "preset" and not args.study:
                        row["vs_preset"] = paired(s, scored["preset"])
                    rows.append(row)
                    print(
                        f"{text_name:<20}{preset:<8}{name:<36}{s['file_bytes']:>11,}{s['mean_kld']:>10.5f}"
                        f"{s['p99_kld']:>9.4f}{100 * s['same_top']:>8.2f}%{s['ppl']:>9.3f}"
                        + (
                            f"  d={row['vs_preset']['diff']:+.5f} [{row['vs_preset']['low']:+.5f}, {row['vs_preset']['high']:+.5f}]"
                            if "vs_preset" in row
                            else ""
                        ),
                        flush=True,
                    )
            base.unlink()
    result["rows"] = rows
    result["seconds"] = round(time.time() - started, 1)
    if args.study:
        result["form_scores"] = form_scores(rows)
    return result


def eval_texts_valid() -> Path:
    from alphaq.evaluation import datasets

    return datasets.wikitext2_valid()


def form_scores(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over (text, preset) of each form's mean KLD divided by the preset's (lower is better)."""
    import numpy as np

    preset = {(r["text"], r["preset"]): r["mean_kld"] for r in rows if r["method"] == "preset"}
    ratios: dict[str, list[float]] = {}
    for r in rows:
        if r["method"] != "preset":
            ratios.setdefault(r["method"], []).append(r["mean_kld"] / preset[(r["text"], r["preset"])])
    return {k: float(np.mean(v)) for k, v in sorted(ratios.items(), key=lambda kv: np.mean(kv[1]))}


def markdown(result: dict[str, Any]) -> str:
    """The saved result as the Markdown tables of docs/results.md."""
    lines: list[str] = []
    rows = result["rows"]
    if "form_scores" in result:
        texts = sorted({r["text"] for r in rows})
        presets = [p for p in PRESETS if any(r["preset"] == p for r in rows)]
        methods = ["preset", *result["form_scores"]]
        value = {(r["text"], r["preset"], r["method"]): r["mean_kld"] for r in rows}
        lines += ["| text | size of | " + " | ".join(methods) + " |", "|---" * (2 + len(methods)) + "|"]
        for t in texts:
            for p in presets:
                lines.append(f"| {t} | {p} | " + " | ".join(f"{value[(t, p, m)]:.5f}" for m in methods) + " |")
        scores = " | ".join(["1"] + [f"**{result['form_scores'][m]:.3f}**" for m in methods[1:]])
        lines.append(f"| mean KLD / preset's | | {scores} |")
        return "\n".join(lines)
    lines += [
        "| preset | method | file bytes | mean KLD | vs preset (95 % paired) | p99 KLD | same top | ppl |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs = r.get("vs_preset")
        verdict = ""
        if vs is not None:
            verdict = "win" if vs["high"] < 0 else ("loss" if vs["low"] > 0 else "tie")
            verdict = f"{vs['diff']:+.5f} [{vs['low']:+.5f}, {vs['high']:+.5f}] {verdict}"
        lines.append(
            f"| {r['preset']} | {r['method']} | {r['file_bytes']:,} | {r['mean_kld']:.5f} | {verdict} | "
            f"{r['p99_kld']:.4f} | {100 * r['same_top']:.2f} % | {r['ppl']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, qwen2moe-16e (zoo) or a checkpoint folder")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--study", action="store_true", help="score every importance form on held-out text")
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--imatrix-chunks", type=int, default=100)
    parser.add_argument("--ctx", type=int, default=256)
    parser.add_argument("--work", default=None, help="cache folder (default ~/.cache/alphaq/bench/gguf_presets/MODEL)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the self-Fisher (1: no OpenMP stalls)")
    parser.add_argument("--markdown", default=None, help="print a saved result file as Markdown tables and stop")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text(encoding="utf-8"))))
        return
    import torch

    torch.set_num_threads(args.threads)
    args.presets = tuple(p.strip().upper() for p in args.presets.split(",") if p.strip())
    result = run(args)
    name = ("gguf_study_" if args.study else "gguf_presets_") + re.sub(r"\W+", "_", result["model"])
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.study:
        for form, ratio in result["form_scores"].items():
            print(f"{form:<24} mean KLD / preset's = {ratio:.3f}")
    print(f"saved {out.relative_to(ROOT)} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
