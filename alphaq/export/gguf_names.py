"""GGUF tensor names of a plan's matrices, as the vendored ``convert_hf_to_gguf.py`` writes them.

Pure: a :class:`~alphaq.planning.plan_file.PlanTensor` in, its GGUF names (and the rows it contributes to each)
out. Used by the llama.cpp export (:mod:`alphaq.export.llamacpp`) and the whole-model GGUF plan
(:mod:`alphaq.planning.gguf_run`, :mod:`alphaq.planning.gguf_signals`).
"""

from __future__ import annotations

import re
from typing import Any

from alphaq.planning.plan_file import PlanTensor

#: (role, proj) -> GGUF base names (more than one when a converter version may use another name).
_ATTENTION = {
    "q": ("attn_q",),
    "k": ("attn_k",),
    "v": ("attn_v",),
    "o": ("attn_output",),
    "dense": ("attn_output",),
    "qkv_proj": ("attn_qkv",),
    "query_key_value": ("attn_qkv",),
    "q_a_proj": ("attn_q_a",),
    "q_b_proj": ("attn_q_b",),
    "kv_a_proj_with_mqa": ("attn_kv_a_mqa",),
    "qkv": ("attn_qkv",),
    "gate": ("attn_gate",),  # AFMoE's gated attention (self_attn.gate_proj)
    "g_proj": ("attn_gate",),  # dots3-note's headwise attention gate (self_attn.g_proj)
    "linear_gate": ("attn_gate",),  # HY_V4's gated MLA output (self_attn.linear_gate)
}
#: DeepSeek sparse attention's indexer (``self_attn.indexer.*``): proj -> GGUF name under ``blk.N.``.
_INDEXER = {"k": "indexer.attn_k", "wk": "indexer.attn_k", "wq_b": "indexer.attn_q_b", "weights_proj": "indexer.proj"}
_INDEXER_TENSOR = re.compile(r"(?:^|\.)indexer\.")
#: HY_V4's iHC mixing matrices (labelled other): ``layers.N.hc_{attn,mlp}_layer.hc_pre.hc_fn`` ->
#: ``blk.N.hc_{attn,ffn}_fn``, the final ``hc_head.hc_head_fn`` -> ``output_hc_fn``.
_IHC = re.compile(r"(?:^|\.)(?:hc_(attn|mlp)_layer\.hc_pre\.hc_fn|hc_head\.hc_head_fn)(?:\.weight)?$")
_IHC_WHERE = {"attn": "attn", "mlp": "ffn"}
#: Attention matrices the converter splits along their rows: proj -> GGUF names of the halves (first half first).
#: MLA's kv_b_proj [n_head * (qk_nope + v), kv_lora] becomes attn_k_b (the qk_nope rows of every head, transposed)
#: and attn_v_b (the v rows); older converters wrote one attn_kv_b, kept as an alias of the first half.
_SPLIT_ATTENTION = {"kv_b_proj": (("attn_k_b", "attn_kv_b"), ("attn_v_b",))}
#: LFM2's short convolutions (``layers.N.conv.in_proj`` / ``out_proj``, labelled attention): ``blk.N.shortconv.*``.
_SHORTCONV = re.compile(r"(?:^|\.)conv\.(in_proj|out_proj)\.weight$")
_FFN_SUFFIX = {"expert": "_exps", "shared_expert": "_shexp", "dense_mlp": ""}
TOKEN_EMBD, OUTPUT, ROUTER = "token_embd", "output", "ffn_gate_inp"


def mla_head_dims(config: dict[str, Any]) -> tuple[int, int] | None:
    """``(qk_nope_head_dim, v_head_dim)`` of a model config with multi-head latent attention, else None."""
    nope, v = config.get("qk_nope_head_dim"), config.get("v_head_dim")
    if isinstance(nope, int) and isinstance(v, int) and nope > 0 and v > 0:
        return nope, v
    return None


