"""Field checks of a parsed ``plan.json``: provenance and summary types, each tensor entry, summary totals.

Pure functions over the parsed JSON; each raises :class:`alphaq.errors.PlanError` with a one-line fix.
:func:`alphaq.planning.plan_file.plan_from_dict` runs them and builds the :class:`~alphaq.planning.plan_file.Plan`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from alphaq.errors import PlanError
from alphaq.planning.units import KEEP_BF16, matrix_nbytes

REMAKE = "re-create it with `alphaq plan`"
_MAX_GROUP = 1 << 16  # columns per group: far above any real one (32..1024), low enough to bound the padding


#: Types of the provenance fields alphaq reads: dotted path -> (allowed types, what the message says it must be).
_PROVENANCE_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "checkpoint": ((dict, type(None)), "an object"),
    "checkpoint.path": ((str, type(None)), "a folder path string"),
    "checkpoint.fingerprint": ((str, type(None)), "a string"),
    "checkpoint.model_type": ((str, type(None)), "a string"),
    "options": ((dict, type(None)), "an object"),
    "options.target": ((str, type(None)), '"alphaq" or "gguf"'),
    "options.quant_method": ((str, type(None)), "a method name"),
    "options.error_model": ((str, type(None)), "a string"),
    "options.granularity": ((str, type(None)), "a string"),
    "options.group_size": ((int, type(None)), "an integer"),
    "budget": ((dict, type(None)), "an object"),
    "budget.given": ((str, int, float, type(None)), "the budget given"),
    "diagnostics": ((dict, type(None)), "an object"),
    "diagnostics.inspect_dir": ((str, type(None)), "a path string"),
    "solver": ((dict, type(None)), "an object"),
    "notes": ((list, type(None)), "a list"),
    "warnings": ((list, type(None)), "a list"),
    "failed_fits": ((list, type(None)), "a list"),
    "created": ((str, type(None)), "a date string"),
    "edited_by_hand": ((bool, type(None)), "true or false"),
    "options.widths": ((list, type(None)), "a list of widths"),
    "options.allocator": ((str, type(None)), "a string"),
    "options.gamma": ((int, float, type(None)), "a number"),
    "options.keep": ((str, type(None)), "a string"),
    "options.solver": ((str, type(None)), "a string"),
    "options.seed": ((int, type(None)), "an integer"),
    "budget.kind": ((str, type(None)), "a string"),
    "budget.value": ((int, float, type(None)), "a number"),
    "diagnostics.fit": ((str, type(None)), "a string"),
    "diagnostics.inspect_created": ((str, type(None)), "a string"),
    "solver.status": ((str, type(None)), "a string"),
    "solver.method": ((str, type(None)), "a string"),
    "solver.objective": ((int, float, type(None)), "a number"),
    "solver.gap": ((int, float, type(None)), "a number"),
}
#: Summary figures the reports print: numbers (or null), and mappings of numbers.
_SUMMARY_NUMBERS = (
    "alpha_objective",
    "average_payload_bits",
    "compression_ratio",
    "effective_bits",
    "expert_bytes",
    "expert_bytes_bf16",
    "expert_compression_ratio",
    "expert_params",
    "kept_bytes",
    "kept_bytes_bf16",
    "predicted_error",
    "total_bytes",
    "total_bytes_bf16",
    "units",
)
_SUMMARY_MAPS = ("average_bits_by_layer", "kept_bytes_by_role", "param_share_by_width")
#: Targets a plan can be made for (``alphaq plan --target``).
PLAN_TARGETS = ("alphaq", "gguf")


def check_provenance(provenance: Mapping[str, Any], source: str) -> None:
    """Every provenance field alphaq reads has its type (a string where a mapping belongs is refused here, not
    later as an AttributeError), and the target is one alphaq knows."""
    for path, (types, what) in _PROVENANCE_TYPES.items():
        parent, _, key = path.rpartition(".")
        holder = provenance.get(parent) if parent else provenance
        if not isinstance(holder, dict) or key not in holder:
            continue
        value = holder[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise PlanError(
                f"{source}: provenance.{path} is {short_value(value)}; it must be {what} (edited by hand?); "
                f"fix it or {REMAKE}"
            )
    widths = (provenance.get("options") or {}).get("widths") or []
    if not all(isinstance(w, int) and not isinstance(w, bool) for w in widths):
        raise PlanError(
            f"{source}: provenance.options.widths is {short_value(widths)}; it must be a list of integer "
            f"widths; fix it or {REMAKE}"
        )
    _check_gguf_types(provenance.get("gguf"), source)
    target = (provenance.get("options") or {}).get("target")
    if target is not None and target not in PLAN_TARGETS:
        raise PlanError(
            f"{source}: provenance.options.target is {short_value(target)}; plans target "
            f"{' or '.join(PLAN_TARGETS)}; fix it or {REMAKE}"
        )


def _check_gguf_types(gguf: Any, source: str) -> None:
    """A whole-model GGUF plan's ``provenance.gguf``: tensor name -> a planned ggml type, and a positive file size."""
    if gguf is None:
        return
    from alphaq.export.gguf_measure import MODEL_TYPES

    types = gguf.get("types") if isinstance(gguf, dict) else None
    size = gguf.get("file_bytes") if isinstance(gguf, dict) else None
    bad = (
        not isinstance(types, dict)
        or not types
        or not all(isinstance(k, str) and v in MODEL_TYPES for k, v in types.items())
        or isinstance(size, bool)
        or not isinstance(size, int)
        or size <= 0
    )
    if bad:
        raise PlanError(
            f"{source}: provenance.gguf must map GGUF tensor names to {', '.join(MODEL_TYPES)} and give a positive "
            f"file_bytes (edited by hand?); fix it or {REMAKE}"
        )


