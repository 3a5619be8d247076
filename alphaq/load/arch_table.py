"""The architecture table as data: roles, pattern rows and the rows of every known ``model_type``.

Kept apart from :mod:`alphaq.load.architectures` (which matches names against it) so that adding an
architecture is adding a row here. Checked against every MoE type of the installed transformers by
``tests/load/test_architectures_all.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from alphaq.errors import ConfigError


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
    "w13_weight": "gate_up",
    "w2_weight": "down",
    "v1": "up",
    "wqkv": "qkv",
    "Wqkv": "qkv",
    "out_proj": "o",
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
        stacked: the fused tensor is 2-D, every expert stacked along dim 0 ([E * out, in], DBRX); it is read as
            [E, out, in] with E from the config.
    """

    pattern: str
    role: Role
    proj: str | None = None
    fused: bool = False
    split: FusedSplit = "none"
    orientation: FusedOrientation = "auto"
    stacked: bool = False

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


_L = r"(?:^|\.)(?:layers|blocks)\.(?P<layer>\d+)\."
_MOE = r"(?:mlp|block_sparse_moe|feed_forward|moe|ffn|mixer)"
_MOE_OPT = r"(?:" + _MOE + r"\.)?"  # Gemma 4 keeps its experts beside the dense MLP: layers.{i}.experts
_EXPERT_PROJ = r"(?P<proj>gate_proj|up_proj|down_proj|w1|w2|w3)"
_ATTN = (
    r"(?:norm_attn_norm\.)?(?:self_attn|attention|attn|self_attention|linear_attn|conv)(?:\.\d+)?\."
    r"(?:qkv_proj\.|indexer\.|compressor\.)?"
)
_ATTN_PROJ = (
    r"(?P<proj>q_proj|k_proj|v_proj|o_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|qkv_proj|query_key_value|"
    r"dense|wq|wk|wv|wo|wqkv|Wqkv|kv_proj|out_proj|output_gate|gate_proj|g_proj|r_proj|"  # softmax attention, gates
    r"in_proj_qkvz|in_proj_ba|in_proj_qkv|in_proj_z|in_proj_a|in_proj_b|in_proj|b_proj|f_proj|"  # linear attention
    r"f_a_proj|f_b_proj|g_a_proj|g_b_proj|"
    r"wq_a|wq_b|wkv|wo_a|wo_b|wgate|weights_proj|v_proj_current|v_proj_delayed|linear_gate|"  # DSA / compressors
    r"gate_attn|attn_sink_proj|wk_dv|wo_ud|wq_du|wr_du|wv_dv)"
)

