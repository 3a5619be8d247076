"""Console summaries the stage commands print after writing (rich tables read from the stage's result)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from alphaq.runfolder import PLAN_JSON


def print_plan_summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    summary, prov = result.plan.summary, result.plan.provenance
    if "gguf" in prov:
        print_gguf_plan_summary(result)
        return
    console = Console()
    table = Table(
        title=f"alphaq plan: budget {prov['budget']['given']} ({prov['options']['allocator']}, "
        f"{prov['options']['granularity']})"
    )
    table.add_column("what")
    table.add_column("value")
    table.add_row("average payload bits", f"{summary['average_payload_bits']:.3f}")
    table.add_row("effective bits (incl. scales/zeros)", f"{summary['effective_bits']:.3f}")
    table.add_row(
        "bits histogram (share of expert weights)",
        ", ".join(f"{k}b: {v:.0%}" for k, v in summary["param_share_by_width"].items()),
    )
    ref = _reference_label((prov.get("checkpoint") or {}).get("dtype"))
    table.add_row(
        f"expert memory {ref} -> plan", f"{_mb(summary['expert_bytes_bf16'])} -> {_mb(summary['expert_bytes'])}"
    )
    table.add_row(f"total memory {ref} -> plan", f"{_mb(summary['total_bytes_bf16'])} -> {_mb(summary['total_bytes'])}")
    table.add_row(
        "compression (experts / total)",
        f"{summary['expert_compression_ratio']:.2f}x / {summary['compression_ratio']:.2f}x",
    )
    from alphaq.planning.costs import prediction_units

    label, number, units = prediction_units((prov.get("options") or {}).get("error_model"))
    table.add_row(f"{label} ({units})", number.format(summary["predicted_error"]))
    solver = prov["solver"]
    table.add_row(
        "solver", f"{solver['method']} {solver['status']}, gap {solver['gap']:.2g}, {solver['seconds']:.2f} s"
    )
    layer = result.comparison.get("layer_plan")
    if layer and layer.get("status") != "infeasible":
        table.add_row(
            "best layer-granularity plan (GGUF/vLLM)",
            f"objective {layer['objective']:.5f} vs {result.comparison['expert_plan']['objective']:.5f}",
        )
    table.add_row("written to", str(result.run_dir / PLAN_JSON))
    console.print(table)
    for warning in prov.get("warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _reference_label(dtype: str | None) -> str:
    """What the plan's 16-bit reference sizes are called: the checkpoint's own type when it is 16-bit."""
    if dtype in ("BF16", "F16"):
        return dtype.lower()
    if dtype in ("F32", "F64"):
        return f"16-bit (the {dtype} source takes {2 if dtype == 'F32' else 4}x)"
    return f"16-bit (source {dtype})" if dtype else "16-bit"


def print_gguf_plan_summary(result: Any) -> None:
    """A whole-model GGUF plan: file size against the budget, types by share, predicted KL divergence."""
    from rich.console import Console
    from rich.table import Table

    summary, prov = result.plan.summary, result.plan.provenance
    gguf, budget = prov["gguf"], prov["budget"]
    table = Table(
        title=f"alphaq plan --target gguf: budget {budget['given']} ({prov['options']['importance']} importance)"
    )
    table.add_column("what")
    table.add_column("value")
    table.add_row("GGUF file (predicted exactly)", f"{gguf['file_bytes']:,} bytes ({_mb(gguf['file_bytes'])})")
    table.add_row("budget", f"{gguf['capacity']:,} bytes ({gguf['file_bytes'] / gguf['capacity']:.2%} used)")
    table.add_row("bits per weight (whole file)", f"{summary['gguf_bits_per_weight']:.3f}")
    table.add_row(
        "types (share of planned weights)",
        ", ".join(f"{t}: {v:.0%}" for t, v in summary["gguf_param_share_by_type"].items()),
    )
    if summary.get("predicted_kld") is not None:
        table.add_row("predicted KL divergence (self-Fisher, nats/token)", f"{summary['predicted_kld']:.5f}")
    table.add_row("solver", f"{prov['solver']['method']} {prov['solver']['status']}")
    table.add_row("written to", str(result.run_dir / PLAN_JSON))
    Console().print(table)


def print_quantize_summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    manifest = result.manifest
    totals, timing, options = manifest["totals"], manifest["timing"], manifest["options"]
    console = Console()
    table = Table(
        title=f"alphaq quantize: {Path(manifest['checkpoint']['path']).name} ({options['method']}, "
        f"{options['backend']} on {options['device']})"
    )
    table.add_column("what")
    table.add_column("value")
    table.add_row(
        "tensors quantized / copied",
        f"{totals['quantized_tensors']} / {totals['copied_tensors']}"
        + (f" (+{totals['dense_tensors']} split experts at 16 bits)" if totals["dense_tensors"] else ""),
    )
    table.add_row(
        "quantized bytes vs plan",
        f"{totals['quantized_bytes']:,} vs {totals['predicted_bytes']:,} "
        + ("(equal)" if totals["bytes_match_plan"] else "(DIFFERENT)"),
    )
    table.add_row("checkpoint source -> quantized", f"{_mb(totals['source_bytes'])} -> {_mb(totals['output_bytes'])}")
    if totals["mean_rel_error"] is not None:
        predicted = totals["mean_predicted_error"]
        from alphaq.planning.costs import prediction_units

        label, number, _ = prediction_units((manifest.get("plan") or {}).get("error_model"))
        table.add_row(
            "reconstruction error (param-weighted)",
            f"{totals['mean_rel_error']:.5f}"
            + (f" (plan {label} {number.format(predicted)})" if predicted is not None else ""),
        )
    resumed = sum(1 for s in manifest["shards"] if s["resumed"])
    table.add_row("shards", f"{len(manifest['shards'])}" + (f" ({resumed} resumed)" if resumed else ""))
    rate = timing["throughput_mb_s"]
    table.add_row("time", f"{timing['wall_seconds']:.1f} s" + (f", {rate:,.1f} MB/s of source weights" if rate else ""))
    table.add_row("written to", str(result.out_dir))
    console.print(table)
    for warning in manifest["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _mb(nbytes: Any) -> str:
    return f"{nbytes / 1e6:,.2f} MB"


def print_inspect_summary(result: Any, out: Path) -> None:
    """The inspect summary table, from the result's rows (pandas is not needed to print it)."""
    import statistics
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    console = Console()
    details, experts, manifest = result.detail_rows, result.expert_rows, result.manifest
    ckpt = manifest["checkpoint"]
    table = Table(title=f"alphaq inspect: {Path(ckpt['path']).name} ({ckpt['model_type']})", show_header=True)
    for col in ("what", "value"):
        table.add_column(col)
    fitted = sum(1 for row in details if row["status"] == "success")
    table.add_row("matrices", f"{len(details)} ({fitted} fitted)")
    routed = [row for row in experts if row["role"] == "expert"]
    if routed:
        alphas = [row["alpha_mean"] for row in routed if not math.isnan(row["alpha_mean"])]
        table.add_row("experts", str(len(routed)))
        if alphas:
            table.add_row(
                "expert alpha min / median / max",
                f"{min(alphas):.2f} / {statistics.median(alphas):.2f} / {max(alphas):.2f}",
            )
        labels = Counter(row["quality"] for row in routed)
        table.add_row("quality flags", ", ".join(f"{k}: {v}" for k, v in sorted(labels.items(), key=lambda kv: -kv[1])))
    table.add_row("time", f"{manifest['timing']['seconds']:.1f} s")
    table.add_row("written to", str(out))
    console.print(table)
    for warning in manifest["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")


__all__ = ["print_inspect_summary", "print_plan_summary", "print_quantize_summary"]
