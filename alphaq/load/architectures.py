"""Architectures as data: a table of tensor-name patterns keyed by ``config.json``'s ``model_type``.

Each pattern maps a tensor name to (role, layer, expert, projection). Adding an architecture is adding
a row, not a class. Patterns are anchored with ``$`` so that a router (``mlp.gate.weight``) is never
mistaken for ``mlp.experts.0.gate_proj.weight``. A user can pass a JSON pattern file for anything else
(see :func:`load_pattern_file`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from alphaq.errors import CheckpointError, ConfigError


class Role(str, Enum):
    """What a weight matrix does in the network."""

    EXPERT = "expert"
    SHARED_EXPERT = "shared_expert"
    ROUTER = "router"
    ATTENTION = "attention"
    DENSE_MLP = "dense_mlp"
    EMBEDDING = "embedding"
    LM_HEAD = "lm_head"
    OTHER = "other"


#: Canonical projection names: every alias a checkpoint uses maps to one of gate/up/down/q/k/v/o/...
PROJ_ALIASES: dict[str, str] = {
    "w1": "gate",
    "w3": "up",
    "w2": "down",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
    "fc1": "up",
    "fc2": "down",
    "c_fc": "up",
    "c_proj": "down",
    "dense_h_to_4h": "up",
    "dense_4h_to_h": "down",
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "wq": "q",
    "wk": "k",
    "wv": "v",
    "wo": "o",
    "gate_up_proj": "gate_up",
    "input_linear": "gate_up",
    "output_linear": "down",
}

FusedSplit = Literal["halves", "interleaved", "none"]
FusedOrientation = Literal["out_in", "in_out", "auto"]


@dataclass(frozen=True)
class TensorRule:
    """One row of the pattern table.

    Attributes:
        pattern: regex (``re.search``) with optional named groups ``layer``, ``expert``, ``proj``.
        role: role of the matched matrices.
        proj: fixed projection name; when ``None`` the ``proj`` group (through ``PROJ_ALIASES``) names it.
        fused: True for a 3-D tensor holding every expert of a layer, [E, out, in] or [E, in, out].
        split: how a fused gate+up tensor stacks gate and up along its output dimension.
        orientation: ``out_in`` ([E, out, in], transformers v5), ``in_out`` ([E, in, out], GPT-OSS), or
            ``auto`` (decided from ``hidden_size``).
    """

    pattern: str
    role: Role
    proj: str | None = None
    fused: bool = False
    split: FusedSplit = "none"
    orientation: FusedOrientation = "auto"

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"invalid tensor pattern {self.pattern!r}: {exc}; fix the regex") from exc


@dataclass(frozen=True)
class ArchSpec:
    """How to read one architecture: its tensor rules and the config keys it uses.

    Attributes:
        model_type: ``config.json`` ``model_type`` values this spec serves.
        rules: pattern rows tried in order; the first match wins.
        num_experts_keys: config keys that hold the number of routed experts.
        ignore_layers_from_key: config key; layers with an index >= its value are ignored (DeepSeek-V3's
            multi-token-prediction layer).
    """

    model_types: tuple[str, ...]
    rules: tuple[TensorRule, ...]
    num_experts_keys: tuple[str, ...] = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    ignore_layers_from_key: str | None = None
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)


_L = r"(?:^|\.)layers\.(?P<layer>\d+)\."
_MOE = r"(?:mlp|block_sparse_moe|feed_forward|moe)"
_EXPERT_PROJ = r"(?P<proj>gate_proj|up_proj|down_proj|w1|w2|w3)"

# Rows shared by every architecture, most specific first.
_ROUTED_EXPERTS = TensorRule(_L + _MOE + r"\.experts\.(?P<expert>\d+)\." + _EXPERT_PROJ + r"\.weight$", Role.EXPERT)
_FUSED_GATE_UP = TensorRule(
    _L + _MOE + r"\.experts\.(?P<proj>gate_up_proj)(?:\.weight)?$", Role.EXPERT, fused=True, split="halves"
)
_FUSED_DOWN = TensorRule(_L + _MOE + r"\.experts\.(?P<proj>down_proj)(?:\.weight)?$", Role.EXPERT, fused=True)
_SHARED = TensorRule(_L + r"mlp\.shared_experts?\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$", Role.SHARED_EXPERT)
_SHARED_GATE = TensorRule(_L + r"mlp\.shared_expert_gate\.weight$", Role.ROUTER, proj="shared_gate")
_ROUTER = TensorRule(_L + _MOE + r"\.(?:gate|router(?:\.layer)?)\.weight$", Role.ROUTER, proj="router")
_ATTENTION = TensorRule(
    _L + r"(?:self_attn|attention|attn)\.(?P<proj>q_proj|k_proj|v_proj|o_proj|q_a_proj|q_b_proj|"
    r"kv_a_proj_with_mqa|kv_b_proj|qkv_proj|query_key_value|dense|wq|wk|wv|wo)\.weight$",
    Role.ATTENTION,
)
_DENSE_MLP = TensorRule(
    _L + r"(?:mlp|feed_forward)\.(?P<proj>gate_proj|up_proj|down_proj|fc1|fc2|c_fc|c_proj|"
    r"dense_h_to_4h|dense_4h_to_h|w1|w2|w3)\.weight$",
    Role.DENSE_MLP,
)
_EMBED = TensorRule(
    r"(?:^|\.)(?:embed_tokens|wte|word_embeddings|tok_embeddings)\.weight$", Role.EMBEDDING, proj="embed"
)
_LM_HEAD = TensorRule(r"(?:^|\.)lm_head\.weight$", Role.LM_HEAD, proj="lm_head")

_COMMON: tuple[TensorRule, ...] = (
    _ROUTED_EXPERTS,
    _FUSED_GATE_UP,
    _FUSED_DOWN,
    _SHARED,
    _SHARED_GATE,
    _ROUTER,
    _ATTENTION,
    _DENSE_MLP,
    _EMBED,
    _LM_HEAD,
)

#: The table. Order of rules inside a row matters (first match wins).
ARCHITECTURES: tuple[ArchSpec, ...] = (
    ArchSpec(
        ("mixtral", "phimoe"),
        _COMMON,
        notes="per-expert block_sparse_moe.experts.{e}.w1/w3/w2 = gate/up/down; router block_sparse_moe.gate",
    ),
    ArchSpec(
        ("qwen2_moe",),
        _COMMON,
        notes="mlp.experts.{e}.*_proj, mlp.shared_expert.* (outside the budget), mlp.shared_expert_gate",
    ),
    ArchSpec(
        ("qwen3_moe", "olmoe", "qwen3_next", "minimax", "dots1", "ernie4_5_moe", "hunyuan_v1_moe"),
        _COMMON,
        notes="mlp.experts.{e}.*_proj, router mlp.gate",
    ),
    ArchSpec(
        ("deepseek_v2", "deepseek_v3", "glm4_moe", "kimi_k2"),
        _COMMON,
        ignore_layers_from_key="num_hidden_layers",
        notes="first_k_dense_replace dense layers, mlp.shared_experts, FP8 weight_scale_inv blocks, "
        "MTP layers (index >= num_hidden_layers) ignored",
    ),
    ArchSpec(
        ("gpt_oss",),
        (
            TensorRule(
                _L + r"mlp\.experts\.(?P<proj>gate_up_proj)$",
                Role.EXPERT,
                fused=True,
                split="interleaved",
                orientation="in_out",
            ),
            TensorRule(_L + r"mlp\.experts\.(?P<proj>down_proj)$", Role.EXPERT, fused=True, orientation="in_out"),
            TensorRule(_L + r"mlp\.router\.weight$", Role.ROUTER, proj="router"),
            *_COMMON,
        ),
        notes="fused [E, H, 2I] gate_up (gate/up interleaved) and [E, I, H] down; MXFP4 *_blocks/*_scales",
    ),
    ArchSpec(
        ("granitemoe", "granitemoeshared", "jetmoe"),
        (
            TensorRule(
                _L + r"block_sparse_moe\.(?P<proj>input_linear)\.weight$",
                Role.EXPERT,
                fused=True,
                split="halves",
                orientation="out_in",
            ),
            TensorRule(
                _L + r"block_sparse_moe\.(?P<proj>output_linear)\.weight$",
                Role.EXPERT,
                fused=True,
                orientation="out_in",
            ),
            TensorRule(_L + r"shared_mlp\.(?P<proj>input_linear|output_linear)\.weight$", Role.SHARED_EXPERT),
            *_COMMON,
        ),
        notes="fused input_linear [E, 2I, H] (gate|up) and output_linear [E, H, I]; router block_sparse_moe.router.layer",
    ),
    ArchSpec(
        ("llama4", "llama4_text"),
        (
            TensorRule(
                _L + r"feed_forward\.experts\.(?P<proj>gate_up_proj)$",
                Role.EXPERT,
                fused=True,
                split="halves",
                orientation="in_out",
            ),
            TensorRule(
                _L + r"feed_forward\.experts\.(?P<proj>down_proj)$", Role.EXPERT, fused=True, orientation="in_out"
            ),
            TensorRule(
                _L + r"feed_forward\.shared_expert\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$", Role.SHARED_EXPERT
            ),
            *_COMMON,
        ),
        notes="fused [E, H, 2I] gate_up and [E, I, H] down",
    ),
)

#: Generic fallback for an unknown model_type: the common rows.
GENERIC = ArchSpec(("*",), _COMMON, notes="generic patterns")


def spec_for(model_type: str | None) -> ArchSpec:
    """Return the table row for ``model_type``; the generic row when the type is unknown."""
    for spec in ARCHITECTURES:
        if model_type in spec.model_types:
            return spec
    return GENERIC


def load_pattern_file(path: Path) -> ArchSpec:
    """Read a user pattern file.

    The file is JSON: ``{"rules": [{"pattern": "...", "role": "expert", "proj": null, "fused": false,
    "split": "none", "orientation": "auto"}, ...], "num_experts_keys": [...]}``; its rules are tried
    before the generic ones.

    Raises:
        ConfigError: unreadable file, bad JSON, unknown role or invalid regex.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        rules = tuple(
            TensorRule(
                pattern=str(r["pattern"]),
                role=Role(r["role"]),
                proj=r.get("proj"),
                fused=bool(r.get("fused", False)),
                split=r.get("split", "none"),
                orientation=r.get("orientation", "auto"),
            )
            for r in raw["rules"]
        )
    except OSError as exc:
        raise ConfigError(f"pattern file {path}: cannot read ({exc.strerror}); check the path") from exc
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f'pattern file {path}: invalid ({exc}); expected {{"rules": [{{"pattern": ..., "role": ...}}]}} '
            f"with roles {[r.value for r in Role]}"
        ) from exc
    keys = tuple(raw.get("num_experts_keys", GENERIC.num_experts_keys))
    return ArchSpec(("custom",), rules + _COMMON, num_experts_keys=keys, notes=f"user patterns from {path}")


