"""Does the compressed-tensors export of the bundled model evaluate like alphaq's own checkpoint of the same plan?

For the default plan (budget 3.5, widths 2,3,4,8, group 128) and for a vLLM-style plan (``--widths 4,8``, exported
with ``--granularity layer``), on the first 64 WikiText-2 test windows (the model's context; ALPHAQ_DATA_DIR):

* ``alphaq eval --quantized`` of ``alphaq quantize`` (alphaq's packed checkpoint, float zero points);
* ``alphaq eval --plan`` (simulated quantization) of the same plan;
* the export loaded by transformers: ``from_pretrained`` of compressed-tensors' own dequantization of the folder
  (every export), and ``from_pretrained`` of the folder itself (only exports transformers 5 decodes: one
  symmetric scheme for all experts);
* ``alphaq quantize --zero-points integer`` of the same plan (its expert weights must equal the export's: 0);
* the largest absolute difference between the transformers-loaded expert weights and (a) alphaq's dequantization
  of the exported codes (must be 0), (b) alphaq's packed checkpoint (the cost of integer zero points).

Prints a table and writes ``bench/results/compressed_tensors_demo.json``. Run:
``ALPHAQ_DATA_DIR=/work/shared/data python bench/compressed_tensors_demo.py`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WINDOWS = 64


def _expert_weights(model: Any) -> dict[tuple[int, int, str], Any]:
    """(layer, expert, proj) -> [out, in] float32 weight of a transformers MoE model with fused experts."""
    out = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "MixtralExperts":
            layer = int(name.split(".")[2])
            inter = module.down_proj.shape[-1]
            for e in range(module.gate_up_proj.shape[0]):
                gate_up = module.gate_up_proj[e].float()  # [2I, H]
                out[(layer, e, "gate")] = gate_up[:inter]
                out[(layer, e, "up")] = gate_up[inter:]
                out[(layer, e, "down")] = module.down_proj[e].float()  # [H, I]
    return out


def _ppl(model: Any, ids: Any, context: int) -> float:
    from alphaq.evaluation.perplexity import perplexity

    return perplexity(model, ids, context, max_windows=WINDOWS).ppl


def run_case(name: str, plan_cfg: Any, granularity: str, root: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from alphaq.evaluation import EvalOptions, datasets
    from alphaq.evaluation.eval_run import run_eval
    from alphaq.export.compressed_tensors import dequantize_compressed_tensors, export_compressed_tensors
    from alphaq.load.model import tokenize_text
    from alphaq.planning.run import run_plan
    from alphaq.quantization.run import run_quantize
    from alphaq.quantization.shards import read_quantized_tensors

    run = root / name
    run_plan(None, plan_cfg, run / "run")
    plan = run / "run" / "plan.json"
    run_quantize(None, plan, run / "alphaq")
    run_quantize(None, plan, run / "alphaq-int", zero_points="integer")
    opts = EvalOptions(max_windows=WINDOWS, baseline=False)
    eval_packed = run_eval(None, quantized=run / "alphaq", options=opts).record
    eval_int = run_eval(None, quantized=run / "alphaq-int", options=opts).record
    eval_sim = run_eval(None, plan_file=plan, options=opts).record
    export = export_compressed_tensors(plan, run / "ct", granularity=granularity)
    dequantize_compressed_tensors(run / "ct", run / "dense")
    dense = AutoModelForCausalLM.from_pretrained(run / "dense", dtype=torch.float32)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "ct")
    ids = torch.tensor(tokenize_text(tokenizer, datasets.read_text(datasets.wikitext2_test())))
    context = eval_packed["protocol"]["context"]
    record: dict[str, Any] = {
        "plan": {
            "budget": getattr(plan_cfg.budget, "text", str(plan_cfg.budget)),
            "widths": list(plan_cfg.widths),
            "plan_granularity": plan_cfg.granularity,
            "export_granularity": granularity,
        },
        "export_engines": export.manifest["engines"],
        "export_totals": export.manifest["totals"],
        "protocol": eval_packed["protocol"],
        "ppl_alphaq_eval_quantized": eval_packed["ppl"],
        "ppl_alphaq_eval_simulated": eval_sim["ppl"],
        "ppl_alphaq_eval_quantized_integer_zeros": eval_int["ppl"],
        "ppl_transformers_ct_dequantized": _ppl(dense, ids, context),
    }
    try:
        direct = AutoModelForCausalLM.from_pretrained(run / "ct", dtype=torch.float32)
        record["ppl_transformers_from_pretrained"] = _ppl(direct, ids, context)
        record["max_abs_direct_vs_dequantized"] = max(
            float((a - b).abs().max())
            for a, b in zip(_expert_weights(direct).values(), _expert_weights(dense).values())
        )
    except (RuntimeError, ValueError, AssertionError) as exc:
        record["ppl_transformers_from_pretrained"] = None
        record["from_pretrained_error"] = " ".join(str(exc).split())[:200]
    # weights: transformers-loaded vs alphaq's own dequantization of the exported codes and of its packed checkpoint
    loaded = _expert_weights(dense)
    packed = read_quantized_tensors(run / "alphaq")
    packed_int = read_quantized_tensors(run / "alphaq-int")
    mods = {
        (m["layer"], m["expert"], {"w1": "gate", "w3": "up", "w2": "down"}[m["module"].rsplit(".", 1)[1]]): m
        for m in export.manifest["modules"]
    }
    vs_packed = 0.0
    vs_export = 0.0
    vs_int = 0.0
    from alphaq.export import ct_format as ctf
    from alphaq.load import open_checkpoint
    from alphaq.quantization.compute import quantize_rows
    from alphaq.quantization.layout import QuantSpec
    from alphaq.quantization.primitives import dequantize_groupwise
    from alphaq.zoo.demo import demo_model_path

    ckpt = open_checkpoint(demo_model_path())
    refs = {m.name: m for m in ckpt.matrices}
    for key, m in mods.items():
        w = ckpt.read_matrix(refs[m["source"]], dtype=torch.float32)
        spec = QuantSpec(m["bits"], m["group_size"])
        qt = (
            ctf.symmetric_quantize(w, spec)
            if m["symmetric"]
            else ctf.integer_zero_point(w, quantize_rows(w, spec, "rtn"))
        )
        vs_export = max(vs_export, float((loaded[key] - dequantize_groupwise(qt)).abs().max()))
        vs_packed = max(vs_packed, float((loaded[key] - packed[m["module"]].dequantize()).abs().max()))
        if not m["symmetric"]:
            vs_int = max(vs_int, float((loaded[key] - packed_int[m["module"]].dequantize()).abs().max()))
    record["max_abs_weight_vs_alphaq_dequant_of_export"] = vs_export
    record["max_abs_weight_vs_alphaq_packed_checkpoint"] = vs_packed
    record["max_abs_weight_vs_alphaq_integer_zeros_checkpoint"] = vs_int if granularity == "expert" else None
    return record


def main() -> None:
    from alphaq.atomic import write_json
    from alphaq.evaluation import EvalOptions
    from alphaq.evaluation.eval_run import run_eval
    from alphaq.planning import PlanConfig
    from alphaq.provenance import versions

    cases = {
        "default_3.5": (PlanConfig(budget="3.5"), "expert"),
        "vllm_4_8_layer": (PlanConfig(budget="4.5", widths="4,8", granularity="layer"), "layer"),
        "uniform_4_layer": (PlanConfig(budget="4", widths="4", granularity="layer"), "layer"),
    }
    baseline = run_eval(None, options=EvalOptions(max_windows=WINDOWS, baseline=False)).ppl
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: run_case(name, cfg, gran, Path(tmp)) for name, (cfg, gran) in cases.items()}
    print(f"original bf16 model: {baseline:.4f}")
    for name, r in results.items():
        print(
            f"{name}: alphaq eval --quantized {r['ppl_alphaq_eval_quantized']:.4f} | --plan "
            f"{r['ppl_alphaq_eval_simulated']:.4f} | transformers (CT dequantizer) "
            f"{r['ppl_transformers_ct_dequantized']:.4f} | from_pretrained {r['ppl_transformers_from_pretrained']} | "
            f"max|w - alphaq(export)| {r['max_abs_weight_vs_alphaq_dequant_of_export']:.3g} | "
            f"max|w - alphaq packed| {r['max_abs_weight_vs_alphaq_packed_checkpoint']:.3g} | --zero-points integer "
            f"{r['ppl_alphaq_eval_quantized_integer_zeros']:.4f}, max|w - it| "
            f"{r['max_abs_weight_vs_alphaq_integer_zeros_checkpoint']}"
        )
    out = Path(__file__).resolve().parent / "results" / "compressed_tensors_demo.json"
    write_json(out, {"versions": versions(), "windows": WINDOWS, "ppl_original": baseline, "cases": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
