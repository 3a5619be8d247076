"""A plan as per-tensor type overrides for llama.cpp's ``llama-quantize`` (``alphaq export --format llama.cpp``).

GGUF stores all routed experts of one layer and projection in one tensor (``blk.N.ffn_down_exps``) with one
ggml type, so each such tensor takes the widest width planned among its experts (a layer-granularity plan
maps exactly) and that width becomes the nearest k-quant at or above it (:data:`WIDTH_TO_GGML`). Every other
matrix of the plan gets its GGUF name and a type of its own; widths of 16 (kept in bf16) become
``keep_type``. Pure: a :class:`~alphaq.planning.plan_file.Plan` in, an :class:`LlamaCppExport` out (the lines of a
``--tensor-type-file``, the extra ``llama-quantize`` flags and a byte report); writing is the CLI's job.
See ``docs/export.md`` for the mapping and its sources.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from alphaq.errors import ConfigError
from alphaq.export.ggml_types import GGML_TYPES, SHAPE_FALLBACK, WIDTH_TO_GGML, GgmlType, ggml_nbytes  # noqa: F401 - re-exported
from alphaq.export.gguf_names import OUTPUT, ROUTER, TOKEN_EMBD, gguf_names, mla_head_dims, split_rows  # noqa: F401 - re-exported
from alphaq.planning.plan_file import Plan, PlanTensor
from alphaq.planning.units import KEEP_BF16, matrix_nbytes

#: ``llama-quantize`` base types accepted here -> the ggml type it gives tensors without an override.
BASE_TYPES: dict[str, str] = {
    "Q8_0": "Q8_0",
    "Q6_K": "Q6_K",
    "Q5_K_M": "Q5_K",
    "Q5_K_S": "Q5_K",
    "Q4_K_M": "Q4_K",
    "Q4_K_S": "Q4_K",
    "Q3_K_L": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_S": "Q3_K",
    "Q2_K": "Q2_K",
    "Q5_1": "Q5_1",
    "Q5_0": "Q5_0",
    "Q4_1": "Q4_1",
    "Q4_0": "Q4_0",
}
#: GGUF weights llama-quantize never quantizes, override line or not (``tensor_allows_quantization`` in
#: llama-quant.cpp): Qwen4-Exp's QSA indexer projections keep the type convert_hf_to_gguf.py wrote (BF16 from a
#: bf16 checkpoint).
NEVER_QUANTIZED = re.compile(r"(?:^|\.)indexer\.(?:k_proj|q_proj)$")
#: Types for the widths the plan keeps in bf16 (16); ``base`` writes no override (the base type's mixture).
KEEP_TYPES: tuple[str, ...] = ("bf16", "f16", "q8_0", "base")


@dataclass(frozen=True)
class ExportOptions:
    """How to map a plan to llama-quantize arguments.

    Args:
        base_type: llama-quantize's positional type (a key of :data:`BASE_TYPES`); it must be a quantized type
            because llama-quantize applies ``--tensor-type`` only then.
        keep_type: type of the matrices the plan keeps at 16 bits (:data:`KEEP_TYPES`).
        fused_gate_up: the GGUF was converted with ``--fuse-gate-up-exps`` (one ``ffn_gate_up_exps`` tensor).
        mla_head_dims: ``(qk_nope_head_dim, v_head_dim)`` of an MLA checkpoint's config (:func:`mla_head_dims`):
            how ``kv_b_proj`` splits into ``attn_k_b`` and ``attn_v_b`` (None: halves, DeepSeek's 128 + 128).
        router_type: type ``convert_hf_to_gguf.py`` wrote the routers (``ffn_gate_inp``) in, which llama-quantize
            keeps: F32, but DBRX's converter writes them at its outtype (BF16).
        split_rows: the second part's rows of the matrices the converter splits in two, by proj
            (:func:`split_rows`): Qwen3-Next's ``in_proj_qkvz`` (z rows), Qwen4-Exp's ``index_qk_proj`` (key rows).
    """

    base_type: str = "Q8_0"
    keep_type: str = "bf16"
    fused_gate_up: bool = False
    mla_head_dims: tuple[int, int] | None = None
    router_type: str = "F32"
    split_rows: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        base = str(self.base_type).upper()
        if base not in BASE_TYPES:
            raise ConfigError(
                f"base type {self.base_type!r} is not supported; use a quantized llama-quantize type: "
                f"{', '.join(BASE_TYPES)}"
            )
        keep = str(self.keep_type).lower()
        if keep not in KEEP_TYPES:
            raise ConfigError(f"keep type {self.keep_type!r} is unknown; use one of {', '.join(KEEP_TYPES)}")
        object.__setattr__(self, "base_type", base)
        object.__setattr__(self, "keep_type", keep)
        dims = self.mla_head_dims
        if dims is not None and (
            len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims)
        ):
            raise ConfigError(f"mla_head_dims={dims!r} must be two positive integers (qk_nope_head_dim, v_head_dim)")


@dataclass(frozen=True)
class GgufTensor:
    """One GGUF tensor and the type it gets.

    Attributes:
        name: GGUF name without ``.weight`` (``blk.3.ffn_down_exps``).
        role: the plan role of its matrices.
        layer: decoder layer (GGUF ``blk`` index) or None.
        ggml_type: type asked for (``Q4_K``), or the type it keeps when ``via`` is ``base``/``unquantized``/``source``.
        stored_type: type llama-quantize will actually store (differs after a shape fallback).
        via: ``tensor-type`` (a line of the overrides file), ``token-embedding-type`` / ``output-tensor-type``
            (a flag), ``base`` (no override: the base type's mixture decides), ``unquantized`` (llama.cpp
            never quantizes it: the router, F32 from convert_hf_to_gguf.py) or ``source`` (llama-quantize never
            quantizes it, :data:`NEVER_QUANTIZED`: it keeps the converter's type, BF16 from a bf16 checkpoint).
        patterns: regexes written for it (``^blk\\.3\\.ffn_down_exps\\.weight$``).
        bits: width it is stored at in our format (widest planned width; 16 = kept).
        planned_bits: distinct widths the plan gives its matrices.
        matrices: plan matrices it holds.
        params: their parameters.
        cols: row length (GGUF ``ne[0]``, input features).
        plan_bytes: their bytes as planned (our format).
        rounded_bytes: their bytes in our format at ``bits``.
        gguf_bytes: estimated GGUF bytes at ``stored_type``.
    """

    name: str
    role: str
    layer: int | None
    ggml_type: str
    stored_type: str
    via: str
    patterns: tuple[str, ...]
    bits: int
    planned_bits: tuple[int, ...]
    matrices: int
    params: int
    cols: int
    plan_bytes: int
    rounded_bytes: int
    gguf_bytes: int


@dataclass(frozen=True)
class ExportCost:
    """Bytes of the routed experts (the budgeted part) and of everything else, three ways.

    Attributes:
        expert_params: routed-expert parameters mapped to GGUF tensors.
        expert_plan_bytes: their bytes as planned, our format.
        expert_rounded_bytes: their bytes with every GGUF tensor at its widest planned width, our format.
        expert_gguf_bytes: estimated GGUF bytes with the chosen ggml types.
        kept_params / kept_plan_bytes / kept_gguf_bytes: the same for the other mapped matrices.
    """

    expert_params: int
    expert_plan_bytes: int
    expert_rounded_bytes: int
    expert_gguf_bytes: int
    kept_params: int
    kept_plan_bytes: int
    kept_gguf_bytes: int

    @property
    def rounding_bytes(self) -> int:
        """What rounding up to one width per GGUF tensor costs in our format (0 for a layer plan)."""
        return self.expert_rounded_bytes - self.expert_plan_bytes


@dataclass(frozen=True)
class LlamaCppExport:
    """A plan as llama-quantize arguments.

    Attributes:
        tensors: every GGUF tensor the plan names, by layer then name.
        options: the :class:`ExportOptions` used.
        cost: the byte report.
        notes: what was skipped, never quantized or falls back, one line each.
        granularity: the plan's granularity (``expert``, ``matrix``, ``layer``) when recorded.
    """

    tensors: tuple[GgufTensor, ...]
    options: ExportOptions
    cost: ExportCost
    notes: tuple[str, ...] = field(default=())
    granularity: str | None = None

    def tensor_type_lines(self) -> list[str]:
        """``PATTERN=type`` lines, one per override: the ``--tensor-type-file`` format (each one a ``--tensor-type``
        argument)."""
        return [f"{p}={t.ggml_type.lower()}" for t in self.tensors if t.via == "tensor-type" for p in t.patterns]

    def tensor_type_file_text(self) -> str:
        """The overrides file: the lines joined with newlines (llama-quantize reads whitespace-separated tokens)."""
        lines = self.tensor_type_lines()
        return "\n".join(lines) + "\n" if lines else ""

    def flags(self) -> list[str]:
        """``--token-embedding-type`` / ``--output-tensor-type`` arguments (exact-name options of llama-quantize)."""
        args: list[str] = []
        for via in ("token-embedding-type", "output-tensor-type"):
            args += [a for t in self.tensors if t.via == via for a in (f"--{via}", t.ggml_type.lower())]
        return args

    def command(
        self, overrides_file: str, gguf_in: str = "MODEL-BF16.gguf", gguf_out: str = "MODEL-alphaq.gguf"
    ) -> str:
        """A ready-to-run llama-quantize command line (shell-quoted)."""
        args = [
            "llama-quantize",
            "--tensor-type-file",
            overrides_file,
            *self.flags(),
            gguf_in,
            gguf_out,
            self.options.base_type,
        ]
        return " ".join(shlex.quote(a) for a in args)


def export_llamacpp(plan: Plan, options: ExportOptions | None = None) -> LlamaCppExport:
    """Map a plan to llama-quantize overrides and estimate what the GGUF will weigh.

    Args:
        plan: a validated plan (:func:`alphaq.planning.plan_file.load_plan`).
        options: base type, type of kept matrices, fused gate/up (defaults: Q8_0, bf16, unfused).

    Returns:
        The :class:`LlamaCppExport`: GGUF tensors with their types, the overrides, the cost report and notes.
    """
    options = options or ExportOptions()
    groups: dict[str, list[PlanTensor]] = defaultdict(list)
    rows_of: dict[tuple[str, str], int] = {}
    patterns: dict[str, tuple[str, ...]] = {}
    skipped: list[PlanTensor] = []
    for t in plan.tensors:
        mapped = gguf_names(
            t, fused_gate_up=options.fused_gate_up, mla_head_dims=options.mla_head_dims, split_rows=options.split_rows
        )
        if mapped is None:
            skipped.append(t)
            continue
        for names, rows in mapped:
            groups[names[0]].append(t)
            rows_of[(names[0], t.name)] = rows
            patterns[names[0]] = tuple(_pattern(n) for n in names)
    tensors = [_gguf_tensor(name, members, rows_of, patterns[name], options) for name, members in groups.items()]
    tensors.sort(key=lambda g: (-1 if g.layer is None else g.layer, g.name))
    plan_options = plan.provenance.get("options")
    granularity = plan_options.get("granularity") if isinstance(plan_options, dict) else None
    return LlamaCppExport(
        tensors=tuple(tensors),
        options=options,
        cost=_cost(tensors),
        notes=tuple(_notes(tensors, skipped, options)),
        granularity=granularity,
    )


def width_to_ggml(bits: int, keep_type: str = "bf16") -> str:
    """The ggml type of a planned width: :data:`WIDTH_TO_GGML`, or ``keep_type`` upper-cased for 16."""
    if bits == KEEP_BF16:
        return keep_type.upper()
    if bits not in WIDTH_TO_GGML:
        raise ConfigError(f"width {bits} has no ggml type; widths are 1..8 or 16")
    return WIDTH_TO_GGML[bits]


def _pattern(name: str) -> str:
    """Anchored regex of one GGUF weight: llama-quantize matches with std::regex_search, so anchor it."""
    return "^" + re.escape(name + ".weight") + "$"


def _gguf_tensor(
    name: str,
    members: list[PlanTensor],
    rows_of: dict[tuple[str, str], int],
    patterns: tuple[str, ...],
    options: ExportOptions,
) -> GgufTensor:
    first = members[0]
    bits = max(t.bits for t in members)
    if ROUTER in name and first.role == "router":  # ffn_gate_inp, ffn_gate_inp_shexp: F32, never quantized
        via, ggml = "unquantized", options.router_type
    elif NEVER_QUANTIZED.search(name):
        via, ggml = "source", "BF16"
    elif bits == KEEP_BF16 and options.keep_type == "base":
        via, ggml = "base", _base_choice(name, options.base_type)
    else:
        via = {TOKEN_EMBD: "token-embedding-type", OUTPUT: "output-tensor-type"}.get(name, "tensor-type")
        ggml = width_to_ggml(bits, options.keep_type)
    plan_bytes = rounded = gguf = params = 0
    stored = ggml
    for t in members:
        rows = rows_of[(name, t.name)]
        share = rows / t.rows
        plan_bytes += round(t.bytes * share)
        # a matrix already at the tensor's width costs what the plan says (alphaq or ggml bytes, per its target)
        rounded += round(t.bytes * share) if t.bits == bits else matrix_nbytes(rows, t.cols, bits, t.group_size or 128)
        nbytes, stored = ggml_nbytes(ggml, rows, t.cols)
        gguf += nbytes
        params += rows * t.cols
    return GgufTensor(
        name=name,
        role=first.role,
        layer=first.layer,
        ggml_type=ggml,
        stored_type=stored,
        via=via,
        patterns=patterns,
        bits=bits,
        planned_bits=tuple(sorted({t.bits for t in members})),
        matrices=len(members),
        params=params,
        cols=first.cols,
        plan_bytes=plan_bytes,
        rounded_bytes=rounded,
        gguf_bytes=gguf,
    )


def _base_choice(name: str, base_type: str) -> str:
    """Type llama-quantize's mixture gives an un-overridden tensor (output.weight: Q6_K unless the base is Q8_0)."""
    main = BASE_TYPES[base_type]
    return ("Q8_0" if main == "Q8_0" else "Q6_K") if name == OUTPUT else main


def _cost(tensors: list[GgufTensor]) -> ExportCost:
    experts = [t for t in tensors if t.role == "expert"]
    kept = [t for t in tensors if t.role != "expert"]
    return ExportCost(
        expert_params=sum(t.params for t in experts),
        expert_plan_bytes=sum(t.plan_bytes for t in experts),
        expert_rounded_bytes=sum(t.rounded_bytes for t in experts),
        expert_gguf_bytes=sum(t.gguf_bytes for t in experts),
        kept_params=sum(t.params for t in kept),
        kept_plan_bytes=sum(t.plan_bytes for t in kept),
        kept_gguf_bytes=sum(t.gguf_bytes for t in kept),
    )


def _notes(tensors: list[GgufTensor], skipped: list[PlanTensor], options: ExportOptions) -> list[str]:
    notes: list[str] = []
    if skipped:
        first = skipped[0]
        notes.append(
            f"skipped {len(skipped)} matrix(es) with no known GGUF name (first: {first.name}, role "
            f"{first.role}, proj {first.proj}); llama-quantize gives them its {options.base_type} mixture"
        )
    rounded = [t for t in tensors if t.role == "expert" and len(t.planned_bits) > 1]
    if rounded:
        notes.append(
            f"{len(rounded)} expert tensor(s) mix widths across experts and were rounded up to the widest "
            f"(first: {rounded[0].name} {'/'.join(map(str, rounded[0].planned_bits))} -> {rounded[0].bits})"
        )
    routers = [t for t in tensors if t.via == "unquantized"]
    if routers:
        notes.append(
            f"{len(routers)} router tensor(s) (ffn_gate_inp) are never quantized by llama.cpp; they stay "
            f"{options.router_type} as convert_hf_to_gguf.py writes them"
        )
    source = [t for t in tensors if t.via == "source"]
    if source:
        notes.append(
            f"{len(source)} tensor(s) are never quantized by llama-quantize (first: {source[0].name}); they keep "
            "the type convert_hf_to_gguf.py writes (BF16 from a bf16 checkpoint)"
        )
    fallbacks = [t for t in tensors if t.stored_type != t.ggml_type]
    if fallbacks:
        f = fallbacks[0]
        notes.append(
            f"{len(fallbacks)} tensor(s) have a row length that is not a multiple of their type's block; "
            f"llama-quantize falls back (first: {f.name}, {f.cols} columns, {f.ggml_type} -> {f.stored_type})"
        )
    stuck = [t for t in fallbacks if t.ggml_type == "Q8_0"]
    if stuck:
        notes.append(
            f"{stuck[0].name} has {stuck[0].cols} columns, not a multiple of 32: llama-quantize has no "
            "fallback for Q8_0 and stops; plan it at 16 bits and pass --keep-type bf16"
        )
    return notes


def format_report(export: LlamaCppExport) -> list[str]:
    """The cost report as text lines: expert bytes as planned, rounded up per GGUF tensor, and as GGUF."""
    c = export.cost
    n_expert = sum(1 for t in export.tensors if t.role == "expert")

    def row(label: str, nbytes: int, params: int) -> str:
        bpw = 8 * nbytes / params if params else float("nan")
        return f"  {label:<34}{nbytes:>16,} bytes  {bpw:6.3f} bits/weight"

    pct = 100 * c.rounding_bytes / c.expert_plan_bytes if c.expert_plan_bytes else 0.0
    lines = [
        f"routed experts: {c.expert_params:,} params in {n_expert} GGUF tensors"
        + (f" (plan granularity: {export.granularity})" if export.granularity else ""),
        row("as planned (alphaq format)", c.expert_plan_bytes, c.expert_params),
        row("rounded up per layer (alphaq)", c.expert_rounded_bytes, c.expert_params),
        f"  {'rounding costs':<34}{c.rounding_bytes:>+16,} bytes  ({pct:+.1f}%)",
        row("GGUF estimate (ggml types)", c.expert_gguf_bytes, c.expert_params),
    ]
    if c.kept_params:
        lines += [
            f"other tensors: {c.kept_params:,} params",
            row("as planned (alphaq format)", c.kept_plan_bytes, c.kept_params),
            row("GGUF estimate (ggml types)", c.kept_gguf_bytes, c.kept_params),
        ]
    counts: dict[str, int] = defaultdict(int)
    for t in export.tensors:
        if t.role == "expert":
            counts[t.ggml_type] += 1
    if counts:
        lines.append("expert types: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    return lines