#: Integer fields of ``config.json`` that alphaq (and transformers, for ``eval``) reads: name -> smallest value.
CONFIG_INT_FIELDS: dict[str, int] = {
    "num_hidden_layers": 1,
    "n_layer": 1,
    "num_layers": 1,
    "hidden_size": 1,
    "d_model": 1,
    "n_embd": 1,
    "intermediate_size": 1,
    "moe_intermediate_size": 1,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "head_dim": 1,
    "vocab_size": 1,
    "max_position_embeddings": 1,
    "num_experts_per_tok": 1,
    "num_local_experts": 1,
    "num_experts": 1,
    "n_routed_experts": 1,
    "moe_num_experts": 1,
    "first_k_dense_replace": 0,
    "n_shared_experts": 0,
}
_CONFIG_INT_MAX = 2**31 - 1


def check_config(config: Any, source: str = "config.json") -> dict[str, Any]:
    """Check the ``config.json`` fields alphaq reads, types and ranges, before anything uses them.

    Args:
        config: the parsed ``config.json``.
        source: the file, for messages.

    Returns:
        ``config`` itself.

    Raises:
        CheckpointError: one line naming the file, the field, its value and the fix (``"num_hidden_layers": "four"``:
            not an integer).
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: not a JSON object; re-download or fix it")
    text_config = config.get("text_config")
    if text_config is not None and not isinstance(text_config, dict):
        raise CheckpointError(
            f"{source}: field 'text_config' is {_short(text_config)}, it must be an object or null; "
            "fix config.json or re-download the checkpoint"
        )
    for prefix, section in (("", config), ("text_config.", text_config or {})):
        model_type = section.get("model_type")
        if model_type is not None and not isinstance(model_type, str):
            raise CheckpointError(
                f"{source}: field '{prefix}model_type' is {_short(model_type)}, it must be a string "
                'such as "mixtral"; fix config.json or re-download the checkpoint'
            )
        for key, low in CONFIG_INT_FIELDS.items():
            value = section.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _CONFIG_INT_MAX:
                kind = "a positive integer" if low else "a non-negative integer"
                raise CheckpointError(
                    f"{source}: field '{prefix}{key}' is {_short(value)}, it must be {kind}; fix "
                    "config.json or re-download the checkpoint"
                )
    quant = config.get("quantization_config")
    if quant is not None and not isinstance(quant, dict):
        raise CheckpointError(
            f"{source}: field 'quantization_config' is {_short(quant)}, it must be an object or "
            "null; fix config.json or re-download the checkpoint"
        )
    block = (quant or {}).get("weight_block_size")
    if block is not None and not (
        isinstance(block, list)
        and len(block) == 2
        and all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= _CONFIG_INT_MAX for b in block)
    ):
        raise CheckpointError(
            f"{source}: field 'quantization_config.weight_block_size' is {_short(block)}, it must "
            "be two positive integers such as [128, 128]; fix config.json or re-download the checkpoint"
        )
    return config


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, list, dict, bool)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Match:
    """A tensor name matched against the table."""

    rule: TensorRule
    layer: int | None
    expert: int | None
    proj: str


def match_tensor(spec: ArchSpec, name: str) -> Match | None:
    """Classify one tensor name; ``None`` when no rule matches (the caller labels 2-D tensors 'other')."""
    for rule in spec.rules:
        m = re.search(rule.pattern, name)
        if m is None:
            continue
        groups = m.groupdict()
        layer = int(groups["layer"]) if groups.get("layer") is not None else None
        expert = int(groups["expert"]) if groups.get("expert") is not None else None
        raw_proj = rule.proj or groups.get("proj") or "weight"
        return Match(rule=rule, layer=layer, expert=expert, proj=PROJ_ALIASES.get(raw_proj, raw_proj))
    return None


def architectures_markdown() -> str:
    """The pattern table as a Markdown table (docs/architectures.md is generated from it)."""
    lines = ["| model_type | expert layout | notes |", "|---|---|---|"]
    for spec in ARCHITECTURES:
        own_fused = [r for r in spec.rules if r.fused and r.role is Role.EXPERT and r not in _COMMON]
        layout = (
            f"fused 3-D {own_fused[0].orientation.replace('_', '-')}, gate/up {own_fused[0].split}"
            if own_fused
            else "per-expert 2-D (fused 3-D [E, out, in] also read)"
        )
        lines.append(f"| {', '.join(f'`{t}`' for t in spec.model_types)} | {layout} | {spec.notes} |")
    lines.append(f"| any other | generic patterns | {GENERIC.notes}; or `--pattern-file` |")
    return "\n".join(lines) + "\n"