# Rows shared by every architecture, most specific first.
_ROUTED_EXPERTS = TensorRule(_L + _MOE_OPT + r"experts\.(?P<expert>\d+)\." + _EXPERT_PROJ + r"\.weight$", Role.EXPERT)
_FUSED_GATE_UP = TensorRule(
    _L + _MOE_OPT + r"experts\.(?P<proj>gate_up_proj|w13_weight)(?:\.weight)?$", Role.EXPERT, fused=True, split="halves"
)
_FUSED_DOWN = TensorRule(
    _L + _MOE_OPT + r"experts\.(?P<proj>down_proj|w2_weight)(?:\.weight)?$", Role.EXPERT, fused=True
)
_SHARED = TensorRule(
    _L + _MOE_OPT + r"(?:shared_experts?|shared_mlp)\.(?P<proj>gate_proj|up_proj|down_proj|gate_up_proj|w1|w2|w3|"
    r"input_linear|output_linear)\.weight$",
    Role.SHARED_EXPERT,
)
_SHARED_GATE = TensorRule(
    _L + _MOE_OPT + r"(?:shared_expert_gate|shared_experts\.linear_gate)\.weight$", Role.ROUTER, proj="shared_gate"
)
# mlp.gate, mlp.router, router.layer (Granite), mlp.router.gate (AFMoE, HY-V3), mlp.gate.wg (Hunyuan),
# mlp.router.classifier (LongCat), layers.{i}.router.proj (Gemma 4), mlp.router_gate (Doge).
_ROUTER = TensorRule(
    _L + _MOE_OPT + r"(?:gate|router|router_gate)(?:\.(?:layer|gate|wg|classifier|proj))?\.weight$",
    Role.ROUTER,
    proj="router",
)
_ROUTER_MLP = TensorRule(  # ZAYA routes with a small MLP: mlp.gate.router_mlp.fc1/fc2/out_proj, mlp.gate.down_proj
    _L + r"mlp\.gate\.(?:router_mlp\.)?(?:fc1|fc2|out_proj|down_proj)\.weight$", Role.ROUTER, proj="router_mlp"
)
_ATTENTION = TensorRule(_L + _ATTN + _ATTN_PROJ + r"\.weight$", Role.ATTENTION)
_MIXER_ATTENTION = TensorRule(_L + r"mixer\.(?P<proj>q_proj|k_proj|v_proj|o_proj)\.weight$", Role.ATTENTION)
_DENSE_MLP = TensorRule(
    _L
    + r"(?:mlp|feed_forward|ffn|block_sparse_moe|mlps\.\d+)\.(?P<proj>gate_proj|up_proj|down_proj|fc1|fc2|c_fc|c_proj|"
    r"dense_h_to_4h|dense_4h_to_h|w1|w2|w3)\.weight$",
    Role.DENSE_MLP,
)
_EMBED = TensorRule(  # backbone.embeddings: Mamba-style checkpoints (Nemotron-H)
    r"(?:^|\.)(?:embed_tokens|wte|word_embeddings|tok_embeddings)\.weight$|^backbone\.embeddings\.weight$",
    Role.EMBEDDING,
    proj="embed",
)
_LM_HEAD = TensorRule(r"(?:^|\.)lm_head\.weight$", Role.LM_HEAD, proj="lm_head")

COMMON: tuple[TensorRule, ...] = (
    _ROUTED_EXPERTS,
    _FUSED_GATE_UP,
    _FUSED_DOWN,
    _SHARED,
    _SHARED_GATE,
    _ROUTER,
    _ROUTER_MLP,
    _ATTENTION,
    _MIXER_ATTENTION,
    _DENSE_MLP,
    _EMBED,
    _LM_HEAD,
)


def _fused(pattern: str, proj: str, split: FusedSplit = "none", orientation: FusedOrientation = "auto") -> TensorRule:
    return TensorRule(_L + pattern, Role.EXPERT, proj=proj, fused=True, split=split, orientation=orientation)


