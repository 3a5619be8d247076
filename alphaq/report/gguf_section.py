"""The plan page's "GGUF export" section, read from the ``gguf_export.json`` that ``alphaq export --format gguf``
saved beside the plan: the types llama.cpp stored for every expert tensor against the plan, and the file's bytes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alphaq.report.page import Section, empty_note, fmt_bytes, stat_cards, table_html
from alphaq.runfolder import GGUF_EXPORT_JSON, one_line


def read_gguf_export(folder: Path, warnings: list[str]) -> Mapping[str, Any] | None:
    """``folder/gguf_export.json``, None when absent; an unreadable file becomes a warning line."""
    path = folder / GGUF_EXPORT_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warnings.append(f"{path.name} is unreadable ({one_line(err)}): the GGUF export section is omitted")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("verification"), dict):
        warnings.append(f"{path.name} has no verification object: the GGUF export section is omitted")
        return None
    return data


def gguf_section(record: Mapping[str, Any] | None, plan_fingerprint: str) -> Section | None:
    """The section, or None when the folder holds no GGUF export.

    Args:
        record: ``gguf_export.json`` (:func:`read_gguf_export`).
        plan_fingerprint: the page's plan (a record of another plan is flagged, not hidden).

    Returns:
        The :class:`Section` or None.
    """
    if record is None:
        return None
    check = record["verification"]
    tensors = [t for t in check.get("tensors") or [] if t.get("role") == "expert"]
    params = (record.get("cost") or {}).get("expert_params")
    bpw = record.get("expert_bits_per_weight")
    cards = stat_cards(
        [
            (
                "Types as planned",
                "yes" if check.get("ok") else "NO",
                f"{len(tensors)} expert tensors read back with gguf",
            ),
            (
                "GGUF file",
                fmt_bytes(check.get("file_bytes")),
                f"{fmt_bytes(check.get('metadata_bytes'))} metadata and vocabulary",
            ),
            (
                "Expert bytes in the file",
                fmt_bytes(check.get("expert_bytes")),
                f"predicted {fmt_bytes(check.get('predicted_expert_bytes'))}; plan {fmt_bytes(check.get('plan_expert_bytes'))}",
            ),
            (
                "Expert bits per weight",
                f"{bpw:.4f}" if isinstance(bpw, (int, float)) else "\u2014",
                f"{params:,} expert weights" if isinstance(params, int) else "",
            ),
        ]
    )
    import pandas as pd

    rows = pd.DataFrame(
        [
            {
                "tensor": t.get("name"),
                "planned": t.get("planned"),
                "stored": t.get("stored"),
                "bytes": t.get("stored_bytes"),
                "check": "ok" if t.get("ok") else "MISMATCH",
            }
            for t in tensors
        ]
    )
    parts = [cards]
    if (record.get("plan") or {}).get("fingerprint") != plan_fingerprint:
        parts.append(empty_note("This gguf_export.json was written for another plan than the one on this page."))
    if check.get("fallbacks"):
        parts.append(
            empty_note(
                f"{len(check['fallbacks'])} tensor(s) stored as llama.cpp's shape fallback "
                "(row length not a multiple of 256)."
            )
        )
    parts.append(
        table_html(
            rows,
            caption="Every ffn_*_exps tensor of the GGUF: the type the plan asked for and the "
            "type gguf.GGUFReader found",
        )
        if len(rows)
        else empty_note("no expert tensor")
    )
    tools = record.get("llama_cpp") or {}
    note = (
        f"{Path(str(record.get('gguf', '?'))).name}: written by llama.cpp's convert_hf_to_gguf.py and llama-quantize "
        f"(llama-cpp-python {tools.get('llama_cpp_python', '?')}, llama.cpp {tools.get('llama_cpp_commit', '?')}), "
        "read back and checked against the plan."
    )
    return Section("GGUF export (llama.cpp)", "".join(parts), note)


def whole_model_section(provenance: Mapping[str, Any], summary: Mapping[str, Any]) -> Section | None:
    """A whole-model GGUF plan (``alphaq plan --target gguf``): the file's size against the budget and every GGUF
    tensor's type, from ``provenance.gguf``; None for other plans."""
    gguf = provenance.get("gguf")
    if not isinstance(gguf, Mapping) or not isinstance(gguf.get("types"), Mapping):
        return None
    import pandas as pd

    options = provenance.get("options") if isinstance(provenance.get("options"), Mapping) else {}
    budget = provenance.get("budget") if isinstance(provenance.get("budget"), Mapping) else {}
    kld = summary.get("predicted_kld")
    cards = stat_cards(
        [
            ("GGUF file", fmt_bytes(gguf.get("file_bytes")), "predicted to the byte from llama-quantize's own output"),
            ("Budget", fmt_bytes(gguf.get("capacity")), f"--budget {budget.get('given', '?')}"),
            (
                "Bits per weight",
                f"{summary['gguf_bits_per_weight']:.3f}"
                if isinstance(summary.get("gguf_bits_per_weight"), float)
                else "?",
                "8 x file bytes / every tensor's parameters",
            ),
            (
                "Predicted KL divergence",
                f"{kld:.5f}" if isinstance(kld, (int, float)) else "\u2014",
                f"importance: {options.get('importance', '?')} (nats per token, second order)",
            ),
        ]
    )
    rows = pd.DataFrame([{"GGUF tensor": name, "type": ggml} for name, ggml in gguf["types"].items()])
    body = cards + table_html(
        rows, caption="The type of every tensor llama-quantize quantizes (norms and routers stay F32)"
    )
    note = (
        "Errors of every tensor at Q2_K..Q8_0 measured with llama-quantize --pure on the F16 GGUF; the exact knapsack "
        "chose the types that minimise the importance-weighted error with the whole file within the budget."
    )
    return Section("Whole-model GGUF plan", body, note)


__all__ = ["gguf_section", "read_gguf_export", "whole_model_section"]
