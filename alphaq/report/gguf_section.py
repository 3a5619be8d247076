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


__all__ = ["gguf_section", "read_gguf_export"]