#: The table. Order of rules inside a row matters (first match wins).
ARCHITECTURES: tuple[ArchSpec, ...] = (
    ArchSpec(
        ("mixtral", "phimoe", "minimax", "minimax_m2", "kimi_linear"),
        COMMON,
        notes="per-expert block_sparse_moe.experts.{e}.w1/w3/w2 = gate/up/down; router block_sparse_moe.gate",
    ),
    ArchSpec(
        ("qwen2_moe",),
        COMMON,
        notes="mlp.experts.{e}.*_proj, mlp.shared_expert.* (outside the budget), mlp.shared_expert_gate",
    ),
    ArchSpec(
        ("qwen3_moe", "olmoe", "qwen3_next", "dots1", "ernie4_5_moe", "hunyuan_v1_moe", "hy_v3", "afmoe"),
        COMMON,
        notes="mlp.experts.{e}.*_proj, router mlp.gate (mlp.gate.wg, mlp.router.gate), shared mlp.shared_mlp",
    ),
    ArchSpec(
        ("deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "glm4_moe", "glm_moe_dsa", "kimi_k2"),
        COMMON,
        ignore_layers_from_key="num_hidden_layers",
        notes="first_k_dense_replace dense layers, mlp.shared_experts (V4: ffn.experts), FP8 weight_scale_inv "
        "blocks, MTP layers (index >= num_hidden_layers) ignored",
    ),
    ArchSpec(
        ("nemotron_h",),
        COMMON,
        notes="hybrid Mamba/attention/MoE: backbone.layers.{i}.mixer.experts.{e}.up_proj/down_proj (no gate)",
    ),
    ArchSpec(
        ("gpt_oss",),
        (
            _fused(r"mlp\.experts\.(?P<proj>gate_up_proj)$", "gate_up", "interleaved", "in_out"),
            _fused(r"mlp\.experts\.(?P<proj>down_proj)$", "down", orientation="in_out"),
            TensorRule(_L + r"mlp\.router\.weight$", Role.ROUTER, proj="router"),
            *COMMON,
        ),
        notes="fused [E, H, 2I] gate_up (gate/up interleaved) and [E, I, H] down; MXFP4 *_blocks/*_scales",
    ),
    ArchSpec(
        ("granitemoe", "granitemoeshared", "granitemoe_swa", "granitemoehybrid", "jetmoe"),
        (
            _fused(r"(?:block_sparse_moe|mlp)\.(?P<proj>input_linear)\.weight$", "gate_up", "halves", "out_in"),
            _fused(r"(?:block_sparse_moe|mlp)\.(?P<proj>output_linear)\.weight$", "down", orientation="out_in"),
            TensorRule(_L + r"self_attention\.experts\.router\.layer\.weight$", Role.ROUTER, proj="attention_router"),
            *COMMON,
        ),
        notes="fused input_linear [E, 2I, H] (gate|up) and output_linear [E, H, I]; router "
        "block_sparse_moe.router.layer; shared_mlp.*; JetMoE's mlp.input_linear (its attention experts are kept)",
    ),
    ArchSpec(
        ("llama4", "llama4_text"),
        (
            _fused(r"feed_forward\.experts\.(?P<proj>gate_up_proj)$", "gate_up", "halves", "in_out"),
            _fused(r"feed_forward\.experts\.(?P<proj>down_proj)$", "down", orientation="in_out"),
            TensorRule(
                _L + r"feed_forward\.shared_expert\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$", Role.SHARED_EXPERT
            ),
            *COMMON,
        ),
        notes="fused [E, H, 2I] gate_up and [E, I, H] down",
    ),
    ArchSpec(
        ("dbrx",),
        (
            TensorRule(
                _L + r"ffn\.experts\.mlp\.(?P<proj>w1|v1)$", Role.EXPERT, fused=True, orientation="out_in", stacked=True
            ),
            TensorRule(
                _L + r"ffn\.experts\.mlp\.(?P<proj>w2)$", Role.EXPERT, fused=True, orientation="in_out", stacked=True
            ),
            *COMMON,
        ),
        notes="experts stacked in 2-D ffn.experts.mlp.w1/v1 [E*I, H] (gate/up) and w2 [E*I, H] (down, transposed)",
    ),
    ArchSpec(
        ("aria_text", "aria"),
        (
            _fused(r"mlp\.experts\.fc1\.weight$", "gate_up", "halves", "in_out"),
            _fused(r"mlp\.experts\.fc2\.weight$", "down", orientation="in_out"),
            *COMMON,
        ),
        notes="grouped-GEMM experts mlp.experts.fc1 [E, H, 2I] (gate|up) and fc2 [E, I, H]",
    ),
    ArchSpec(
        ("ergo",),
        (
            _fused(r"feed_forward\.(?P<proj>up_proj|down_proj)$", "", orientation="out_in"),
            TensorRule(_L + r"feed_forward\.gate_kernel$", Role.ROUTER, proj="router"),
            TensorRule(_L + r"feed_forward\.shared_(?P<proj>up_proj|down_proj)$", Role.SHARED_EXPERT),
            TensorRule(_L + r"feed_forward\.(?P<proj>up|down)\.weight$", Role.DENSE_MLP),
            *COMMON,
        ),
        notes="fused feed_forward.up_proj/down_proj [E, out, in] (no gate); router feed_forward.gate_kernel",
    ),
    ArchSpec(
        ("gemma4", "gemma4_text", "inkling2_text", "inkling2_loop_text", "minimax_m3_vl_text"),
        COMMON,
        notes="fused experts: Gemma 4 layers.{i}.experts.gate_up_proj beside the dense mlp; Inkling 2 "
        "mlp.experts.w13_weight/w2_weight",
    ),
)

#: Generic fallback for an unknown model_type: the common rows.
GENERIC = ArchSpec(("*",), COMMON, notes="generic patterns")
