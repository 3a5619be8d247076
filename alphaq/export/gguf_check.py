"""Pure checks around llama.cpp: a read-back GGUF against a plan's export, and parsing the tools' output.

:func:`verify_gguf` takes what :mod:`alphaq.export.llamacpp` planned (one :class:`GgufTensor` per GGUF tensor,
its expected stored type and bytes) and what ``gguf.GGUFReader`` found (name -> type, bytes) and says, tensor
by tensor, whether the file holds the planned types, and whether its expert bytes are the predicted ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from alphaq.export.llamacpp import LlamaCppExport

_PPL = re.compile(r"Final estimate: PPL = ([0-9.]+(?:[eE][+-]?\d+)?|nan|inf) \+/- ([0-9.]+(?:[eE][+-]?\d+)?|nan|inf)")
_CHUNKS = re.compile(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+)")
_COMMIT = re.compile(r"update llama\.cpp to ggml-org/llama\.cpp@([0-9a-f]{7,40})")


@dataclass(frozen=True)
class TensorCheck:
    """One planned GGUF tensor as found in the file.

    Attributes:
        name: GGUF weight name (``blk.0.ffn_down_exps.weight``).
        role: plan role of its matrices.
        planned: the type the plan asked for (``Q3_K``).
        expected: the type llama-quantize should store (``planned`` unless a shape fallback applies).
        stored: the type in the file (None: the tensor is missing).
        expected_bytes: predicted bytes at ``expected``.
        stored_bytes: bytes in the file (0 when missing).
    """

    name: str
    role: str
    planned: str
    expected: str
    stored: str | None
    expected_bytes: int
    stored_bytes: int

    @property
    def ok(self) -> bool:
        """Present, of the expected type and size."""
        return self.stored == self.expected and self.stored_bytes == self.expected_bytes


@dataclass(frozen=True)
class GgufVerification:
    """A GGUF file compared with the plan it was made from.

    Attributes:
        tensors: every planned tensor the file must hold (``via`` ``base`` or ``source`` tensors, whose type
            llama.cpp decides, are listed in ``other`` instead).
        other: the file's remaining tensors, name -> type (norms, routers, unplanned ones).
        file_bytes: size of the file.
        tensor_bytes: bytes of all its tensors (the rest is metadata, vocabulary and alignment).
        expert_bytes: bytes of its routed-expert tensors.
        predicted_expert_bytes: what the export predicted for them.
        plan_expert_bytes: the plan's own expert bytes (equal to the prediction for a ``--target gguf`` plan).
        predicted_file_bytes: the file size a whole-model plan predicted (None: not predicted).
    """

    tensors: tuple[TensorCheck, ...]
    other: dict[str, str]
    file_bytes: int
    tensor_bytes: int
    expert_bytes: int
    predicted_expert_bytes: int
    plan_expert_bytes: int
    predicted_file_bytes: int | None = None

    @property
    def ok(self) -> bool:
        """Every planned tensor has its type and bytes, the expert bytes (and the file's, when a whole-model plan
        predicted it) are the predicted ones."""
        return (
            all(t.ok for t in self.tensors)
            and self.expert_bytes == self.predicted_expert_bytes
            and self.predicted_file_bytes in (None, self.file_bytes)
        )

    def problems(self) -> list[str]:
        """One line per mismatch (empty when :attr:`ok`)."""
        lines = [
            f"{t.name}: expected {t.expected} ({t.expected_bytes:,} bytes), file has "
            f"{t.stored or 'no such tensor'}" + (f" ({t.stored_bytes:,} bytes)" if t.stored else "")
            for t in self.tensors
            if not t.ok
        ]
        if self.expert_bytes != self.predicted_expert_bytes:
            lines.append(f"expert tensors take {self.expert_bytes:,} bytes, predicted {self.predicted_expert_bytes:,}")
        if self.predicted_file_bytes not in (None, self.file_bytes):
            lines.append(f"the file takes {self.file_bytes:,} bytes, the plan predicted {self.predicted_file_bytes:,}")
        return lines

    @property
    def fallbacks(self) -> list[TensorCheck]:
        """Tensors stored as another type than planned because of their row length (llama.cpp's fallback)."""
        return [t for t in self.tensors if t.expected != t.planned]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``gguf_export.json``)."""
        return {
            "ok": self.ok,
            "problems": self.problems(),
            "file_bytes": self.file_bytes,
            "tensor_bytes": self.tensor_bytes,
            "metadata_bytes": self.file_bytes - self.tensor_bytes,
            "expert_bytes": self.expert_bytes,
            "predicted_expert_bytes": self.predicted_expert_bytes,
            "plan_expert_bytes": self.plan_expert_bytes,
            "predicted_file_bytes": self.predicted_file_bytes,
            "fallbacks": [t.name for t in self.fallbacks],
            "tensors": [{**asdict(t), "ok": t.ok} for t in self.tensors],
            "other": dict(sorted(self.other.items())),
        }


def verify_gguf(
    export: LlamaCppExport,
    found: Mapping[str, tuple[str, int]],
    file_bytes: int,
    plan_expert_bytes: int,
    predicted_file_bytes: int | None = None,
) -> GgufVerification:
    """Compare a read-back GGUF with the export it was quantized from.

    Args:
        export: :func:`alphaq.export.llamacpp.export_llamacpp` of the plan.
        found: GGUF weight name -> (type name, bytes), as ``gguf.GGUFReader`` reads it.
        file_bytes: the file's size.
        plan_expert_bytes: the plan's expert bytes (``plan.summary["expert_bytes"]``).
        predicted_file_bytes: the file size a whole-model plan predicted (checked when given).

    Returns:
        The :class:`GgufVerification`.
    """
    checks: list[TensorCheck] = []
    for t in export.tensors:
        if t.via in ("base", "source"):  # llama.cpp's mixture, or never quantized: not planned types
            continue
        name = f"{t.name}.weight"
        stored, nbytes = found.get(name, (None, 0))
        checks.append(
            TensorCheck(
                name=name,
                role=t.role,
                planned=t.ggml_type,
                expected=t.stored_type,
                stored=stored,
                expected_bytes=t.gguf_bytes,
                stored_bytes=nbytes,
            )
        )
    planned = {c.name for c in checks}
    experts = {f"{t.name}.weight" for t in export.tensors if t.role == "expert"}
    return GgufVerification(
        tensors=tuple(checks),
        other={n: ty for n, (ty, _) in found.items() if n not in planned},
        file_bytes=int(file_bytes),
        tensor_bytes=int(sum(b for _, b in found.values())),
        expert_bytes=int(sum(b for n, (_, b) in found.items() if n in experts)),
        predicted_expert_bytes=int(export.cost.expert_gguf_bytes),
        plan_expert_bytes=int(plan_expert_bytes),
        predicted_file_bytes=None if predicted_file_bytes is None else int(predicted_file_bytes),
    )


def format_verification(v: GgufVerification) -> list[str]:
    """The comparison as text lines: types found per expert tensor, bytes planned vs in the file."""
    lines = [f"{'GGUF tensor':<34}{'planned':>8}{'stored':>8}{'bytes':>14}  check"]
    for t in v.tensors:
        if t.role == "expert":
            lines.append(
                f"{t.name:<34}{t.planned:>8}{t.stored or '-':>8}{t.stored_bytes:>14,}  {'ok' if t.ok else 'MISMATCH'}"
            )
    others = [t for t in v.tensors if t.role != "expert"]
    if others:
        bad = sum(1 for t in others if not t.ok)
        kinds = sorted({t.stored or "-" for t in others})
        lines.append(
            f"{len(others)} other planned tensor(s) ({', '.join(kinds)}): {'all ok' if not bad else f'{bad} MISMATCH'}"
        )
    lines += [
        f"expert bytes: file {v.expert_bytes:,}, predicted {v.predicted_expert_bytes:,}, plan {v.plan_expert_bytes:,}",
        f"file: {v.file_bytes:,} bytes = {v.tensor_bytes:,} tensor bytes + {v.file_bytes - v.tensor_bytes:,} "
        "metadata/vocabulary/alignment",
    ]
    if v.fallbacks:
        lines.append(
            f"{len(v.fallbacks)} tensor(s) stored as llama.cpp's shape fallback (row length not a multiple "
            f"of the block): first {v.fallbacks[0].name} {v.fallbacks[0].planned} -> {v.fallbacks[0].expected}"
        )
    return lines


@dataclass(frozen=True)
class Perplexity:
    """``llama-perplexity``'s result: ``ppl`` +/- ``stderr`` over ``chunks`` windows of ``n_ctx`` tokens (each
    scored on its second half, llama.cpp's protocol)."""

    ppl: float
    stderr: float
    chunks: int | None
    n_ctx: int | None


