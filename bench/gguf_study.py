"""alphaq's plans run in llama.cpp: perplexity of alpha-guided GGUFs against uniform ones of the same size.

For one checkpoint (default: the bundled demo MoE):

1. measure every routed-expert matrix's error at Q2_K..Q6_K/Q8_0 with llama-quantize (``--target gguf``);
2. plan at each budget (real GGUF bits per expert weight) with the ``alphaq``, ``uniform`` and (calibrated on
   WikiText-2 *valid*) ``frequency`` allocators, one type per layer and projection;
3. write each plan as a GGUF with ``alphaq export --format gguf`` (llama.cpp's converter and llama-quantize,
   read back and verified), plus the F16 GGUF;
4. score every GGUF with llama.cpp's ``llama-perplexity`` on WikiText-2 *test*, and the same plans with
   alphaq's own eval (transformers forward, alphaq's protocol) twice: with the experts dequantized from that very
   GGUF (same weights, other engine) and with alphaq's own quantizer at the plan's widths (RTN, group 128).

Prints a table and saves ``bench/results/gguf_study.json``. Needs ``alphaq llamacpp build`` and the text
data (``$ALPHAQ_DATA_DIR``). Both engines score the first ``--chunks`` windows of ``--ctx`` tokens; llama.cpp
scores the second half of each window, alphaq every token, so compare rankings across engines, not values.

    python bench/gguf_study.py [--model DIR] [--budgets 2.75,3.0,3.4375] [--chunks 200]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load_experts_from_gguf(model: Any, gguf_path: Path) -> None:
    """Overwrite a transformers Mixtral's routed experts with the dequantized GGUF tensors (in place)."""
    import torch

    from alphaq.export.gguf_io import expert_slices

    layers = model.model.layers
    with torch.no_grad():
        for layer, proj, weights in expert_slices(gguf_path):  # [E, rows, cols]
            experts = layers[layer].mlp.experts
            values = torch.from_numpy(weights).to(experts.down_proj.dtype)
            if proj == "down":
                experts.down_proj.copy_(values)  # [E, H, I]
            else:
                inter = experts.gate_up_proj.shape[1] // 2  # [E, 2I, H]: gate rows [:I], up rows [I:]
                rows = slice(0, inter) if proj == "gate" else slice(inter, 2 * inter)
                experts.gate_up_proj[:, rows].copy_(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: the bundled demo)")
    parser.add_argument("--budgets", default="2.75,3.0,3.4375", help="GGUF bits per expert weight")
    parser.add_argument("--chunks", type=int, default=200, help="windows scored by both engines")
    parser.add_argument("--ctx", type=int, default=None, help="window length (default: the model's context)")
    parser.add_argument("--keep", default="f16", help="type of attention / embeddings (f16, bf16, q8_0)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "alphaq-gguf-study",
        help="scratch folder (run folders, the 16-bit GGUFs; outside the repository)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gguf_study.json")
    args = parser.parse_args()

    import torch

    from alphaq.atomic import write_json
    from alphaq.evaluation.datasets import wikitext2_test, wikitext2_valid
    from alphaq.evaluation.perplexity import perplexity
    from alphaq.evaluation.simulate import apply_plan
    from alphaq.export.gguf_errors import measure_gguf_errors
    from alphaq.export.gguf_export import GgufExportOptions, export_gguf
    from alphaq.export.gguf_io import convert_checkpoint, run_perplexity
    from alphaq.export.llamacpp_tools import find_tools
    from alphaq.load import open_checkpoint
    from alphaq.load.model import load_model, tokenize_text
    from alphaq.planning.plan_file import save_plan
    from alphaq.planning.planner import PlanConfig, make_plan
    from alphaq.planning.run import calibration_shares, plan_details
    from alphaq.zoo.demo import demo_model_path

    torch.set_num_threads(2)
    tools = find_tools()
    model_dir = args.model or demo_model_path()
    ckpt = open_checkpoint(model_dir)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        print(f"[{time.perf_counter() - started:7.1f} s] {name}: {timings[name]} s", flush=True)
        return time.perf_counter()

    t = time.perf_counter()
    details, manifest = plan_details(ckpt, work)
    refs = {m.name: m for m in ckpt.matrices}
    read = lambda name: ckpt.read_matrix(refs[name])  # noqa: E731
    base = PlanConfig(budget="3", target="gguf")
    errors = measure_gguf_errors(
        details, read, base.widths, model_dir=ckpt.path, fingerprint=ckpt.fingerprint, run_dir=work, tools=tools
    )
    t = lap("inspect + llama.cpp errors", t)
    shares = calibration_shares(ckpt.path, wikitext2_valid())
    t = lap("routing counts (frequency calibration)", t)
    provenance = {
        "checkpoint": {"path": str(ckpt.path), "fingerprint": ckpt.fingerprint, "model_type": ckpt.model_type},
        "diagnostics": {
            "fit": manifest["options"]["fit"],
            "inspect_created": manifest["created"],
            "inspect_dir": str(work),
        },
        "calibration_text": str(wikitext2_valid()),
    }
    plans: list[tuple[str, str, Path]] = []
    for budget in [b.strip() for b in args.budgets.split(",") if b.strip()]:
        for allocator in ("uniform", "alphaq", "frequency"):
            config = PlanConfig(budget=budget, target="gguf", allocator=allocator)
            plan = make_plan(
                details,
                None,
                config,
                provenance=provenance,
                errors=errors,
                routing_shares=shares if allocator == "frequency" else None,
            )
            folder = work / f"{allocator}-{budget}"
            folder.mkdir(exist_ok=True)
            plans.append((allocator, budget, save_plan(plan, folder / "plan.json")))
    t = lap("plans", t)

    source = convert_checkpoint(tools, ckpt.path, work / "source.gguf")
    f16 = convert_checkpoint(tools, ckpt.path, work / "f16.gguf", outtype="f16")
    t = lap("convert (source + F16)", t)
    model, tokenizer = load_model(ckpt.path)
    ctx = args.ctx or int(model.config.max_position_embeddings)
    ids = tokenize_text(tokenizer, wikitext2_test().read_text(encoding="utf-8"))
    original = {k: v.clone() for k, v in model.state_dict().items()}

    def alphaq_ppl() -> float:
        return perplexity(model, ids, ctx, max_windows=args.chunks).ppl

    expert_params = sum(m.params for m in ckpt.matrices if m.role.value == "expert")
    rows: list[dict[str, Any]] = []
    f16_ppl = run_perplexity(tools, f16, wikitext2_test(), ctx=ctx, chunks=args.chunks)
    rows.append(
        {
            "name": "F16",
            "allocator": "f16",
            "budget": None,
            "file_bytes": f16.stat().st_size,
            "expert_bits_per_weight": 16.0,
            "llama_ppl": f16_ppl.ppl,
            "llama_ppl_stderr": f16_ppl.stderr,
            "alphaq_ppl_same_weights": alphaq_ppl(),
            "alphaq_ppl_own_quantizer": None,
            "types": {},
        }
    )
    t = lap("F16 scored", t)
    options = GgufExportOptions(keep_type=args.keep, allow_fallback=True)
    for allocator, budget, plan_path in plans:
        out = plan_path.parent / "model.gguf"
        result = export_gguf(plan_path, out, options=options, tools=tools, source_gguf=source)
        ppl = run_perplexity(tools, out, wikitext2_test(), ctx=ctx, chunks=args.chunks)
        _load_experts_from_gguf(model, out)
        same = alphaq_ppl()
        model.load_state_dict(original)
        from alphaq.planning.plan_file import load_plan

        apply_plan(model, load_plan(plan_path))
        own = alphaq_ppl()
        model.load_state_dict(original)
        v = result.verification
        counts: dict[str, int] = {}
        for check in v.tensors:
            if check.role == "expert":
                counts[check.expected] = counts.get(check.expected, 0) + 1
        rows.append(
            {
                "name": f"{allocator} {budget}",
                "allocator": allocator,
                "budget": budget,
                "file_bytes": v.file_bytes,
                "expert_bytes": v.expert_bytes,
                "expert_bits_per_weight": 8 * v.expert_bytes / expert_params,
                "verified": v.ok,
                "fallbacks": len(v.fallbacks),
                "llama_ppl": ppl.ppl,
                "llama_ppl_stderr": ppl.stderr,
                "alphaq_ppl_same_weights": same,
                "alphaq_ppl_own_quantizer": own,
                "types": counts,
            }
        )
        out.unlink()  # keep the work folder small; the record stays in gguf_export.json
        t = lap(f"{allocator} {budget}", t)

    header = (
        f"{'GGUF':<18}{'file MB':>9}{'expert bpw':>11}{'llama.cpp ppl':>15}{'alphaq ppl (same w.)':>22}"
        f"{'alphaq ppl (own q.)':>21}"
    )
    print(header)
    for r in rows:
        own = r["alphaq_ppl_own_quantizer"]
        print(
            f"{r['name']:<18}{r['file_bytes'] / 1e6:>9.3f}{r['expert_bits_per_weight']:>11.3f}"
            f"{r['llama_ppl']:>9.3f} ±{r['llama_ppl_stderr']:<5.2f}{r['alphaq_ppl_same_weights']:>22.3f}"
            f"{(own if own is not None else math.nan):>21.3f}"
        )
    record = {
        "schema_version": 1,
        "model": str(ckpt.path),
        "fingerprint": ckpt.fingerprint,
        "llama_cpp": tools.describe(),
        "ctx": ctx,
        "chunks": args.chunks,
        "keep": args.keep,
        "budgets": args.budgets,
        "text": "wikitext-2 test (calibration: wikitext-2 valid)",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
        },
        "seconds": timings,
        "total_seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    write_json(args.out, record)
    print(f"saved {args.out} ({record['total_seconds']} s)")


if __name__ == "__main__":
    main()
