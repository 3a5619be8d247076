"""The plan file (``plan.json``): every matrix's width, bytes and predicted error, with provenance.

``save_plan`` writes it atomically; ``load_plan`` validates it (JSON, schema version, fields, widths,
group sizes, byte sizes, fingerprint, and optionally that every tensor exists in the checkpoint) and
raises :class:`alphaq.errors.PlanError` with a one-line fix for each problem (the field checks live in
:mod:`alphaq.planning.plan_checks`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any

from alphaq.atomic import json_safe, write_json
from alphaq.errors import PlanError
from alphaq.planning.plan_checks import PLAN_TARGETS as PLAN_TARGETS
from alphaq.planning.plan_checks import REMAKE as _REMAKE
from alphaq.planning.plan_checks import (
    check_provenance,
    check_summary_totals,
    check_summary_types,
    check_tensor_entry,
    short_value,
)
from alphaq.runfolder import PLAN_SCHEMA_VERSION

_TOP_FIELDS = ("schema_version", "provenance", "summary", "tensors", "plan_fingerprint")


@dataclass(frozen=True)
class PlanTensor:
    """One matrix of the plan.

    Attributes:
        name: unique matrix id (inspect ``details.name``).
        tensor: source tensor name in the checkpoint.
        layer: decoder layer or None.
        expert: expert index or None.
        proj: projection or None.
        role: ``expert``, ``attention``, ``router``, ... (the inspect role).
        rows: output features.
        cols: input features.
        params: ``rows * cols``.
        bits: width 1..8, or 16 to keep it in bf16.
        group_size: quantization group size (None when ``bits == 16``).
        bytes: stored bytes (:func:`alphaq.quantization.layout.quantized_nbytes` total, or bf16 size).
        error: predicted error at ``bits`` (the plan's error model); 0.0 for bf16, None when not modelled.
        unit: key of the planning unit (routed experts), else None.
    """

    name: str
    tensor: str
    layer: int | None
    expert: int | None
    proj: str | None
    role: str
    rows: int
    cols: int
    params: int
    bits: int
    group_size: int | None
    bytes: int
    error: float | None
    unit: str | None = None


def _canonical(obj: Any) -> Any:
    """JSON-normal form: tuples become lists, numpy scalars Python ones, NaN/inf None (TypeError if not JSON-able)."""
    return json.loads(json.dumps(json_safe(obj), allow_nan=False))


def tensors_fingerprint(tensors: tuple[PlanTensor, ...] | list[PlanTensor]) -> str:
    """sha256 of the canonical JSON of the tensor list (sorted keys, no spaces)."""
    payload = json.dumps(_canonical([asdict(t) for t in tensors]), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Plan:
    """A bit-width plan.

    Attributes:
        provenance: how it was made (versions, checkpoint, diagnostics, options, solver figures).
        summary: sizes and averages (see :func:`alphaq.planning.planner.make_plan`).
        tensors: every matrix, routed experts and kept ones.
        schema_version: :data:`PLAN_SCHEMA_VERSION`.
        plan_fingerprint: sha256 of the canonical tensor list (computed when empty).
    """

    provenance: Mapping[str, Any]
    summary: Mapping[str, Any]
    tensors: tuple[PlanTensor, ...]
    schema_version: int = PLAN_SCHEMA_VERSION
    plan_fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        object.__setattr__(self, "provenance", _canonical(dict(self.provenance)))
        object.__setattr__(self, "summary", _canonical(dict(self.summary)))
        if not self.plan_fingerprint:
            object.__setattr__(self, "plan_fingerprint", tensors_fingerprint(self.tensors))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the file's content)."""
        return {
            "schema_version": self.schema_version,
            "plan_fingerprint": self.plan_fingerprint,
            "provenance": self.provenance,
            "summary": self.summary,
            "tensors": _canonical([asdict(t) for t in self.tensors]),
        }

    @property
    def target(self) -> str:
        """The format the widths were planned for: ``"alphaq"`` or ``"gguf"`` (``provenance.options.target``)."""
        options = self.provenance.get("options")
        return str(options.get("target") or "alphaq") if isinstance(options, Mapping) else "alphaq"

    def bits_by_name(self) -> dict[str, int]:
        """Matrix name -> width (16 = bf16)."""
        return {t.name: t.bits for t in self.tensors}


def save_plan(plan: Plan, path: str | os.PathLike[str]) -> Path:
    """Write ``plan`` as JSON atomically (no partial file on failure) and return the path."""
    return write_json(path, plan.to_dict())


def load_plan(path: str | os.PathLike[str], *, checkpoint_tensors: set[str] | None = None) -> Plan:
    """Read and validate a plan file.

    Args:
        path: the plan JSON.
        checkpoint_tensors: tensor names of the checkpoint the plan will be applied to; when given,
            every plan tensor must be one of them.

    Returns:
        The :class:`Plan`.

    Raises:
        PlanError: unreadable file, invalid JSON, wrong schema version, missing or invalid fields,
            widths outside 1..8 (or 16), bad group size, byte sizes that do not match the format,
            a fingerprint that does not match the tensors, or tensors missing from the checkpoint.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PlanError(
            f"cannot read plan {path}: {error.strerror or error}; check the path or run `alphaq plan`"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PlanError(
            f"{path} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}), so not a "
            f"plan.json; {_REMAKE}"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlanError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); {_REMAKE}"
        ) from None
    except RecursionError:
        raise PlanError(f"{path} nests JSON too deeply to be a plan; {_REMAKE}") from None
    return plan_from_dict(data, source=str(path), checkpoint_tensors=checkpoint_tensors)


def require_target(plan: Plan, source: str | os.PathLike[str], command: str) -> None:
    """Refuse a plan whose target another command executes (``alphaq plan --target gguf`` -> ``alphaq export``).

    Args:
        plan: a loaded plan.
        source: its file, for the message.
        command: the command that is about to execute it (``"alphaq quantize"``).

    Raises:
        PlanError: the plan targets another format; the message names the command that takes it.
    """
    if plan.target != "alphaq":
        raise PlanError(
            f"{source} was made with `alphaq plan --target {plan.target}` (llama.cpp types), which "
            f"{command} does not execute: write it with `alphaq export {source} --format gguf`, or "
            "re-plan without --target gguf"
        )


def plan_from_dict(data: Any, *, source: str = "plan", checkpoint_tensors: set[str] | None = None) -> Plan:
    """Validate a parsed plan (see :func:`load_plan`) and build the :class:`Plan`."""
    if not isinstance(data, dict):
        raise PlanError(f"{source} holds a JSON {type(data).__name__}, not a plan object; {_REMAKE}")
    version = data.get("schema_version")
    if version != PLAN_SCHEMA_VERSION:
        raise PlanError(
            f"{source} has schema_version {version!r}, this alphaq reads {PLAN_SCHEMA_VERSION}; "
            f"{_REMAKE} with this alphaq version"
        )
    missing = [k for k in _TOP_FIELDS if k not in data]
    if missing:
        raise PlanError(f"{source} lacks field(s) {', '.join(missing)}; {_REMAKE}")
    for key in ("provenance", "summary"):
        if not isinstance(data[key], dict):
            raise PlanError(f"{source}: {key} must be an object; {_REMAKE}")
    if not isinstance(data["tensors"], list) or not data["tensors"]:
        raise PlanError(f"{source}: tensors must be a non-empty list; {_REMAKE}")
    if data["plan_fingerprint"] is not None and not isinstance(data["plan_fingerprint"], str):
        raise PlanError(
            f"{source}: plan_fingerprint is {short_value(data['plan_fingerprint'])}; it is a string, or null to "
            f"accept an edit; {_REMAKE}"
        )
    check_provenance(data["provenance"], source)
    check_summary_types(data["summary"], source)
    target = str((data["provenance"].get("options") or {}).get("target") or "alphaq")
    tensors = tuple(
        PlanTensor(**check_tensor_entry(entry, i, source, target)) for i, entry in enumerate(data["tensors"])
    )
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        dupe = next(n for n in names if names.count(n) > 1)
        raise PlanError(f"{source} lists tensor {dupe!r} twice; remove the duplicate or {_REMAKE}")
    if checkpoint_tensors is not None:
        absent = [t.tensor for t in tensors if t.tensor not in checkpoint_tensors]
        if absent:
            raise PlanError(
                f"{source} names {len(absent)} tensor(s) not in the checkpoint (first: {absent[0]}); "
                "the plan was made for another checkpoint: run `alphaq plan` on this one"
            )
    stored = data["plan_fingerprint"]
    provenance, summary = dict(data["provenance"]), dict(data["summary"])
    if stored is None:
        # An edit accepted by hand: the recorded predictions belong to the widths before the edit, so drop them,
        # and recompute the sizes from the tensors.
        tensors = tuple(_replace(t, error=None) if t.unit is not None else t for t in tensors)
        summary.update(tensor_totals(tensors))
        summary["predicted_error"] = None
        provenance["edited_by_hand"] = True
    actual = tensors_fingerprint(tensors)
    if stored is not None and stored != actual:
        raise PlanError(
            f"{source}: plan_fingerprint does not match its tensors (edited by hand?); {_REMAKE}, "
            "or set plan_fingerprint to null to accept the edit"
        )
    if stored is not None:
        check_summary_totals(summary, tensor_totals(tensors), source)
        for key, value in tensor_totals(tensors).items():  # a figure left out is filled in from the tensors
            summary.setdefault(key, value)
    return Plan(
        provenance=provenance,
        summary=summary,
        tensors=tensors,
        schema_version=PLAN_SCHEMA_VERSION,
        plan_fingerprint=actual,
    )


def tensor_totals(tensors: tuple[PlanTensor, ...] | list[PlanTensor]) -> dict[str, Any]:
    """The summary figures that follow from the tensor list alone.

    Args:
        tensors: the plan's matrices.

    Returns:
        ``expert_params``, ``average_payload_bits``, ``effective_bits``, ``expert_bytes``, ``kept_bytes``,
        ``total_bytes`` and ``predicted_error`` (parameter-weighted mean of the experts' errors; None when one
        is missing).
    """
    experts = [t for t in tensors if t.unit is not None]
    params = sum(t.params for t in experts)
    expert_bytes = sum(t.bytes for t in experts)
    kept_bytes = sum(t.bytes for t in tensors if t.unit is None)
    errors = [t.error for t in experts]
    return {
        "expert_params": params,
        "average_payload_bits": sum(t.params * t.bits for t in experts) / params if params else None,
        "effective_bits": expert_bytes * 8 / params if params else None,
        "expert_bytes": expert_bytes,
        "kept_bytes": kept_bytes,
        "total_bytes": expert_bytes + kept_bytes,
        "predicted_error": (
            sum(t.params * float(e) for t, e in zip(experts, errors)) / params
            if params and all(e is not None for e in errors)
            else None
        ),
    }
