"""``quantize.json``: what ``alphaq quantize`` did, tensor by tensor and in total (read by ``quantize.html``).

Schema version 1. Top-level keys: ``schema_version``, ``alphaq_version``, ``created``, ``format``, ``checkpoint``
(path, fingerprint, model_type), ``plan`` (path, fingerprint and the plan's options and byte summary),
``options`` (method, device, backend, max_shard_bytes), ``tensors`` (one record per quantized matrix, and per
split expert matrix kept at 16 bits), ``copied`` (one record per tensor copied unchanged), ``shards``, ``files``
(tokenizer and generation files copied), ``totals``, ``timing`` and ``warnings``. See ``docs/quantize.md``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq._version import __version__
from alphaq.errors import AlphaQError
from alphaq.quantization.shards import FORMAT
from alphaq.runfolder import QUANTIZE_JSON, QUANTIZE_SCHEMA_VERSION, read_json

if TYPE_CHECKING:
    from alphaq.load.checkpoint import Checkpoint
    from alphaq.planning.plan_file import Plan
    from alphaq.quantization.writer import OutputShard


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read and check a quantized checkpoint folder's ``quantize.json``.

    Args:
        folder: the ``--out`` folder of ``alphaq quantize``.

    Returns:
        The manifest.

    Raises:
        AlphaQError: no quantize.json (not a finished run), unreadable JSON, or another schema version.
    """
    folder = Path(folder)
    rerun = f"run `alphaq quantize ... --out {folder}` to create it"
    path = folder / QUANTIZE_JSON
    if not path.is_file():
        raise AlphaQError(f"{folder}: no {QUANTIZE_JSON}, not a finished quantize run; {rerun}")
    manifest = read_json(path, fix=rerun)
    if manifest.get("schema_version") != QUANTIZE_SCHEMA_VERSION:
        version = manifest.get("schema_version")
        raise AlphaQError(
            f"{path}: schema_version {version!r}, this alphaq reads {QUANTIZE_SCHEMA_VERSION}; re-run `alphaq quantize`"
        )
    return manifest


