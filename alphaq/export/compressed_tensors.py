"""``alphaq export PLAN --format compressed-tensors``: a plan as a Hugging Face checkpoint in compressed-tensors form.

The source checkpoint is streamed shard by shard as ``alphaq quantize`` does: each output shard's safetensors header
is computed from the tensor shapes alone, then every planned matrix is read, quantized (alphaq's ``--method``, zero
points rounded to integers; or symmetric RTN for ``--granularity layer`` and ``model``), packed by compressed-tensors'
``PackedQuantizationCompressor`` (checked to decompress to the same values) and written at its offset; every other
tensor is copied byte for byte. Peak memory is about one matrix. Everything is written into a temporary folder
beside ``--out`` and renamed onto it at the end, so an error leaves no partial folder. The mapping itself lives in
:mod:`alphaq.export.ct_format`; what each engine can load is in ``docs/compressed-tensors.md``.

Supported layouts: checkpoints that store one 2-D ``.weight`` per expert projection, whatever the model type (Mixtral
``w1/w2/w3``, the ``gate/up/down_proj`` of Qwen, DeepSeek, GLM, MiniMax...: 49 of the MoE types transformers 5.25
builds; transformers 5 fuses them into 3-D parameters on load and back on save). Checkpoints that store all experts of
a layer in one tensor (gpt-oss, Llama 4, DBRX, Granite-MoE...) have no per-expert module for compressed-tensors to
name, and are refused with the reason. Which matrices are written at which scheme (``--granularity expert``,
``layer`` or ``model``, the one transformers loads) is :mod:`alphaq.export.ct_modules`.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq._version import __version__
from alphaq.errors import AlphaQError, CheckpointError, ConfigError
from alphaq.export import ct_format as ctf
from alphaq.export.ct_modules import GRANULARITIES, model_conversions, plan_modules, transformers_blocker, widened
from alphaq.locking import locks_output
from alphaq.parallel import thread_map
from alphaq.progress import ProgressFn

if TYPE_CHECKING:
    from alphaq.load.checkpoint import Checkpoint
    from alphaq.planning.plan_file import Plan

#: Provenance file written beside the checkpoint.
MANIFEST_FILE = "alphaq-export.json"
MANIFEST_SCHEMA_VERSION = 1
_NBYTES = {"I32": 4, "F32": 4, "I64": 8}


@dataclass(frozen=True)
class CtExportResult:
    """What the export wrote: the folder and its manifest (also saved as :data:`MANIFEST_FILE`)."""

    out_dir: Path
    manifest: Mapping[str, Any]


@locks_output("out_dir", "export")
def export_compressed_tensors(
    plan_path: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    method: str | None = None,
    granularity: str = "expert",
    progress: ProgressFn | None = None,
) -> CtExportResult:
    """Write ``plan_path`` applied to its checkpoint as a compressed-tensors checkpoint folder ``out_dir``.

    Args:
        plan_path: ``plan.json`` of ``alphaq plan``.
        out_dir: the folder to create (must not exist, or be empty).
        model: the checkpoint (None: the plan's recorded checkpoint path, else the bundled demo model).
        method: ``rtn``, ``rtn_clip`` or ``hqq`` (``expert`` granularity only; None: the plan's quantizer, else
            rtn).
        granularity: ``expert`` (the plan's widths, asymmetric, integer zero points), ``layer`` (one symmetric
            scheme per MoE layer at its widest planned width, which must be 4 or 8 bits: what vLLM serves) or
            ``model`` (one symmetric scheme for every routed expert at the widest planned expert width: what
            ``AutoModelForCausalLM.from_pretrained`` loads).
        progress: ``progress(1, tensor name, total)`` after each tensor.

    Returns:
        The :class:`CtExportResult`.

    Raises:
        PlanError: the plan is for another checkpoint. ConfigError: a width, group size or granularity the format,
            vLLM (``layer``) or transformers (``model``) cannot hold. CheckpointError: fused multi-expert tensors.
            AlphaQError: ``out_dir`` exists and is not empty, or a write fails.
    """
    import torch

    from alphaq.load import open_checkpoint
    from alphaq.planning.plan_file import load_plan, require_target
    from alphaq.quantization import shards as st
    from alphaq.quantization.methods import METHODS
    from alphaq.quantization.run import plan_widths
    from alphaq.quantization.writer import AUX_FILE_PATTERNS, OutputTensor, index_json, shard_file_name
    from alphaq.zoo.demo import demo_model_path

    start = time.perf_counter()
    if granularity not in GRANULARITIES:
        raise ConfigError(f"unknown --granularity {granularity!r}; use {', '.join(GRANULARITIES)}")
    plan = load_plan(plan_path)
    require_target(plan, plan_path, "alphaq export --format compressed-tensors")
    if method is not None and granularity != "expert":
        raise ConfigError(
            f"--method {method} applies to --granularity expert only: transformers and vLLM decode experts without "
            f"zero points, so a {granularity} export is symmetric RTN; drop --method (or use --granularity expert)"
        )
    if method is None:
        planned = (plan.provenance.get("options") or {}).get("quant_method")
        method = planned if planned in METHODS else "rtn"
    if method not in METHODS:
        raise ConfigError(f"unknown quantization method {method!r}; use --method with one of {', '.join(METHODS)}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlphaQError(f"{out}: already exists and is not an empty folder; choose another --out or remove it")
    ckpt = open_checkpoint(model if model is not None else _plan_checkpoint(plan, plan_path) or demo_model_path())
    widths, warnings = plan_widths(plan, ckpt, method, source=str(plan_path))
    modules = plan_modules(ckpt, widths, granularity)
    blocker = transformers_blocker(
        str(ckpt.model_type),
        model_conversions(ckpt.path, str(ckpt.model_type)),
        ckpt.tensors,
        (m.module + ".weight" for m in modules.values()),
    )
    if blocker is not None and granularity == "model":
        raise CheckpointError(blocker)
    wider = widened(modules)
    warnings = [*warnings, *([wider] if wider else [])]
    refs = {m.name: m for m in ckpt.matrices}
    by_tensor = {refs[m.source].tensor: m for m in modules.values()}
    groups = ctf.config_groups(modules.values(), granularity=granularity)
    quant_config = ctf.quantization_config(groups)

    files = sorted({info.file for info in ckpt.tensors.values()})
    shard_names = [shard_file_name(i, len(files)) for i in range(len(files))]
    total = len(ckpt.tensors)
    records: list[dict[str, Any]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        layout: list[_Shard] = []
        for file, shard_name in zip(files, shard_names):
            names = sorted(n for n, info in ckpt.tensors.items() if info.file == file)
            tensors: list[OutputTensor] = []
            for name in names:
                module = by_tensor.get(name)
                if module is None:
                    info = ckpt.tensors[name]
                    tensors.append(OutputTensor(name, info.dtype, tuple(info.shape), info.nbytes))
                else:
                    tensors += [
                        OutputTensor(n, dt, shape, _NBYTES[dt] * _numel(shape))
                        for n, dt, shape in module.tensor_specs()
                    ]

            def fill(writer: st.ShardWriter, names: list[str] = names) -> None:
                shared = st.LockedWriter(writer)

                def one(name: str) -> dict[str, Any] | None:
                    module = by_tensor.get(name)
                    if module is None:  # copied as stored, in chunks
                        info = ckpt.tensors[name]
                        if info.offset is None:
                            shared.write(name, st.tensor_bytes(ckpt.read_tensor(name)))
                        else:
                            shared.copy_from(name, info.file, info.offset, info.nbytes)
                        return None
                    w = ckpt.read_matrix(refs[module.source], dtype=torch.float32)  # [out, in]
                    state, record = quantize_module(w, module, method)
                    for local, tensor in state.items():
                        shared.write(f"{module.module}.{local}", st.tensor_bytes(tensor))
                    return record

                for name, record in zip(names, thread_map(one, names)):  # modules on several threads, in order
                    if record is not None:
                        records.append(record)
                    if progress is not None:
                        progress(1, name, total)

            st.write_shard(tmp / shard_name, tensors, fill)
            layout.append(_Shard(shard_name, tuple(tensors)))
        for pattern in AUX_FILE_PATTERNS:
            for source in sorted(ckpt.path.glob(pattern)):
                if source.is_file() and not (tmp / source.name).exists():
                    shutil.copyfile(source, tmp / source.name)
        _write_json(tmp / "config.json", {**ckpt.config, "quantization_config": quant_config})
        if len(files) > 1:
            _write_json(tmp / "model.safetensors.index.json", index_json(layout))  # type: ignore[arg-type]
        manifest = build_manifest(
            ckpt,
            plan,
            plan_path,
            modules,
            records,
            method=method,
            granularity=granularity,
            warnings=warnings,
            seconds=time.perf_counter() - start,
            out_dir=out,
            blocker=blocker,
        )
        _write_json(tmp / MANIFEST_FILE, manifest)
        if out.is_dir():
            out.rmdir()  # an empty folder, checked above
        os.replace(tmp, out)
    except OSError as exc:
        raise AlphaQError(
            f"cannot write {exc.filename or out}: {exc.strerror or exc}; free space or choose another --out"
        ) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return CtExportResult(out_dir=out, manifest=manifest)


@dataclass(frozen=True)
class _Shard:
    """The two attributes of :class:`alphaq.quantization.writer.OutputShard` that ``index_json`` reads."""

    name: str
    tensors: tuple[Any, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _write_json(path: Path, obj: Any) -> None:
    from alphaq.atomic import write_json

    write_json(path, obj)


def _plan_checkpoint(plan: Plan, plan_path: str | Path) -> Path | None:
    """The checkpoint folder the plan records (relative to the plan's folder, the bundled model by name); None when
    it records none.

    Raises:
        AlphaQError: the recorded folder is not found here; the message says to pass --model.
    """
    from alphaq.runfolder import resolve_recorded_path

    recorded = (plan.provenance.get("checkpoint") or {}).get("path")
    if not recorded:
        return None
    path = resolve_recorded_path(str(recorded), base=Path(plan_path).parent)
    if not path.is_dir():
        raise AlphaQError(
            f"{plan_path}: the checkpoint the plan was made for ({recorded}) is not found at {path}; "
            "pass --model with that checkpoint's folder"
        )
    return path


def quantize_module(w: Any, module: ctf.CtModule, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quantize one matrix for the export and pack it; return its tensors and its manifest record.

    ``expert`` modules: alphaq's ``method`` then :func:`~alphaq.export.ct_format.integer_zero_point`; the record
    holds alphaq's own relative error and the exported one. ``layer`` / ``model`` modules: symmetric RTN.
    """
    from alphaq.quantization.compute import quantize_rows, reconstruction_error
    from alphaq.quantization.layout import QuantSpec

    spec = QuantSpec(module.bits, module.group_size)
    try:
        if module.symmetric:
            qt, alphaq_error = ctf.symmetric_quantize(w, spec), None
        else:
            native = quantize_rows(w, spec, method)
            alphaq_error = reconstruction_error(w, native) if module.bits == module.planned_bits else None
            qt = ctf.integer_zero_point(w, native)
    except ValueError as exc:
        raise AlphaQError(
            f"{module.source}: cannot quantize ({exc}); plan it at 16 bits or fix the checkpoint"
        ) from exc
    state = ctf.compress_matrix(qt, module)
    record = {
        "module": module.module,
        "source": module.source,
        "layer": module.layer,
        "expert": module.expert,
        "bits": module.bits,
        "planned_bits": module.planned_bits,
        "group_size": module.group_size,
        "symmetric": module.symmetric,
        "rows": module.rows,
        "cols": module.cols,
        "bytes": sum(int(t.numel()) * t.element_size() for t in state.values()),
        "rel_error": reconstruction_error(w, qt),
        "alphaq_rel_error": alphaq_error,
    }
    return state, record


def build_manifest(
    ckpt: Checkpoint,
    plan: Plan,
    plan_path: str | Path,
    modules: Mapping[str, ctf.CtModule],
    records: list[dict[str, Any]],
    *,
    method: str,
    granularity: str,
    warnings: list[str],
    seconds: float,
    out_dir: str | Path | None = None,
    blocker: str | None = None,
) -> dict[str, Any]:
    """``alphaq-export.json``: schema version, versions, plan and checkpoint fingerprints, options, per-module records,
    totals and which engines can serve the export (paths relative to ``out_dir``, the bundled model by name;
    ``blocker``: why transformers loads no compressed-tensors checkpoint of this type, see
    :func:`alphaq.export.ct_modules.transformers_blocker`)."""
    import compressed_tensors

    from alphaq.runfolder import record_path

    params = sum(r["rows"] * r["cols"] for r in records)
    compare = [r for r in records if r["alphaq_rel_error"] is not None]
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "alphaq_version": __version__,
        "compressed_tensors_version": compressed_tensors.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "format": f"compressed-tensors/{ctf.CT_FORMAT}",
        "checkpoint": {
            "path": record_path(ckpt.path, base=out_dir),
            "fingerprint": ckpt.fingerprint,
            "model_type": ckpt.model_type,
        },
        "plan": {"path": record_path(plan_path, base=out_dir), "fingerprint": plan.plan_fingerprint},
        "options": {
            "method": method if granularity == "expert" else "symmetric-rtn",
            "granularity": granularity,
            "zero_points": "integer (rounded, codes re-chosen)" if granularity == "expert" else "none",
        },
        "engines": ctf.engines(list(modules.values()), granularity=granularity, blocker=blocker),
        "modules": sorted(records, key=lambda r: r["module"]),
        "totals": {
            "quantized_modules": len(records),
            "quantized_bytes": sum(r["bytes"] for r in records),
            "plan_bytes": sum(t.bytes for t in plan.tensors if t.name in modules),
            "average_bits": sum(r["bits"] * r["rows"] * r["cols"] for r in records) / params if params else None,
            "mean_rel_error": sum(r["rel_error"] * r["rows"] * r["cols"] for r in records) / params if params else None,
            "mean_alphaq_rel_error": (
                sum(r["alphaq_rel_error"] * r["rows"] * r["cols"] for r in compare)
                / sum(r["rows"] * r["cols"] for r in compare)
                if compare
                else None
            ),
        },
        "timing": {"wall_seconds": round(seconds, 4)},
        "warnings": list(warnings),
    }


def dequantize_compressed_tensors(ct_dir: str | Path, out_dir: str | Path, *, dtype: Any = None) -> Path:
    """Decompress a compressed-tensors checkpoint into a dense one with compressed-tensors' own dequantizer.

    The route for exports transformers 5 cannot decode itself (per-expert schemes, zero points): the result loads with
    ``AutoModelForCausalLM.from_pretrained(out_dir)``. Each module is decoded with its own config group.

    Args:
        ct_dir: a compressed-tensors checkpoint folder.
        out_dir: the dense checkpoint folder to write.
        dtype: torch dtype of the dequantized weights (default float32).

    Returns:
        ``out_dir``.
    """
    import torch
    from compressed_tensors.entrypoints.convert import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer

    converter = CompressedTensorsDequantizer(str(ct_dir), dtype=dtype or torch.float32)
    convert_checkpoint(str(ct_dir), str(out_dir), converter, max_workers=1, device="cpu")
    return Path(out_dir)
