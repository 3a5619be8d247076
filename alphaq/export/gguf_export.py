"""``alphaq export PLAN --format gguf``: a GGUF with the planned types, made and checked by llama.cpp's own tools.

Checkpoint + plan -> ``convert_hf_to_gguf.py`` (16-bit GGUF) -> ``llama-quantize --tensor-type-file`` (the
overrides of :func:`alphaq.export.llamacpp.export_llamacpp`, one type per layer and projection) -> read back
with ``gguf.GGUFReader`` and compared tensor by tensor with the plan (:func:`alphaq.export.gguf_check.verify_gguf`).
Everything is written in a temporary folder beside the output; the GGUF is renamed into place only when the
check passes, so a failure leaves no ``.gguf`` behind. The comparison is saved as ``gguf_export.json``.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError, ConfigError
from alphaq.export.gguf_check import GgufVerification, format_verification, verify_gguf
from alphaq.export.llamacpp import (
    ExportOptions,
    LlamaCppExport,
    export_llamacpp,
    format_report,
    mla_head_dims,
    split_rows,
)
from alphaq.export.llamacpp_tools import LlamaCppTools, find_tools
from alphaq.locking import locks_output
from alphaq.runfolder import GGUF_EXPORT_JSON

GGUF_EXPORT_SCHEMA_VERSION = 1
#: ``--keep`` types for the matrices outside the budget (attention, embeddings, shared experts).
GGUF_KEEP_TYPES: tuple[str, ...] = ("f16", "bf16", "q8_0")
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class GgufExportOptions:
    """Options of the GGUF export.

    Args:
        keep_type: type of every planned matrix kept at 16 bits (``f16``, ``bf16``, ``q8_0``).
        allow_fallback: accept expert tensors whose row length forces llama.cpp's shape fallback (stored as
            Q4_0/Q5_0/Q5_1/Q8_0 instead of the planned k-quant); they are verified as the fallback type and
            reported. Off: such a plan is refused.
        outtype: ``convert_hf_to_gguf.py --outtype`` of the intermediate GGUF (``auto``: bf16 for bf16 weights).
        threads: llama-quantize threads.
    """

    keep_type: str = "f16"
    allow_fallback: bool = False
    outtype: str = "auto"
    threads: int = 2

    def __post_init__(self) -> None:
        keep = str(self.keep_type).lower()
        if keep not in GGUF_KEEP_TYPES:
            raise ConfigError(f"--keep {self.keep_type!r} is not a GGUF keep type; use {', '.join(GGUF_KEEP_TYPES)}")
        object.__setattr__(self, "keep_type", keep)
        if self.outtype not in ("auto", "f16", "bf16", "f32"):
            raise ConfigError(f"outtype {self.outtype!r} is unknown; use auto, f16, bf16 or f32")


@dataclass(frozen=True)
class GgufExportResult:
    """What :func:`export_gguf` wrote and found."""

    out: Path
    record_path: Path
    export: LlamaCppExport
    verification: GgufVerification
    record: dict[str, Any]


def _planned_source(plan_path: Path, fingerprint: str, tools: LlamaCppTools) -> Path | None:
    """The F16 GGUF a whole-model plan was measured on (``gguf/model-f16.gguf`` beside it), when still current."""
    import json

    folder = plan_path.parent / "gguf"
    try:
        key = json.loads((folder / "model-f16.json").read_text(encoding="utf-8")).get("key") or {}
    except (OSError, ValueError):
        return None
    current = key == {"fingerprint": fingerprint, "llama_cpp_python": tools.info.get("llama_cpp_python")}
    return folder / "model-f16.gguf" if current and (folder / "model-f16.gguf").is_file() else None


def whole_model_types(plan: Any) -> dict[str, str] | None:
    """GGUF name -> type of a whole-model plan (``alphaq plan --target gguf``), else None."""
    gguf = plan.provenance.get("gguf")
    types = gguf.get("types") if isinstance(gguf, dict) else None
    return {str(k): str(v) for k, v in types.items()} if isinstance(types, dict) else None


def whole_model_lines(types: dict[str, str]) -> list[str]:
    """``--tensor-type-file`` lines naming every tensor exactly (anchored: llama-quantize uses regex_search)."""
    from alphaq.export.llamacpp import _pattern

    return [f"{_pattern(name.removesuffix('.weight'))}={ggml.lower()}" for name, ggml in types.items()]


def check_plan_for(plan: Any, fingerprint: str, model_dir: Path) -> None:
    """Raise unless ``plan`` was made on the checkpoint with ``fingerprint``."""
    planned = (plan.provenance.get("checkpoint") or {}).get("fingerprint")
    if planned != fingerprint:
        raise AlphaQError(
            f"the plan was made for another checkpoint (fingerprint {planned} != {fingerprint} of "
            f"{model_dir}); pass --model with the checkpoint the plan was made for, or plan this model "
            f"first: alphaq plan {model_dir} --target gguf"
        )


def _plan_checkpoint(plan: Any, plan_path: Path) -> Path:
    """The checkpoint folder the plan records (relative to the plan's folder, the bundled model by name).

    Raises:
        AlphaQError: none recorded, or not found here; the message says to pass --model.
    """
    from alphaq.runfolder import resolve_recorded_path

    recorded = (plan.provenance.get("checkpoint") or {}).get("path")
    path = resolve_recorded_path(str(recorded), base=plan_path.parent) if recorded else None
    if path is None or not path.is_dir():
        where = f"({recorded}) is not found at {path}" if recorded else "is not recorded in it"
        raise AlphaQError(
            f"{plan_path}: the checkpoint the plan was made for {where}; pass --model with that checkpoint's folder"
        )
    return path


@locks_output("out", "export")
def export_gguf(
    plan_path: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    options: GgufExportOptions | None = None,
    tools: LlamaCppTools | None = None,
    record_dir: str | Path | None = None,
    source_gguf: str | Path | None = None,
    log: LogFn | None = None,
) -> GgufExportResult:
    """Write ``out`` (a GGUF with the plan's types), verify it, save ``gguf_export.json``.

    Args:
        plan_path: ``plan.json``.
        out: the GGUF to write (replaced atomically).
        model: checkpoint folder (default: the one the plan records).
        options: :class:`GgufExportOptions`.
        tools: llama.cpp tools (default :func:`find_tools`).
        record_dir: folder of ``gguf_export.json`` (default: the plan's folder).
        source_gguf: a 16-bit GGUF already converted from the same checkpoint (skips the converter).
        log: called with one line per step.

    Returns:
        The :class:`GgufExportResult`.

    Raises:
        AlphaQError: plan of another checkpoint, expert tensors that would fall back, tools missing, converter
            or llama-quantize failure, or a GGUF whose types differ from the plan (one line each).
    """
    from alphaq.atomic import write_json
    from alphaq.export.gguf_io import convert_checkpoint, import_gguf, quantize_gguf, read_types
    from alphaq.load import open_checkpoint
    from alphaq.planning.plan_file import load_plan

    say = log or (lambda line: None)
    options = options or GgufExportOptions()
    plan_path, out = Path(plan_path), Path(out)
    plan = load_plan(plan_path)
    model_dir = Path(model) if model is not None else _plan_checkpoint(plan, plan_path)
    ckpt = open_checkpoint(model_dir)
    check_plan_for(plan, ckpt.fingerprint, model_dir)
    whole = whole_model_types(plan)  # `alphaq plan --target gguf`: every GGUF tensor's type, by name
    keep_type = "f16" if whole is not None else options.keep_type  # its 16-bit choices are F16
    mla = mla_head_dims(ckpt.config)
    options_llamacpp = ExportOptions(
        base_type="Q8_0", keep_type=keep_type, mla_head_dims=mla, split_rows=split_rows(ckpt.config)
    )
    export = export_llamacpp(plan, options_llamacpp)
    fallbacks = [t for t in export.tensors if t.role == "expert" and t.stored_type != t.ggml_type]
    if fallbacks and not options.allow_fallback:
        f = fallbacks[0]
        raise AlphaQError(
            f"{len(fallbacks)} expert tensor(s) have rows of {f.cols} values, not a multiple of the "
            f"k-quant block (256): llama-quantize would store {f.name} as {f.stored_type}, not the "
            f"planned {f.ggml_type}; pass --allow-fallback to accept and report that"
        )
    tools = tools or find_tools()
    import_gguf()
    out.parent.mkdir(parents=True, exist_ok=True)
    record_path = Path(record_dir or plan_path.parent) / GGUF_EXPORT_JSON
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        if source_gguf is None and whole is not None:
            source_gguf = _planned_source(plan_path, ckpt.fingerprint, tools)  # the F16 the plan was measured on
        if source_gguf is None:
            say(f"converting {model_dir} with llama.cpp's convert_hf_to_gguf.py")
            source = convert_checkpoint(tools, model_dir, work / "source.gguf", outtype=options.outtype)
        else:
            source = Path(source_gguf)
        seconds["convert"] = time.perf_counter() - start
        converted = read_types(source)  # follow the converter where a family differs
        routers = {ty for n, (ty, _) in converted.items() if ".ffn_gate_inp" in n}
        follow = replace(
            export.options,
            router_type=routers.pop() if len(routers) == 1 else export.options.router_type,  # DBRX: at the outtype
            fused_gate_up=any(n.endswith(".ffn_gate_up_exps.weight") for n in converted),  # Gemma 4: gate|up fused
        )
        if follow != export.options:
            export = export_llamacpp(plan, follow)
        overrides = work / "tensor-types.txt"
        lines = export.tensor_type_lines() if whole is None else whole_model_lines(whole)
        overrides.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        start = time.perf_counter()
        say(f"quantizing with llama-quantize ({len(lines)} overrides)")
        staged = work / out.name
        flags = export.flags() if whole is None else []
        quantize_gguf(tools, source, staged, tensor_type_file=overrides, flags=flags, threads=options.threads)
        seconds["quantize"] = time.perf_counter() - start
        found = read_types(staged)
        verification = verify_gguf(
            export,
            found,
            staged.stat().st_size,
            int(plan.summary.get("expert_bytes", 0)),
            predicted_file_bytes=int(plan.provenance["gguf"]["file_bytes"]) if whole is not None else None,
        )
        wrong = [n for n, t in (whole or {}).items() if found.get(n, ("missing", 0))[0] != t]
        if wrong:
            got = found.get(wrong[0], ("no such tensor", 0))[0]
            raise AlphaQError(
                f"the GGUF llama-quantize wrote stores {wrong[0]} as {got}, not the planned {whole[wrong[0]]} "
                f"({len(wrong)} tensor(s) differ); no file was written"
            )
        if not verification.ok:
            problems = verification.problems()
            raise AlphaQError(
                f"the GGUF llama-quantize wrote does not hold the planned types ({len(problems)} "
                f"mismatch(es); first: {problems[0]}); no file was written"
            )
        record = _record(
            plan,
            plan_path,
            ckpt,
            model_dir,
            out,
            options,
            export,
            verification,
            tools,
            seconds,
            base=record_path.parent,
        )
        shutil.move(str(staged), out)
    write_json(record_path, record)
    return GgufExportResult(out=out, record_path=record_path, export=export, verification=verification, record=record)


def _record(
    plan: Any,
    plan_path: Path,
    ckpt: Any,
    model_dir: Path,
    out: Path,
    options: GgufExportOptions,
    export: LlamaCppExport,
    verification: GgufVerification,
    tools: LlamaCppTools,
    seconds: dict[str, float],
    *,
    base: Path,
) -> dict[str, Any]:
    """gguf_export.json's content; paths relative to ``base`` (its folder), the bundled model by name."""
    from alphaq._version import __version__
    from alphaq.runfolder import record_path as recorded

    plan_options = plan.provenance.get("options") or {}
    return {
        "schema_version": GGUF_EXPORT_SCHEMA_VERSION,
        "alphaq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "gguf": recorded(out, base=base),
        "plan": {
            "path": recorded(plan_path, base=base),
            "fingerprint": plan.plan_fingerprint,
            "target": plan_options.get("target", "alphaq"),
            "granularity": plan_options.get("granularity"),
            "budget": (plan.provenance.get("budget") or {}).get("given"),
        },
        "checkpoint": {
            "path": recorded(model_dir, base=base),
            "fingerprint": ckpt.fingerprint,
            "model_type": ckpt.model_type,
        },
        "options": {
            "keep_type": options.keep_type,
            "allow_fallback": options.allow_fallback,
            "outtype": options.outtype,
            "base_type": "Q8_0",
        },
        "llama_cpp": tools.describe(),
        "command": export.command("tensor-types.txt", "source.gguf", out.name),
        "cost": {
            "expert_params": export.cost.expert_params,
            "expert_plan_bytes": export.cost.expert_plan_bytes,
            "rounding_bytes": export.cost.rounding_bytes,
            "expert_gguf_bytes": export.cost.expert_gguf_bytes,
            "report": format_report(export),
            "notes": list(export.notes),
        },
        "expert_bits_per_weight": 8 * verification.expert_bytes / export.cost.expert_params
        if export.cost.expert_params
        else None,
        "verification": verification.to_dict(),
        "summary": format_verification(verification),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
