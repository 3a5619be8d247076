"""The per-unit work of ``alphaq quantize``: the state a run's units share (:class:`QuantizeJob`) and
:func:`run_unit`, which reads one matrix (or stored tensor), quantizes it at its planned width and writes its output
tensors. Run by the local shard writer of :mod:`alphaq.quantization.run` and by the Ray tasks of
:mod:`alphaq.distributed.ray_backend`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alphaq.errors import AlphaQError
from alphaq.progress import ProgressFn
from alphaq.quantization import shards as st
from alphaq.quantization import writer as fmt
from alphaq.quantization.compute import quantize_matrix
from alphaq.quantization.layout import QuantSpec, quantized_nbytes

if TYPE_CHECKING:
    from alphaq.load.checkpoint import Checkpoint
    from alphaq.quantization.gptq import GptqOptions


@dataclass
class QuantizeJob:
    """What every unit of one quantize run shares: the source checkpoint, the plan, the quantizer and its options,
    the progress callbacks. Pickled into the Ray tasks of ``--backend ray``."""

    ckpt: Checkpoint
    refs: Mapping[str, Any]  # matrix name -> MatrixRef
    plan: Mapping[str, Any]  # matrix name -> PlanTensor
    method: str
    device: str
    kernels: bool
    progress: ProgressFn | None
    on_bytes: Callable[[int], None] | None
    total: int
    integer_zeros: bool = False
    calibration: Any = None  # gptq: the alphaq.quantization.calibration.Calibration
    gptq: GptqOptions | None = None  # gptq: the protocol (None: the paper's)
    done: int = 0

    def tick(self, unit: fmt.WorkUnit) -> None:
        self.done += 1
        if self.on_bytes is not None:
            self.on_bytes(unit.source_bytes)
        if self.progress is not None:
            self.progress(1, unit.key, self.total)


def run_unit(job: QuantizeJob, unit: fmt.WorkUnit, writer: st.ShardWriter, shard: str) -> dict[str, Any]:
    """Quantize (or convert, or copy) one unit and write its output tensors with ``writer``.

    Args:
        job: the run's shared state.
        unit: the unit (one matrix or one stored tensor) of the layout.
        writer: the output shard being built (or anything with its ``write(name, data)``).
        shard: the output shard's file name (recorded).

    Returns:
        The unit's record for ``quantize.json`` (name, widths, predicted and measured error, bytes, seconds).

    Raises:
        AlphaQError: a matrix that cannot be quantized (NaN/Inf or beyond float16).
    """
    import torch

    from alphaq.quantization.primitives import relative_error

    start = time.perf_counter()
    if unit.kind == "copy":
        output = unit.outputs[0]
        info = job.ckpt.tensors.get(unit.source)
        if info is not None and info.offset is not None and info.nbytes == output.nbytes:
            writer.copy_from(output.name, info.file, info.offset, info.nbytes)  # as stored, in chunks
        else:
            writer.write(output.name, st.tensor_bytes(job.ckpt.read_tensor(unit.source)))
        return {
            "kind": "copy",
            "name": output.name,
            "dtype": output.dtype,
            "shape": list(output.shape),
            "bytes": output.nbytes,
            "seconds": round(time.perf_counter() - start, 6),
            "shard": shard,
        }
    ref, planned = job.refs[unit.source], job.plan.get(unit.source)
    w = job.ckpt.read_matrix(ref, dtype=torch.float32)  # [out, in]
    record: dict[str, Any] = {
        "kind": "quantized" if unit.kind == "quantize" else "dense",
        "name": ref.name,
        "base": unit.key,
        "tensor": ref.tensor,
        "layer": ref.layer,
        "expert": ref.expert,
        "proj": ref.proj,
        "role": ref.role.value,
        "rows": ref.shape[0],
        "cols": ref.shape[1],
        "bits": unit.bits,
        "group_size": unit.group_size,
        "predicted_error": planned.error if planned is not None else None,
        "predicted_bytes": planned.bytes if planned is not None else None,
        "source_bytes": unit.source_bytes,
        "shard": shard,
    }
    if unit.kind == "dense":
        output = unit.outputs[0]
        dense = w.to(_torch_dtype(output.dtype))
        writer.write(output.name, st.tensor_bytes(dense))
        record.update(rel_error=relative_error(w, dense), bytes=output.nbytes, dtype=output.dtype)
    else:
        spec = QuantSpec(int(unit.bits or 0), int(unit.group_size or 0))
        try:
            hessian = job.calibration.hessian(ref) if job.calibration is not None else None
            packed, error = quantize_matrix(
                w,
                spec,
                job.method,
                device=job.device,
                kernels=job.kernels,
                integer_zeros=job.integer_zeros,
                hessian=hessian,
                gptq=job.gptq,
            )
        except ValueError as exc:
            raise AlphaQError(f"{ref.name}: cannot quantize ({exc}); plan it at 16 bits or fix the checkpoint") from exc
        qweight, scales, zeros = (t.name for t in unit.outputs)
        for name, tensor in ((qweight, packed.packed), (scales, packed.scale), (zeros, packed.zero)):
            writer.write(name, st.tensor_bytes(tensor))
        sizes = quantized_nbytes(ref.shape[0], ref.shape[1], spec)
        written = packed.packed.numel() + 2 * packed.scale.numel() + 2 * packed.zero.numel()
        if written != sizes.total or (planned is not None and planned.bytes != written):
            raise RuntimeError(
                f"{ref.name}: wrote {written} bytes, the format says {sizes.total} and the plan "
                f"{planned.bytes if planned else '?'} (bug in alphaq, please report it)"
            )
        record.update(
            rel_error=error,
            payload_bytes=sizes.payload,
            scale_bytes=sizes.scales,
            zero_bytes=sizes.zeros,
            bytes=sizes.total,
        )
    record["seconds"] = round(time.perf_counter() - start, 6)
    return record


def _torch_dtype(name: str) -> Any:
    import torch

    return {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[name]


__all__ = ["QuantizeJob", "run_unit"]