def gguf_names(
    t: PlanTensor, *, fused_gate_up: bool = False, mla_head_dims: tuple[int, int] | None = None
) -> list[tuple[tuple[str, ...], int]] | None:
    """GGUF names of one plan matrix: ``[(names, rows), ...]`` (a fused shared gate_up splits in two halves, MLA's
    kv_b_proj in attn_k_b and attn_v_b), as the vendored ``convert_hf_to_gguf.py`` names them.

    Args:
        t: the plan matrix (its ``role``, ``proj`` and ``layer``; its source ``tensor`` tells LFM2's short
            convolutions from attention).
        fused_gate_up: routed gate and up share ``ffn_gate_up_exps``.
        mla_head_dims: ``(qk_nope_head_dim, v_head_dim)``: MLA's ``kv_b_proj`` rows per head that go to
            ``attn_k_b`` and ``attn_v_b`` (None: halves).

    Returns:
        One entry per GGUF tensor the matrix lands in: its names (the first is the one costed, the others are
        aliases some converter versions use) and the rows it contributes; None when there is no mapping.
    """
    proj, layer = t.proj, t.layer
    if t.role == "embedding":
        return [((TOKEN_EMBD,), t.rows)]
    if t.role == "lm_head":
        return [((OUTPUT,), t.rows)]
    ihc = _IHC.search(t.tensor or t.name) if t.role == "other" else None
    if ihc is not None:
        if ihc.group(1) is None:
            return [(("output_hc_fn",), t.rows)]
        return None if layer is None else [((f"blk.{layer}.hc_{_IHC_WHERE[ihc.group(1)]}_fn",), t.rows)]
    if layer is None:
        return None
    blk = f"blk.{layer}."
    conv = _SHORTCONV.search(t.tensor or t.name) if t.role == "attention" else None
    if conv is not None:
        return [((f"{blk}shortconv.{conv.group(1)}",), t.rows)]
    if t.role == "attention" and _INDEXER_TENSOR.search(t.tensor or t.name):
        name = _INDEXER.get(str(proj))
        return None if name is None else [((blk + name,), t.rows)]
    if t.role == "attention" and proj in _ATTENTION:
        return [(tuple(blk + n for n in _ATTENTION[proj]), t.rows)]
    if t.role == "attention" and proj in _SPLIT_ATTENTION:
        first, second = _SPLIT_ATTENTION[proj]
        # split by head dims, [n_head * (qk_nope + v), kv_lora]: halves without them (DeepSeek-V2/V3, Kimi-K2:
        # 128 + 128); GLM-4.7-Flash has 192 + 256
        half = t.rows // 2
        if mla_head_dims is not None and t.rows % sum(mla_head_dims) == 0:
            half = t.rows // sum(mla_head_dims) * mla_head_dims[0]
        return [(tuple(blk + n for n in first), half), (tuple(blk + n for n in second), t.rows - half)]
    if t.role == "router":
        name = {"router": ROUTER, "shared_gate": "ffn_gate_inp_shexp"}.get(str(proj))
        return None if name is None else [((blk + name,), t.rows)]
    suffix = _FFN_SUFFIX.get(t.role)
    if suffix is None:
        return None
    if t.role == "expert" and fused_gate_up and proj in ("gate", "up"):
        return [((blk + "ffn_gate_up_exps",), t.rows)]
    if proj in ("gate", "up", "down"):
        return [((f"{blk}ffn_{proj}{suffix}",), t.rows)]
    if proj == "gate_up" and t.role == "shared_expert":  # granite shared_mlp.input_linear, split by the converter
        return [((f"{blk}ffn_gate{suffix}",), t.rows // 2), ((f"{blk}ffn_up{suffix}",), t.rows - t.rows // 2)]
    return None


__all__ = ["OUTPUT", "ROUTER", "TOKEN_EMBD", "gguf_names", "mla_head_dims"]