def check_summary_types(summary: Mapping[str, Any], source: str) -> None:
    """The summary figures the reports print are numbers (or null), or mappings of them."""

    def number(value: Any) -> bool:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))

    for key in _SUMMARY_NUMBERS:
        if key in summary and not number(summary[key]):
            raise PlanError(
                f"{source}: summary.{key} is {short_value(summary[key])}; it must be a number or null; fix it or {REMAKE}"
            )
    for key in _SUMMARY_MAPS:  # by width / layer: integer keys ("4"); by role: any name
        value = summary.get(key)
        if value is not None and not (
            isinstance(value, dict)
            and all(number(v) for v in value.values())
            and (key == "kept_bytes_by_role" or all(k.isdecimal() for k in value))
        ):
            raise PlanError(
                f"{source}: summary.{key} is {short_value(value)}; it must map "
                f"{'names' if key == 'kept_bytes_by_role' else 'integers'} to numbers; fix it or "
                f"{REMAKE}"
            )


def short_value(value: Any) -> str:
    """A JSON rendering of ``value`` for a message, cut to 40 characters."""
    text = json.dumps(value) if isinstance(value, (str, int, float, list, dict, bool, type(None))) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_TENSOR_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "tensor": (str,),
    "layer": (int, type(None)),
    "expert": (int, type(None)),
    "proj": (str, type(None)),
    "role": (str,),
    "rows": (int,),
    "cols": (int,),
    "params": (int,),
    "bits": (int,),
    "group_size": (int, type(None)),
    "bytes": (int,),
    "error": (float, int, type(None)),
    "unit": (str, type(None)),
}


def check_summary_totals(summary: Mapping[str, Any], totals: Mapping[str, Any], source: str) -> None:
    """Every summary figure that the tensors determine (``totals``, from ``tensor_totals``) must agree with them
    (integers exactly, others to 1e-6)."""
    for key, expected in totals.items():
        if key not in summary or expected is None:
            continue
        given = summary[key]
        ok = (
            isinstance(given, (int, float))
            and not isinstance(given, bool)
            and (given == expected if isinstance(expected, int) else math.isclose(given, expected, rel_tol=1e-6))
        )
        if not ok:
            raise PlanError(
                f"{source}: summary.{key} is {given!r} but its tensors give {expected!r} (edited by "
                f"hand?); {REMAKE}, or set plan_fingerprint to null to have the summary recomputed"
            )


def check_tensor_entry(entry: Any, index: int, source: str, target: str = "alphaq") -> dict[str, Any]:
    """Validate one ``tensors[index]`` entry of a parsed plan.

    Args:
        entry: the parsed JSON entry.
        index: its position in ``tensors`` (for the message when it has no name).
        source: the plan file, for the message.
        target: the plan's target (``"gguf"`` plans store ggml-type byte sizes).

    Returns:
        The :class:`~alphaq.planning.plan_file.PlanTensor` fields (``error`` a float, ``group_size`` None for bf16).

    Raises:
        PlanError: not an object, missing or mistyped fields, a bad width, group size, shape, byte size or error.
    """
    if not isinstance(entry, dict):
        raise PlanError(f"{source}: tensors[{index}] is not an object; {REMAKE}")
    label = entry.get("name", f"tensors[{index}]")
    required = [k for k in _TENSOR_TYPES if k != "unit"]  # the PlanTensor fields, in order
    missing = [k for k in required if k not in entry]
    if missing:
        raise PlanError(f"{source}: tensor {label} lacks field(s) {', '.join(missing)}; {REMAKE}")
    for key, types in _TENSOR_TYPES.items():
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, types):
            raise PlanError(f"{source}: tensor {label} has {key}={value!r} of the wrong type; {REMAKE}")
    bits, group = entry["bits"], entry["group_size"]
    if not (1 <= bits <= 8 or bits == KEEP_BF16):
        raise PlanError(
            f"{source}: tensor {label} has bits={bits}; widths must be 1..8 (or 16 to keep bf16): "
            "fix that entry or re-run `alphaq plan`"
        )
    if bits != KEEP_BF16 and (group is None or group <= 0 or group % 8 or group > _MAX_GROUP):
        raise PlanError(
            f"{source}: tensor {label} has group_size={group!r}; use a positive multiple of 8 up to "
            f"{_MAX_GROUP} (32, 64, 128) or re-run `alphaq plan`"
        )
    if entry["rows"] <= 0 or entry["cols"] <= 0 or entry["params"] != entry["rows"] * entry["cols"]:
        raise PlanError(
            f"{source}: tensor {label} has shape {entry['rows']}x{entry['cols']} and params "
            f"{entry['params']}, which disagree; {REMAKE}"
        )
    if target == "gguf" and bits != KEEP_BF16:  # `alphaq plan --target gguf`: ggml types' bytes
        from alphaq.export.ggml_types import gguf_matrix_nbytes

        expected = gguf_matrix_nbytes(entry["rows"], entry["cols"], bits)
    else:
        expected = matrix_nbytes(entry["rows"], entry["cols"], bits, group if group is not None else 8)
    if entry["bytes"] != expected:
        raise PlanError(
            f"{source}: tensor {label} has bytes={entry['bytes']} but {bits}-bit storage takes {expected}; {REMAKE}"
        )
    error = entry["error"]
    if error is not None and not (math.isfinite(error) and error >= 0):
        raise PlanError(f"{source}: tensor {label} has error={error!r}; it must be >= 0 or null; {REMAKE}")
    values = {k: entry.get(k) for k in _TENSOR_TYPES}
    values["error"] = None if error is None else float(error)
    if bits == KEEP_BF16:
        values["group_size"] = None
    return values
