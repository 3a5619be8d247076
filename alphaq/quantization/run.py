"""``alphaq quantize``: execute a plan on a checkpoint, shard by shard, into a quantized checkpoint folder.

The source checkpoint is streamed in source-shard order; each unit of :func:`alphaq.quantization.writer.build_layout`
reads one matrix (or one stored tensor), quantizes it at its planned width with the torch reference (or the
Triton quantize-pack kernel for ``rtn`` on CUDA) and writes it at its offset in the shard being built, so peak
memory is about one matrix. Every shard is written to a temporary file and renamed; a progress file records each
finished shard's sha256 so an interrupted run resumes where it stopped and ends byte-identical to an
uninterrupted one. ``model.safetensors.index.json``, ``config.json`` (with ``quantization_config``), the tokenizer
files and ``quantize.json`` are written last. The format is described in ``docs/quantize.md``.

The checks made before anything is written are in :mod:`alphaq.quantization.run_checks`, the per-unit work in
:mod:`alphaq.quantization.run_units`; their public names are importable from here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.atomic import write_json
from alphaq.errors import ConfigError
from alphaq.locking import locks_output
from alphaq.progress import ProgressFn
from alphaq.quantization import shards as st
from alphaq.quantization import writer as fmt
from alphaq.quantization.methods import CALIBRATED_METHODS, METHODS
from alphaq.quantization.output_folder import (
    PROGRESS_FILE,
    check_free_space,
    check_written_bytes,
    disk_error,
    resume_state,
    reusable_shard,
    start_output,
)
from alphaq.quantization.run_checks import DEVICES, METHOD_BITS, ZERO_POINTS, check_options, plan_widths
from alphaq.quantization.run_units import QuantizeJob, run_unit
from alphaq.runfolder import QUANTIZE_JSON

if TYPE_CHECKING:
    from alphaq.distributed.ray_backend import RayBackend
    from alphaq.quantization.config import QuantizeConfig
    from alphaq.quantization.gptq import GptqOptions

# QUANTIZE_JSON (quantize.json) is written last: its presence marks a finished run


@dataclass(frozen=True)
class QuantizeResult:
    """What ``alphaq quantize`` wrote.

    Attributes:
        out_dir: the quantized checkpoint folder.
        manifest: the content of its ``quantize.json`` (provenance, per-tensor records, totals, timing).
    """

    out_dir: Path
    manifest: Mapping[str, Any]

    @property
    def totals(self) -> Mapping[str, Any]:
        return self.manifest["totals"]

    @property
    def timing(self) -> Mapping[str, Any]:
        return self.manifest["timing"]


@locks_output("out_dir", "quantize")
def run_quantize(
    model: str | Path | None,
    plan_path: str | Path,
    out_dir: str | Path,
    *,
    method: str | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    on_bytes: Callable[[int], None] | None = None,
    max_shard_bytes: int = fmt.DEFAULT_MAX_SHARD_BYTES,
    zero_points: str = "float",
    calibration_text: str | Path | None = None,
    calibration_windows: int = 128,
    gptq: GptqOptions | None = None,
    backend: RayBackend | None = None,
) -> QuantizeResult:
    """Quantize a checkpoint as a plan says and write the quantized checkpoint into ``out_dir``.

    Args:
        model: checkpoint folder (None: the bundled demo model).
        plan_path: ``plan.json`` made for this checkpoint by ``alphaq plan``.
        out_dir: new (or empty) folder, or the folder of an unfinished run of the same plan, checkpoint and
            options (it is resumed).
        method: ``rtn``, ``rtn_clip``, ``hqq`` or ``gptq`` (calibrated, needs ``calibration_text``); None: the
            quantizer of the plan's measured error model (``provenance.options.quant_method``), else ``rtn``.
        device: ``cpu`` or ``cuda`` (where the quantizer runs; ``rtn`` uses the Triton kernel there).
        progress: ``progress(1, unit name, total units)`` after each tensor.
        on_bytes: called with the source bytes of each tensor done (for a MB/s display).
        max_shard_bytes: largest output shard (tensor data); a source shard is split above it.
        zero_points: ``float`` (the quantizer's own zeros) or ``integer`` (rounded, codes re-chosen: the values a
            compressed-tensors export of the same plan holds, see ``alphaq export --format compressed-tensors``).
        calibration_text: ``gptq``: the text its Hessians are measured on (:mod:`alphaq.quantization.calibration`).
        calibration_windows: ``gptq``: windows of the model's context taken from the text (128, GPTQ's standard).
        gptq: ``gptq``: the protocol (dampening, block size; None: the paper's).
        backend: None (local) or an :class:`alphaq.distributed.RayBackend`: the units are quantized by Ray tasks,
            the shards written here as locally (identical bytes, same resume).

    Returns:
        The :class:`QuantizeResult`.

    Raises:
        ConfigError: unknown method or device, CUDA unavailable, a width the method cannot write.
        PlanError: plan made for another checkpoint, planned matrices missing from the checkpoint (or with
            other shapes), routed-expert matrices missing from the plan.
        AlphaQError: ``out_dir`` not empty, not enough disk space, a write failure, a matrix that cannot be
            quantized (NaN/Inf or beyond float16).
    """
    from alphaq.load import open_checkpoint
    from alphaq.planning.plan_file import load_plan, require_target
    from alphaq.quantization.manifest import build_manifest
    from alphaq.zoo.demo import demo_model_path

    start = time.perf_counter()
    plan = load_plan(plan_path)
    require_target(plan, plan_path, "alphaq quantize")  # a gguf plan's widths are ggml types: alphaq export runs it
    if method is None:
        planned = (plan.provenance.get("options") or {}).get("quant_method")
        method = planned if planned in METHODS else "rtn"
    kernels = check_options(method, device, max_shard_bytes)
    if (method in CALIBRATED_METHODS) != (calibration_text is not None):
        raise ConfigError(
            f"{method} is calibrated on text; pass --calibration-text FILE"
            if calibration_text is None
            else f"--calibration-text is used by --method gptq only, not {method}; drop it"
        )
    if gptq is not None and method not in CALIBRATED_METHODS:
        raise ConfigError(f"gptq options are used by method gptq only, not {method}; drop them")
    if zero_points not in ZERO_POINTS:
        raise ConfigError(f"zero_points must be one of {', '.join(ZERO_POINTS)}, got {zero_points!r}")
    ckpt = open_checkpoint(model if model is not None else demo_model_path())
    widths, warnings = plan_widths(plan, ckpt, method, source=str(plan_path))
    calibration = None
    if method in CALIBRATED_METHODS:  # measured before anything is written
        from alphaq.quantization.calibration import calibrate

        low = [m for m in ckpt.matrices if widths.get(m.name, (16, None))[0] != fmt.KEEP_BITS]
        calibration = calibrate(ckpt.path, low, calibration_text, windows=calibration_windows, device=device)
        warnings.extend(calibration.warnings)
    scale_tensors = {s.name for s in ckpt.skipped if s.reason == "quantization scales"}
    layout = fmt.build_layout(ckpt.tensors, ckpt.matrices, widths, scale_tensors, max_shard_bytes=max_shard_bytes)
    out = Path(out_dir)
    key = {
        "plan_fingerprint": plan.plan_fingerprint,
        "checkpoint_fingerprint": ckpt.fingerprint,
        "method": method,
        "device": device,
        "format": fmt.FORMAT,
        "layout": fmt.layout_fingerprint(layout),
    }
    if zero_points != "float":  # older progress files (float zeros) keep matching
        key["zero_points"] = zero_points
    if calibration is not None:
        key["calibration"] = calibration.record
    if gptq is not None and gptq != _default_gptq():  # the paper's protocol keeps older progress files matching
        key["gptq"] = gptq.record()
    finished, resuming = resume_state(out, key)
    check_free_space(out, sum(s.nbytes for s in layout if s.name not in finished))
    start_output(out, key, resuming=resuming)
    job = QuantizeJob(
        ckpt,
        {m.name: m for m in ckpt.matrices},
        {t.name: t for t in plan.tensors},
        method,
        device,
        kernels,
        progress,
        on_bytes,
        total=sum(len(s.units) for s in layout),
        integer_zeros=zero_points == "integer",
        calibration=calibration,
        gptq=gptq,
    )
    resumed: set[str] = set()
    todo: list[fmt.OutputShard] = []
    try:
        for shard in layout:
            record = reusable_shard(out, shard, finished.get(shard.name))
            if record is None and shard.name in finished:
                warnings.append(
                    f"{shard.name}: the finished shard on disk does not match its recorded size and "
                    "sha256 (damaged since it was written); quantized it again"
                )
            if record is not None:
                resumed.add(shard.name)
                for unit in shard.units:
                    job.tick(unit)
                continue
            todo.append(shard)
        # --backend ray: the same shards written by the same writer, their units quantized by Ray tasks
        write = _write_output_shard if backend is None else backend.shard_writer(job, todo)
        for shard in todo:
            finished[shard.name] = write(job, shard, out)
            write_json(out / PROGRESS_FILE, {"key": key, "shards": finished})
        check_written_bytes(finished, layout)
        config = fmt.quantized_config(
            ckpt.config,
            layout,
            job.refs,
            method=method,
            plan_fingerprint=plan.plan_fingerprint,
            checkpoint_fingerprint=ckpt.fingerprint,
        )
        files = fmt.write_checkpoint_files(ckpt.path, out, config, layout)
        options = {
            "method": method,
            "device": device,
            "backend": "triton" if kernels else "torch",
            "max_shard_bytes": max_shard_bytes,
            "zero_points": zero_points,
        }
        if backend is not None:
            options["executor"] = backend.describe()
        if calibration is not None:
            from alphaq.runfolder import record_path

            text = calibration.record.get("text")  # path relative to the quantized folder (data:NAME in data/)
            text = {**text, "path": record_path(text["path"], base=out)} if text else text
            options["calibration"] = {**calibration.record, "text": text, **(gptq or _default_gptq()).record()}
        manifest = build_manifest(
            ckpt,
            plan,
            plan_path,
            layout,
            finished,
            options=options,
            resumed=resumed,
            files=files,
            warnings=warnings,
            seconds=time.perf_counter() - start,
            out_dir=out,
        )
        write_json(out / QUANTIZE_JSON, manifest)
        (out / PROGRESS_FILE).unlink(missing_ok=True)
    except OSError as exc:
        raise disk_error(exc, out) from exc
    return QuantizeResult(out_dir=out, manifest=manifest)


def quantize_with_config(
    model: str | Path | None,
    config: QuantizeConfig,
    out_dir: str | Path,
    *,
    progress: ProgressFn | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> QuantizeResult:
    """:func:`run_quantize` as a :class:`~alphaq.quantization.config.QuantizeConfig` says, on its backend
    (``local``, or Ray: connected for the run, and disconnected at its end if the run started it).

    Args:
        model: checkpoint folder (None: the bundled demo model).
        config: the plan file, quantizer (gptq with its calibration text and options), device, backend.
        out_dir: the quantized checkpoint folder (an unfinished run of the same options there is resumed).
        progress: ``progress(1, unit name, total units)`` after each tensor.
        on_bytes: called with the source bytes of each tensor done (for a MB/s display).

    Returns:
        The :class:`QuantizeResult`.
    """
    from alphaq.distributed import backend_session

    with backend_session(config.backend, config.ray_address) as backend:
        return run_quantize(
            model,
            config.plan,
            out_dir,
            method=config.method,
            device=config.device,
            progress=progress,
            on_bytes=on_bytes,
            zero_points=config.zero_points,
            calibration_text=config.calibration_text,
            calibration_windows=config.calibration_windows,
            gptq=config.gptq,
            backend=backend,
        )


def _default_gptq() -> GptqOptions:
    from alphaq.quantization.gptq import GptqOptions

    return GptqOptions()


# -- the local shard writer (--backend ray replaces it with RayBackend.shard_writer) --------------------


def _write_output_shard(job: QuantizeJob, shard: fmt.OutputShard, out: Path) -> dict[str, Any]:
    """Quantize a shard's units and write them; on the CPU (rtn, rtn_clip, hqq) ``workers`` units at a time, each
    on one torch thread: many single-threaded matrices use the cores better than one matrix on every thread, above
    all on a shared machine, where torch's threads wait on each other. The bytes do not depend on it."""
    units: list[dict[str, Any]] = []
    workers = _unit_workers(job)

    def fill(writer: st.ShardWriter) -> None:
        from alphaq.parallel import thread_map

        shared = st.LockedWriter(writer) if workers > 1 else writer
        records = thread_map(lambda unit: run_unit(job, unit, shared, shard.name), shard.units, workers)
        for unit, record in zip(shard.units, records):
            units.append(record)
            job.tick(unit)

    digest, size = st.write_shard(out / shard.name, shard.tensors, fill)
    return {"sha256": digest, "bytes": size, "units": units}


def _unit_workers(job: QuantizeJob) -> int:
    """Units quantized at once: torch's thread count on the CPU for the data-free methods, else 1."""
    from alphaq.parallel import default_workers

    if job.device != "cpu" or job.kernels or job.method == "gptq" or job.calibration is not None:
        return 1
    return default_workers()


__all__ = [
    "DEVICES",
    "METHOD_BITS",
    "PROGRESS_FILE",
    "ZERO_POINTS",
    "QuantizeResult",
    "plan_widths",
    "quantize_with_config",
    "run_quantize",
]
