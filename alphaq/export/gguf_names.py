"""GGUF tensor names of a plan's matrices, as the vendored ``convert_hf_to_gguf.py`` writes them.

Pure: a :class:`~alphaq.planning.plan_file.PlanTensor` in, its GGUF names (and the rows it contributes to each)
out. Used by the llama.cpp export (:mod:`alphaq.export.llamacpp`) and the whole-model GGUF plan
(:mod:`alphaq.planning.gguf_run`, :mod:`alphaq.planning.gguf_signals`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
#: Linear-attention mixers, as the converter names them: Qwen3-Next / Qwen3.5 Gated DeltaNet (``linear_attn.*``:
#: its ``out_proj``, plan proj ``o``, is ``ssm_out``) and Kimi Linear's KDA gates (``self_attn.f_a_proj`` ...).
_LINEAR_ATTN = re.compile(r"(?:^|\.)linear_attn\.")
_LINEAR_ATTENTION = {
    "o": "ssm_out",
    "in_proj_qkv": "attn_qkv",  # Qwen3.5: q|k|v
    "in_proj_z": "attn_gate",  # Qwen3.5: the output gate z
    "in_proj_a": "ssm_alpha",
    "in_proj_b": "ssm_beta",
    "in_proj_ba": "ssm_ba",  # Qwen3-Next: beta|alpha in one tensor
}
_KDA = {
    "f_a_proj": "ssm_f_a",
    "f_b_proj": "ssm_f_b",
    "g_a_proj": "ssm_g_a",
    "g_b_proj": "ssm_g_b",
    "b_proj": "ssm_beta",
}
#: Qwen4-Exp's hyper-connections: ``layers.N.{attn,mlp}_hyper_connection.*`` (``blk.N.hc_{attn,ffn}_*``) and the
#: final ``hyper_connection_mixer.*`` (``output_hc_*``); its QSA indexer's fused ``indexer.index_qk_proj``.
_HYPER_CONNECTION = re.compile(
    r"(?:(?:^|\.)(attn|mlp)_hyper_connection|(?:^|\.)hyper_connection_mixer)\."
    r"(input_mix_weight_down|input_mix_weight_up|block_inject_weight)\.weight$"
)
_HC_WHERE = {"attn": "attn", "mlp": "ffn"}
_HC_PART = {"input_mix_weight_down": "down", "input_mix_weight_up": "up", "block_inject_weight": "inject"}
_INDEX_QK = re.compile(r"(?:^|\.)indexer\.index_qk_proj\.weight$")
#: Qwen4-Exp's per-layer n-gram embeddings (PLE): ``layers.N.ple.key_proj`` / ``value_proj`` (``blk.N.ple_key`` /
#: ``ple_value``) and the hashed n-gram table, stored in shards the converter concatenates into one
#: ``per_layer_token_embd``.
_PLE = re.compile(r"(?:^|\.)ple\.(key_proj|value_proj|ple_embedding\.ngram_embedding\.shard_\d+)\.weight$")
#: Mamba mixers (Nemotron-H ``mixer.*``, Jamba / Granite-hybrid ``mamba.*``; no role of their own: ``other``).
_MAMBA = re.compile(r"(?:^|\.)(?:mixer|mamba)\.(in_proj|out_proj|x_proj|dt_proj)\.weight$")
_MAMBA_NAMES = {"in_proj": "ssm_in", "out_proj": "ssm_out", "x_proj": "ssm_x", "dt_proj": "ssm_dt"}
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


def split_rows(config: dict[str, Any]) -> dict[str, int]:
    """Rows of the second part of the matrices the converter splits in two, by plan proj, from a model config.

    ``in_proj_qkvz`` (Qwen3-Next's Gated DeltaNet): its z rows, ``linear_num_value_heads * linear_value_head_dim``,
    go to ``attn_gate`` (q|k|v to ``attn_qkv``). ``index_qk_proj`` (Qwen4-Exp's QSA indexer): its key rows,
    ``indexer_kv_heads * indexer_head_dim``, go to ``indexer.k_proj`` (the query rows to ``indexer.q_proj``).
    A key is absent when the config lacks what it needs.
    """
    text = config.get("text_config")
    config = {**config, **text} if isinstance(text, dict) else config
    out: dict[str, int] = {}
    for proj, (heads, dim) in {
        "in_proj_qkvz": ("linear_num_value_heads", "linear_value_head_dim"),
        "index_qk_proj": ("indexer_kv_heads", "indexer_head_dim"),
    }.items():
        n, d = config.get(heads), config.get(dim)
        if isinstance(n, int) and isinstance(d, int) and n > 0 and d > 0:
            out[proj] = n * d
    return out


def gguf_names(
    t: PlanTensor,
    *,
    fused_gate_up: bool = False,
    mla_head_dims: tuple[int, int] | None = None,
    split_rows: Mapping[str, int] | None = None,
) -> list[tuple[tuple[str, ...], int]] | None:
    """GGUF names of one plan matrix: ``[(names, rows), ...]`` (a fused shared gate_up splits in two halves, MLA's
    kv_b_proj in attn_k_b and attn_v_b), as the vendored ``convert_hf_to_gguf.py`` names them.

    Args:
        t: the plan matrix (its ``role``, ``proj`` and ``layer``; its source ``tensor`` tells LFM2's short
            convolutions from attention).
        fused_gate_up: routed gate and up share ``ffn_gate_up_exps``.
        mla_head_dims: ``(qk_nope_head_dim, v_head_dim)``: MLA's ``kv_b_proj`` rows per head that go to
            ``attn_k_b`` and ``attn_v_b`` (None: halves).
        split_rows: the second part's rows of the matrices the converter splits in two (:func:`split_rows`;
            without it Qwen3-Next's ``in_proj_qkvz`` gives a quarter to ``attn_gate``, as when key and value heads
            match, and Qwen4-Exp's ``index_qk_proj`` a fifth to ``indexer.k_proj``, as with 4 query heads).

    Returns:
        One entry per GGUF tensor the matrix lands in: its names (the first is the one costed, the others are
        aliases some converter versions use) and the rows it contributes; None when there is no mapping.
    """
    proj, layer = t.proj, t.layer
    source = t.tensor or t.name
    if t.role == "other" and (hc := _HYPER_CONNECTION.search(source)) is not None:
        where, part = hc.group(1), _HC_PART[hc.group(2)]
        if where is None:
            return [((f"output_hc_{part}",), t.rows)]
        return None if layer is None else [((f"blk.{layer}.hc_{_HC_WHERE[where]}_{part}",), t.rows)]
    if t.role == "other" and (ple := _PLE.search(source)) is not None:
        if ple.group(1).startswith("ple_embedding"):
            return [(("per_layer_token_embd",), t.rows)]
        return None if layer is None else [((f"blk.{layer}.ple_{ple.group(1).removesuffix('_proj')}",), t.rows)]
    if t.role == "embedding":
        return [((TOKEN_EMBD,), t.rows)]
    if t.role == "lm_head":
        return [((OUTPUT,), t.rows)]
    ihc = _IHC.search(source) if t.role == "other" else None
    if ihc is not None:
        if ihc.group(1) is None:
            return [(("output_hc_fn",), t.rows)]
        return None if layer is None else [((f"blk.{layer}.hc_{_IHC_WHERE[ihc.group(1)]}_fn",), t.rows)]
    if layer is None:
        return None
    blk = f"blk.{layer}."
    if t.role == "other" and (mamba := _MAMBA.search(source)) is not None:
        return [((blk + _MAMBA_NAMES[mamba.group(1)],), t.rows)]
    if t.role == "other" and _INDEX_QK.search(source):  # [q heads | k head]: split like MiniMax-M3's
        k = _second(t.rows, split_rows, "index_qk_proj", t.rows // 5)
        return [((blk + "indexer.q_proj",), t.rows - k), ((blk + "indexer.k_proj",), k)]
    conv = _SHORTCONV.search(source) if t.role == "attention" else None
    if conv is not None:
        return [((f"{blk}shortconv.{conv.group(1)}",), t.rows)]
    if t.role == "attention" and _INDEXER_TENSOR.search(source):
        name = _INDEXER.get(str(proj))
        return None if name is None else [((blk + name,), t.rows)]
    if t.role == "attention" and _LINEAR_ATTN.search(source):
        if proj == "in_proj_qkvz":  # [q|k|v|z per key head]: the converter regroups it into attn_qkv and attn_gate
            z = _second(t.rows, split_rows, proj, t.rows // 4)
            return [((blk + "attn_qkv",), t.rows - z), ((blk + "attn_gate",), z)]
        if proj in _LINEAR_ATTENTION:
            return [((blk + _LINEAR_ATTENTION[proj],), t.rows)]
    if t.role == "attention" and proj in _KDA:
        return [((blk + _KDA[proj],), t.rows)]
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


def _second(rows: int, split_rows: Mapping[str, int] | None, proj: str, default: int) -> int:
    """Rows of a split matrix's second part: ``split_rows[proj]`` when it leaves both parts rows, else ``default``."""
    second = (split_rows or {}).get(proj)
    return second if second is not None and 0 < second < rows else default


__all__ = ["OUTPUT", "ROUTER", "TOKEN_EMBD", "gguf_names", "mla_head_dims", "split_rows"]
