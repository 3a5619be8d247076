"""Whole-model GGUF measurements with llama.cpp itself: what llama-quantize quantizes, at what error and size.

For a 16-bit GGUF converted from the checkpoint, ``llama-quantize --pure`` writes one file per candidate type
(every quantizable tensor at that type); each is read back with the ``gguf`` package, every tensor is
dequantized and compared with the 16-bit one. The result, a :class:`GgufMeasurements`, holds per tensor and
type: the stored bytes, the squared error ``||W - Q(W)||_F^2`` (per expert for ``*_exps`` tensors) and, when
an importance matrix is given, the error weighted by each input column's mean squared activation
(``sum_j E[x_j^2] * ||W_:j - Q(W)_:j||^2``: the expected squared output error). The file's bytes outside the
planned tensors (header, norms, routers, alignment) are measured from the same files, so the size of any mix
of types is known exactly before it is written (:func:`alphaq.planning.gguf_model.file_bytes`).

I/O only at the edges: :func:`measure_gguf_model` runs the tools and reads files; the arrays it returns feed
the pure planner (:mod:`alphaq.planning.gguf_model`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alphaq.errors import PlanError
from alphaq.export.gguf_io import import_gguf, quantize_gguf
from alphaq.export.llamacpp_tools import LlamaCppTools
from alphaq.progress import ProgressFn

MEASUREMENTS_SCHEMA_VERSION = 2
#: Candidate types of a whole-model GGUF plan (data-free k-quants, Q8_0 and F16), smallest first.
MODEL_TYPES: tuple[str, ...] = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16")
#: ``llama-quantize`` type argument of each candidate (F16 is the converted file itself).
_QUANTIZE_ARG = {"Q2_K": "Q2_K", "Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q6_K": "Q6_K", "Q8_0": "Q8_0"}
_ROLE_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^token_embd\.weight$"), "embedding"),
    (re.compile(r"^output\.weight$"), "output"),
    (re.compile(r"^blk\.\d+\.ffn_\w+_exps\.weight$"), "expert"),
    (re.compile(r"^blk\.\d+\.ffn_\w+_shexp\.weight$"), "shared_expert"),
    (re.compile(r"^blk\.\d+\.ffn_(gate|up|down|gate_up)\.weight$"), "dense"),
    (re.compile(r"^blk\.\d+\.(attn|ssm|time_mix|channel_mix)_\w+\.weight$"), "attention"),
)
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")


def tensor_role(name: str) -> str:
    """Role of a GGUF weight from its name: embedding, output, expert, shared_expert, dense, attention or other."""
    for pattern, role in _ROLE_RULES:
        if pattern.match(name):
            return role
    return "other"


@dataclass(frozen=True)
class GgufWeight:
    """One tensor llama-quantize quantizes.

    Attributes:
        name: GGUF name (``blk.3.ffn_down_exps.weight``).
        role: :func:`tensor_role`.
        layer: ``blk`` index or None.
        shape: numpy shape as read (``[E, rows, cols]`` for experts, ``[rows, cols]`` otherwise).
        params: elements.
    """

    name: str
    role: str
    layer: int | None
    shape: tuple[int, ...]
    params: int

    @property
    def experts(self) -> int:
        """Experts stacked in it (1 unless a 3-D ``*_exps`` tensor)."""
        return self.shape[0] if len(self.shape) == 3 else 1

    @property
    def kind(self) -> str:
        """Name without block and ``.weight``: ``ffn_down_exps``, ``attn_v``, ``token_embd``."""
        return re.sub(r"^blk\.\d+\.", "", self.name).removesuffix(".weight")


@dataclass(frozen=True)
class GgufMeasurements:
    """Bytes and errors of every quantizable tensor at every candidate type (arrays ``[T, K]``).

    Attributes:
        weights: the quantizable tensors, in file order.
        types: candidate types (columns), a subset of :data:`MODEL_TYPES` in its order.
        nbytes: [T, K] stored bytes.
        sq_error: [T, K] ``||W - Q(W)||_F^2`` against the 16-bit GGUF.
        sq_norm: [T] ``||W||_F^2``.
        expert_sq_error: name -> [K, E] per-expert squared error (``*_exps`` tensors).
        weighted_error: label -> [T, K] squared error with each input column weighted (e.g. ``fisher``: the
            model's self-Fisher per column, ``activation``: an importance matrix's mean squared inputs).
        expert_weighted_error: label -> name -> [K, E], the same per expert.
        kurtosis: name -> [E] (``[1]`` for 2-D tensors) excess kurtosis of the 16-bit weights.
        stored_types: [T][K] the type llama-quantize actually stored (another one after its shape fallback, for rows
            that are not a multiple of the type's block: such a candidate is not offered to the planner).
        fixed_bytes: file bytes outside the planned tensors (header, metadata, other tensors, padding).
        alignment: GGUF data alignment (each tensor's data padded to it).
        total_params: elements of every tensor of the file (bits-per-weight budgets divide by it).
        f16_file_bytes: size of the 16-bit GGUF.
        imatrix: the importance matrix the quantizer and the weighting used (a label), or None.
    """

    weights: tuple[GgufWeight, ...]
    types: tuple[str, ...]
    nbytes: np.ndarray
    sq_error: np.ndarray
    sq_norm: np.ndarray
    expert_sq_error: Mapping[str, np.ndarray]
    weighted_error: Mapping[str, np.ndarray]
    expert_weighted_error: Mapping[str, Mapping[str, np.ndarray]]
    kurtosis: Mapping[str, np.ndarray]
    stored_types: tuple[tuple[str, ...], ...]
    fixed_bytes: int
    alignment: int
    total_params: int
    f16_file_bytes: int
    imatrix: str | None = None
    key: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the run folder's cache)."""

        def arr(a: np.ndarray | None) -> Any:
            return None if a is None else np.asarray(a, dtype=np.float64).tolist()

        return {
            "schema_version": MEASUREMENTS_SCHEMA_VERSION,
            "key": dict(self.key),
            "weights": [asdict(w) for w in self.weights],
            "types": list(self.types),
            "nbytes": np.asarray(self.nbytes, dtype=np.int64).tolist(),
            "sq_error": arr(self.sq_error),
            "sq_norm": arr(self.sq_norm),
            "expert_sq_error": {k: arr(v) for k, v in self.expert_sq_error.items()},
            "weighted_error": {k: arr(v) for k, v in self.weighted_error.items()},
            "expert_weighted_error": {
                label: {k: arr(v) for k, v in per.items()} for label, per in self.expert_weighted_error.items()
            },
            "kurtosis": {k: arr(v) for k, v in self.kurtosis.items()},
            "stored_types": [list(row) for row in self.stored_types],
            "fixed_bytes": self.fixed_bytes,
            "alignment": self.alignment,
            "total_params": self.total_params,
            "f16_file_bytes": self.f16_file_bytes,
            "imatrix": self.imatrix,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GgufMeasurements:
        """Inverse of :meth:`to_dict`."""

        def arr(a: Any) -> np.ndarray | None:
            return None if a is None else np.asarray(a, dtype=np.float64)

        return cls(
            weights=tuple(
                GgufWeight(w["name"], w["role"], w["layer"], tuple(w["shape"]), int(w["params"]))
                for w in data["weights"]
            ),
            types=tuple(data["types"]),
            nbytes=np.asarray(data["nbytes"], dtype=np.int64),
            sq_error=np.asarray(data["sq_error"], dtype=np.float64),
            sq_norm=np.asarray(data["sq_norm"], dtype=np.float64),
            expert_sq_error={k: np.asarray(v) for k, v in data["expert_sq_error"].items()},
            weighted_error={k: np.asarray(v, dtype=np.float64) for k, v in data["weighted_error"].items()},
            expert_weighted_error={
                label: {k: np.asarray(v) for k, v in per.items()}
                for label, per in data["expert_weighted_error"].items()
            },
            kurtosis={k: np.asarray(v) for k, v in data["kurtosis"].items()},
            stored_types=tuple(tuple(str(t) for t in row) for row in data["stored_types"]),
            fixed_bytes=int(data["fixed_bytes"]),
            alignment=int(data["alignment"]),
            total_params=int(data["total_params"]),
            f16_file_bytes=int(data["f16_file_bytes"]),
            imatrix=data.get("imatrix"),
            key=dict(data.get("key") or {}),
        )


def padded(nbytes: int | np.ndarray, alignment: int) -> Any:
    """Bytes rounded up to the GGUF alignment (each tensor's data starts aligned)."""
    return -(-np.asarray(nbytes) // alignment) * alignment


def _reader_tensors(path: Path) -> tuple[dict[str, Any], int]:
    gguf = import_gguf()
    reader = gguf.GGUFReader(str(path))
    alignment = int(reader.alignment) if getattr(reader, "alignment", None) else 32
    return {t.name: t for t in reader.tensors}, alignment


def _values(tensor: Any) -> np.ndarray:
    """Dequantized float32 values of a GGUF tensor, numpy shape (``[E, rows, cols]`` / ``[rows, cols]``)."""
    gguf = import_gguf()
    return np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)


def activation_weights(imatrix: str | Path) -> dict[str, np.ndarray]:
    """GGUF name -> mean squared input per column (``[E, cols]`` / ``[1, cols]``) of an importance matrix.

    Args:
        imatrix: a GGUF importance matrix written by ``llama-imatrix``
            (:func:`alphaq.export.llamacpp_runs.read_imatrix` reads it).
    """
    from alphaq.export.llamacpp_runs import read_imatrix

    return {
        name: np.asarray(s, np.float64) / np.maximum(c, 1.0)[:, None] for name, (s, c) in read_imatrix(imatrix).items()
    }


def measure_gguf_model(
    tools: LlamaCppTools,
    source: str | Path,
    work_dir: str | Path,
    *,
    types: Sequence[str] = MODEL_TYPES,
    imatrix: str | Path | None = None,
    column_weights: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    threads: int = 2,
    progress: ProgressFn | None = None,
    key: Mapping[str, Any] | None = None,
) -> GgufMeasurements:
    """Quantize ``source`` (a 16-bit GGUF) to every type and measure each tensor's bytes and error.

    Args:
        tools: llama.cpp tools.
        source: the F16 GGUF of the checkpoint.
        work_dir: scratch folder (one quantized file at a time, deleted after reading).
        types: candidate types (subset of :data:`MODEL_TYPES`).
        imatrix: a GGUF importance matrix passed to llama-quantize (the quantizer weights its rounding by it) and
            used as the ``activation`` column weighting.
        column_weights: label -> GGUF name -> ``[E, cols]`` / ``[cols]`` weights of each input column's error
            (e.g. ``fisher``).
        threads: llama-quantize threads.
        progress: ``progress(1, type, total)`` per type.
        key: cache key facts recorded with the result.

    Returns:
        The :class:`GgufMeasurements`.

    Raises:
        PlanError: the file has no tensor llama-quantize quantizes, or a type is unknown.
    """
    unknown = [t for t in types if t not in MODEL_TYPES]
    if unknown:
        raise PlanError(f"unknown GGUF plan type(s) {', '.join(unknown)}; use {', '.join(MODEL_TYPES)}")
    types = tuple(t for t in MODEL_TYPES if t in types)
    source, work = Path(source), Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    reference, alignment = _reader_tensors(source)
    weightings = {label: dict(v) for label, v in (column_weights or {}).items()}
    if imatrix is not None:
        weightings.setdefault("activation", activation_weights(imatrix))
    quantized_types = [t for t in types if t != "F16"]
    probe_type = quantized_types[0] if quantized_types else "Q8_0"
    results: dict[str, tuple[dict[str, Any], int]] = {}
    for qtype in quantized_types or [probe_type]:
        out = work / f"pure-{qtype}.gguf"
        flags = ["--pure"] + (["--imatrix", str(imatrix)] if imatrix is not None else [])
        quantize_gguf(
            tools, source, out, tensor_type_file=None, flags=flags, base_type=_QUANTIZE_ARG[qtype], threads=threads
        )
        tensors, _ = _reader_tensors(out)
        results[qtype] = (tensors, out.stat().st_size)
        if progress is not None:
            progress(1, qtype, len(quantized_types))
    first_tensors, _ = results[quantized_types[0] if quantized_types else probe_type]
    planned = [n for n, t in first_tensors.items() if t.tensor_type.name not in ("F16", "BF16", "F32")]
    if not planned:
        raise PlanError(f"{source}: llama-quantize quantizes no tensor of this GGUF; nothing to plan")
    weights = tuple(
        GgufWeight(
            name=n,
            role=tensor_role(n),
            layer=int(m.group(1)) if (m := _LAYER_RE.match(n)) else None,
            shape=tuple(int(d) for d in reversed(reference[n].shape)),
            params=int(reference[n].n_elements),
        )
        for n in planned
    )
    T, K = len(weights), len(types)
    nbytes = np.zeros((T, K), dtype=np.int64)
    sq_error = np.zeros((T, K))
    weighted = {label: np.zeros((T, K)) for label in weightings}
    expert_sq: dict[str, np.ndarray] = {w.name: np.zeros((K, w.experts)) for w in weights if w.role == "expert"}
    expert_w = {label: {n: np.zeros_like(v) for n, v in expert_sq.items()} for label in weightings}
    sq_norm = np.zeros(T)
    kurtosis: dict[str, np.ndarray] = {}
    stored = [list(types) for _ in weights]
    fixed = []
    for i, w in enumerate(weights):
        ref = _values(reference[w.name]).reshape(w.shape)  # [E, rows, cols] or [rows, cols]
        sq_norm[i] = float(np.square(ref, dtype=np.float64).sum())
        kurtosis[w.name] = _excess_kurtosis(ref.reshape(w.experts, -1))
        col_w = {label: _column_weights(per.get(w.name), w) for label, per in weightings.items()}
        for k, qtype in enumerate(types):
            if qtype == "F16":
                nbytes[i, k] = (
                    int(reference[w.name].n_bytes) if reference[w.name].tensor_type.name == "F16" else 2 * w.params
                )
                continue
            tensor = results[qtype][0][w.name]
            nbytes[i, k] = int(tensor.n_bytes)
            stored[i][k] = tensor.tensor_type.name
            diff = np.square(_values(tensor).reshape(w.shape) - ref, dtype=np.float64)  # same shape
            if w.role == "expert":
                expert_sq[w.name][k] = diff.reshape(w.experts, -1).sum(axis=-1)
            sq_error[i, k] = float(diff.sum())
            for label, cw in col_w.items():
                wdiff = diff * cw  # broadcast to [E, rows, cols] / [rows, cols]
                weighted[label][i, k] = float(wdiff.sum())
                if w.role == "expert":
                    expert_w[label][w.name][k] = wdiff.reshape(w.experts, -1).sum(axis=-1)
    for tensors, size in results.values():
        fixed.append(size - int(padded(np.array([int(tensors[w.name].n_bytes) for w in weights]), alignment).sum()))
    all_params = int(sum(int(t.n_elements) for t in reference.values()))
    return GgufMeasurements(
        weights=weights,
        types=types,
        nbytes=nbytes,
        sq_error=sq_error,
        sq_norm=sq_norm,
        expert_sq_error=expert_sq,
        weighted_error=weighted,
        expert_weighted_error=expert_w,
        kurtosis=kurtosis,
        stored_types=tuple(tuple(row) for row in stored),
        fixed_bytes=int(max(fixed)),
        alignment=alignment,
        total_params=all_params,
        f16_file_bytes=source.stat().st_size,
        imatrix=str(Path(imatrix).name) if imatrix is not None else None,
        key=dict(key or {}),
    )


def _excess_kurtosis(values: np.ndarray) -> np.ndarray:
    """Excess kurtosis of each row of ``[E, n]`` (``E[(w - mean)^4] / var^2 - 3``)."""
    v = values.astype(np.float64)
    centred = v - v.mean(axis=1, keepdims=True)
    var = np.square(centred).mean(axis=1)
    return np.square(np.square(centred)).mean(axis=1) / np.maximum(var * var, 1e-300) - 3.0


def _column_weights(given: np.ndarray | None, w: GgufWeight) -> np.ndarray:
    """Element weights broadcastable to the tensor's numpy shape (ones when not given).

    ``given`` may be per column (``[cols]``, ``[E, cols]``: an importance matrix, a Fisher column mean), per row
    (``[rows, 1]``: a Fisher row mean of an embedding) or per element (the tensor's shape).
    """
    if given is None:
        return np.ones(1)
    g = np.asarray(given, dtype=np.float64)
    cols = w.shape[-1]
    if g.shape == w.shape or (g.ndim == 2 and g.shape == (w.shape[-2], 1)):
        return g
    if g.shape[-1] != cols:
        raise PlanError(f"{w.name}: weights of shape {g.shape} do not fit the tensor's {w.shape}")
    if w.role == "expert":
        g = g.reshape(-1, cols)
        g = g if g.shape[0] == w.experts else np.broadcast_to(g[:1], (w.experts, cols))
        return g[:, None, :]  # [E, 1, cols]
    return g.reshape(-1, cols)[:1]  # [1, cols]


def save_measurements(path: str | Path, m: GgufMeasurements) -> None:
    """Write the measurements as JSON (atomically)."""
    from alphaq.atomic import write_json

    write_json(Path(path), m.to_dict())


def load_measurements(path: str | Path, key: Mapping[str, Any]) -> GgufMeasurements | None:
    """Cached measurements with exactly this key, or None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("schema_version") != MEASUREMENTS_SCHEMA_VERSION or data.get("key") != json.loads(json.dumps(key)):
        return None
    return GgufMeasurements.from_dict(data)


__all__ = [
    "MODEL_TYPES",
    "GgufMeasurements",
    "GgufWeight",
    "load_measurements",
    "measure_gguf_model",
    "padded",
    "activation_weights",
    "save_measurements",
    "tensor_role",
]