def build_manifest(
    ckpt: Checkpoint,
    plan: Plan,
    plan_path: str | Path,
    shards: Sequence[OutputShard],
    finished: Mapping[str, Mapping[str, Any]],
    *,
    options: Mapping[str, Any],
    resumed: set[str],
    files: Sequence[str],
    warnings: Sequence[str],
    seconds: float,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Assemble quantize.json from the per-shard records of the run.

    Args:
        ckpt: the source checkpoint.
        plan: the executed plan.
        plan_path: where it was read from.
        shards: the output layout.
        finished: shard name -> {"sha256", "bytes", "units": [records]} (this run's and resumed ones).
        options: method, device, backend, max_shard_bytes.
        resumed: names of the shards reused from an interrupted run.
        files: auxiliary files copied.
        warnings: one line each.
        seconds: wall time of this invocation.
        out_dir: the quantized folder; the checkpoint and plan paths are recorded relative to it
            (:func:`alphaq.runfolder.record_path`).

    Returns:
        The JSON-ready dict.
    """
    from alphaq.runfolder import record_path

    out = out_dir
    records = [r for shard in shards for r in finished[shard.name]["units"]]
    tensors = [r for r in records if r["kind"] != "copy"]
    copied = [r for r in records if r["kind"] == "copy"]
    prov, summary = plan.provenance, plan.summary
    plan_options = prov.get("options") or {}
    return {
        "schema_version": QUANTIZE_SCHEMA_VERSION,
        "alphaq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "format": FORMAT,
        # paths relative to the quantized folder (the bundled model by name): alphaq.runfolder.record_path
        "checkpoint": {
            "path": record_path(ckpt.path, base=out),
            "fingerprint": ckpt.fingerprint,
            "model_type": ckpt.model_type,
        },
        "plan": {
            "path": record_path(plan_path, base=out),
            "fingerprint": plan.plan_fingerprint,
            "created": prov.get("created"),
            "allocator": plan_options.get("allocator"),
            "granularity": plan_options.get("granularity"),
            "quant_method": plan_options.get("quant_method"),
            "error_model": plan_options.get("error_model"),
            "budget": (prov.get("budget") or {}).get("given"),
            "total_bytes": summary.get("total_bytes"),
            "expert_bytes": summary.get("expert_bytes"),
            "average_payload_bits": summary.get("average_payload_bits"),
        },
        "options": dict(options),
        "tensors": tensors,
        "copied": copied,
        "shards": [
            {
                "name": s.name,
                "source_file": s.source_file,
                "bytes": finished[s.name]["bytes"],
                "sha256": finished[s.name]["sha256"],
                "tensors": len(s.tensors),
                "resumed": s.name in resumed,
            }
            for s in shards
        ],
        "files": list(files),
        "totals": totals(records, shards, ckpt, summary),
        "timing": timing(records, resumed, seconds),
        "warnings": list(warnings),
    }


def totals(
    records: Sequence[Mapping[str, Any]], shards: Sequence[OutputShard], ckpt: Checkpoint, summary: Mapping[str, Any]
) -> dict[str, Any]:
    """Counts, bytes (written vs plan) and error averages of a run."""
    quantized = [r for r in records if r["kind"] == "quantized"]
    dense = [r for r in records if r["kind"] == "dense"]
    copied = [r for r in records if r["kind"] == "copy"]
    experts = [r for r in quantized if r["role"] == "expert"]
    params = sum(r["rows"] * r["cols"] for r in quantized)
    predicted = [r for r in quantized if r["predicted_error"] is not None]
    predicted_params = sum(r["rows"] * r["cols"] for r in predicted)
    quantized_bytes = sum(r["bytes"] for r in quantized)
    predicted_bytes = sum(r["predicted_bytes"] for r in quantized if r["predicted_bytes"] is not None)
    return {
        "quantized_tensors": len(quantized),
        "dense_tensors": len(dense),
        "copied_tensors": len(copied),
        "quantized_params": params,
        "payload_bytes": sum(r["payload_bytes"] for r in quantized),
        "scale_bytes": sum(r["scale_bytes"] for r in quantized),
        "zero_bytes": sum(r["zero_bytes"] for r in quantized),
        "quantized_bytes": quantized_bytes,
        "predicted_bytes": predicted_bytes,
        "bytes_match_plan": quantized_bytes == predicted_bytes,
        "expert_quantized_bytes": sum(r["bytes"] for r in experts),
        "expert_predicted_bytes": sum(r["predicted_bytes"] or 0 for r in experts),
        "dense_bytes": sum(r["bytes"] for r in dense),
        "copied_bytes": sum(r["bytes"] for r in copied),
        "output_bytes": sum(s.nbytes for s in shards),
        "shards": len(shards),
        "plan_total_bytes": summary.get("total_bytes"),
        "source_bytes": sum(info.nbytes for info in ckpt.tensors.values()),
        "source_quantized_bytes": sum(r["source_bytes"] for r in quantized),
        "average_payload_bits": sum(r["bits"] * r["rows"] * r["cols"] for r in quantized) / params if params else None,
        "mean_rel_error": (sum(r["rel_error"] * r["rows"] * r["cols"] for r in quantized) / params if params else None),
        "mean_predicted_error": (
            sum(r["predicted_error"] * r["rows"] * r["cols"] for r in predicted) / predicted_params
            if predicted_params
            else None
        ),
    }


def timing(records: Sequence[Mapping[str, Any]], resumed: set[str], seconds: float) -> dict[str, Any]:
    """Wall time and throughput (MB/s of source weights) of this invocation; resumed shards are not counted."""
    fresh = [r for r in records if r["shard"] not in resumed]
    quantized = [r for r in fresh if r["kind"] == "quantized"]
    source = sum(r["bytes"] if r["kind"] == "copy" else r["source_bytes"] for r in fresh)
    quantize_seconds = sum(r["seconds"] for r in quantized)
    quantize_source = sum(r["source_bytes"] for r in quantized)
    return {
        "wall_seconds": round(seconds, 4),
        "quantize_seconds": round(quantize_seconds, 4),
        "processed_source_bytes": source,
        "throughput_mb_s": source / seconds / 1e6 if seconds > 0 else None,
        "quantize_throughput_mb_s": quantize_source / quantize_seconds / 1e6 if quantize_seconds > 0 else None,
    }
