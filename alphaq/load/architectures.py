"""Architectures as data: a table of tensor-name patterns keyed by ``config.json``'s ``model_type``.

Each pattern maps a tensor name to (role, layer, expert, projection). Adding an architecture is adding
a row, not a class. Patterns are anchored with ``$`` so that a router (``mlp.gate.weight``) is never
mistaken for ``mlp.experts.0.gate_proj.weight``. A user can pass a JSON pattern file for anything else
(see :func:`load_pattern_file`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphaq.errors import CheckpointError, ConfigError
from alphaq.load.arch_table import (
    ARCHITECTURES,
    COMMON,
    GENERIC,
    PROJ_ALIASES,
    ArchSpec,
    FusedOrientation,
    FusedSplit,
    Role,
    TensorRule,
)

__all__ = [
    "ARCHITECTURES",
    "GENERIC",
    "PROJ_ALIASES",
    "ArchSpec",
    "FusedOrientation",
    "FusedSplit",
    "Match",
    "Role",
    "TensorRule",
    "architectures_markdown",
    "check_config",
    "load_pattern_file",
    "match_tensor",
    "spec_for",
]


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
                stacked=bool(r.get("stacked", False)),
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
    return ArchSpec(("custom",), rules + COMMON, num_experts_keys=keys, notes=f"user patterns from {path}")


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
#: Fields of :data:`CONFIG_INT_FIELDS` that a released checkpoint may give per layer, as a list of such integers
#: (Hunyuan-A13B's ``"moe_intermediate_size": [3072, ...]``).
CONFIG_PER_LAYER_FIELDS = frozenset({"moe_intermediate_size"})


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
            if (
                key in CONFIG_PER_LAYER_FIELDS
                and isinstance(value, list)
                and value
                and all(_int_in(v, low) for v in value)
            ):
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


def _int_in(value: Any, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= _CONFIG_INT_MAX


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
        own_fused = [r for r in spec.rules if r.fused and r.role is Role.EXPERT and r not in COMMON]
        layout = "per-expert 2-D (fused 3-D [E, out, in] also read)"
        if own_fused:
            first = own_fused[0]
            kind = "stacked 2-D [E*out, in]" if first.stacked else f"fused 3-D {first.orientation.replace('_', '-')}"
            layout = f"{kind}, gate/up " + (first.split if first.split != "none" else "separate")
        notes = spec.notes.replace("|", "\\|")  # a "|" would end the cell
        lines.append(f"| {', '.join(f'`{t}`' for t in spec.model_types)} | {layout} | {notes} |")
    lines.append(f"| any other | generic patterns | {GENERIC.notes}; or `--pattern-file` |")
    return "\n".join(lines) + "\n"