def parse_perplexity(output: str) -> Perplexity:
    """Read ``Final estimate: PPL = 12.3456 +/- 0.12345`` (and the chunk count) from llama-perplexity's output.

    Raises:
        ValueError: no final estimate in the output.
    """
    match = _PPL.search(output)
    if match is None:
        raise ValueError("llama-perplexity printed no 'Final estimate: PPL = ...' line")
    chunks = _CHUNKS.search(output)
    return Perplexity(
        ppl=float(match.group(1)),
        stderr=float(match.group(2)),
        chunks=int(chunks.group(1)) if chunks else None,
        n_ctx=int(chunks.group(2)) if chunks else None,
    )


def last_error_line(output: str) -> str:
    """The most telling line of a failed tool's output: the last one naming an error, else the last line."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        low = line.lower()
        if "error" in low or "failed" in low or "not supported" in low or "exception" in low:
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


def vendored_commit(changelog: str, version: str) -> str | None:
    """The llama.cpp commit a llama-cpp-python release vendors, from its CHANGELOG (``## [0.3.36]`` section)."""
    section = re.search(rf"^## \[{re.escape(version)}\](.*?)(?=^## \[|\Z)", changelog, flags=re.S | re.M)
    match = _COMMIT.search(section.group(1)) if section else None
    return match.group(1) if match else None
