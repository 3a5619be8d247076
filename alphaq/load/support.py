"""What alphaq does with each MoE ``model_type`` of transformers, stage by stage: the table docs/architectures.md shows.

The exceptions below are the expectations of the tests that build every MoE type with transformers' own class
(``tests/load/test_architectures_all.py``, ``tests/quantization/test_load_all_architectures.py``,
``tests/export/test_ct_all_architectures.py``, ``tests/export/test_gguf_families.py``): those tests import them
from here and check that each stage does what its row says (finds exactly the experts, loads with logits equal to
the simulated plan's, refuses with the reason given...). :func:`support_markdown` renders the table from the same
data, and a test checks that the documentation holds the current rendering, so the page cannot drift from what is
tested.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Types not built by the tests, with the reason (one line each).
NOT_BUILT: dict[str, str] = {
    "gemma4": "causal-LM class is Gemma4ForConditionalGeneration (vision+audio); its text tower gemma4_text is tested",
    "gemma4_assistant": "an assistant (speculative) head without experts of its own",
}

#: Types whose routed experts are not weight matrices, with the reason.
EXPERTS_NOT_MATRICES: dict[str, str] = {
    "doge": "its experts are single rows of mlp.up_embed/down_embed [num_experts, H] (product-key retrieval), "
    "vectors, not matrices; the tables stay 'other' at 16 bits and mlp.router_gate is labelled router"
}

#: Types ``alphaq.load_quantized`` (and ``eval --quantized``) does not serve, with the reason its error contains.
NOT_SERVED: dict[str, str] = {
    "doge": "no matrix selected",  # nothing to plan: see EXPERTS_NOT_MATRICES
    "inkling2_text": "transformers converts the fused tensor",
    "inkling2_loop_text": "transformers converts the fused tensor",
}

#: Part of the compressed-tensors export's refusal of a checkpoint with fused experts on disk.
CT_FUSED_REASON = "stores all experts of a layer in one tensor (fused layout)"
#: Part of its refusal where transformers' own loader would drop weights.
CT_CONV1D_REASON = "drops unquantized weights"
#: Types whose compressed-tensors export does not load in transformers (5.25), with the reason (one line each).
CT_NOT_LOADABLE: dict[str, str] = {
    **{
        t: f"checkpoint {CT_FUSED_REASON}: compressed-tensors names one 2-D module per weight"
        for t in (
            "aria_text",
            "dbrx",
            "ergo",
            "gemma4_text",
            "gpt_oss",
            "granitemoe",
            "granitemoe_swa",
            "granitemoehybrid",
            "granitemoeshared",
            "hy_v4",
            "inkling2_loop_text",
            "inkling2_text",
            "inkling_text",
            "jetmoe",
            "lara_mini",
            "llama4",
            "llama4_text",
            "minimax_m3_vl_text",
            "zaya",
        )
    },
    "kimi_linear": f"transformers' loader {CT_CONV1D_REASON} of the q/k/v_conv1d -> conv1d merge",
    "bailing_hybrid": f"transformers' loader {CT_CONV1D_REASON} of the q/k/v_conv1d -> conv1d merge",
    **{t: f"no expert matrices: {reason}" for t, reason in EXPERTS_NOT_MATRICES.items()},
}

#: Types exported to GGUF, verified tensor by tensor and run by ``llama-perplexity`` in the tests, one tiny model each
#: (``tests/export/test_gguf_families.py`` through the CLI, ``tests/export/test_gguf_all_types.py`` the others).
GGUF_TESTED: tuple[str, ...] = (
    "qwen3_moe",
    "deepseek_v3",
    "gpt_oss",
    "glm4_moe",
    "glm4_moe_lite",
    "llama4_text",
    "lfm2_moe",
    "afmoe",
    "mixtral",
    "qwen2_moe",
    "olmoe",
    "cohere2_moe",
    "granitemoe",
    "granitemoeshared",
    "hy_v3",
    "laguna",
    "dbrx",
    "deepseek_v2",
    "deepseek_v32",
    "sarvam_mla",
    "glm_moe_dsa",
    "dots1",
    "dots3_note",
    "dots3_note_text",
    "ernie4_5_moe",
    "exaone_moe",
    "gemma4_text",
    "hunyuan_v1_moe",
    "hy_v4",
    "llama4",
    "mellum",
    "minimax_m2",
    "mimo_v2_flash",
    "solar_open",
    "qwen3_next",
    "qwen3_5_moe",
    "qwen3_5_moe_text",
    "qwen4_exp",
    "qwen4_exp_text",
    "kimi_linear",
    "jamba",
    "nemotron_h",
    "granitemoehybrid",
    "sarvam_moe",
)
#: Types the GGUF export refuses, with the reason.
GGUF_REFUSED: dict[str, str] = {
    "granitemoe_swa": "the converter keeps gate|up fused under names the plan mapping cannot give",
    "deepseek_v4": "the converter writes its experts only from the released FP4 weights, as MXFP4",
    "param2moe": "the converter has no Param2MoEForCausalLM",
}
#: Causal-LM classes of MoE types that the vendored ``convert_hf_to_gguf.py`` (llama-cpp-python 0.3.36) registers;
#: a test checks this against the converter when the tools are built.
GGUF_CONVERTER_CLASSES: frozenset[str] = frozenset(
    {
        "AfmoeForCausalLM",
        "Cohere2MoeForCausalLM",
        "DbrxForCausalLM",
        "DeepseekV2ForCausalLM",
        "DeepseekV32ForCausalLM",
        "DeepseekV3ForCausalLM",
        "DeepseekV4ForCausalLM",
        "Dots1ForCausalLM",
        "Dots3NoteForCausalLM",
        "Ernie4_5_MoeForCausalLM",
        "ExaoneMoeForCausalLM",
        "Gemma4ForCausalLM",
        "Glm4MoeForCausalLM",
        "Glm4MoeLiteForCausalLM",
        "GlmMoeDsaForCausalLM",
        "GptOssForCausalLM",
        "GraniteMoeForCausalLM",
        "GraniteMoeHybridForCausalLM",
        "GraniteMoeSWAForCausalLM",
        "GraniteMoeSharedForCausalLM",
        "HYV3ForCausalLM",
        "HYV4ForCausalLM",
        "HunYuanMoEV1ForCausalLM",
        "JambaForCausalLM",
        "KimiLinearForCausalLM",
        "LagunaForCausalLM",
        "Lfm2MoeForCausalLM",
        "Llama4ForCausalLM",
        "MellumForCausalLM",
        "MiMoV2FlashForCausalLM",
        "MiniMaxM2ForCausalLM",
        "MixtralForCausalLM",
        "NemotronHForCausalLM",
        "OlmoeForCausalLM",
        "Qwen2MoeForCausalLM",
        "Qwen3MoeForCausalLM",
        "Qwen3NextForCausalLM",
        "Qwen3_5MoeForCausalLM",
        "Qwen4ExpForCausalLM",
        "SolarOpenForCausalLM",
    }
)


def support_rows(model_types: Sequence[str], causal_lm: dict[str, str]) -> list[tuple[str, ...]]:
    """One row per model type: (type, experts, plan/quantize, load_quantized/eval, compressed-tensors, GGUF).

    Args:
        model_types: the MoE types to list (the tests' walk of transformers' configs).
        causal_lm: model type -> its causal-LM class name (transformers' auto mapping).

    Returns:
        Rows of short cells; a "no" cell carries its reason.
    """
    rows = []
    for t in model_types:
        if t in NOT_BUILT:
            rows.append((t, f"not built: {NOT_BUILT[t]}", "", "", "", ""))
            continue
        found = t not in EXPERTS_NOT_MATRICES
        experts = "found (= state dict)" if found else f"none: {EXPERTS_NOT_MATRICES[t].split(';')[0]}"
        served = "yes (logits = simulated plan)" if t not in NOT_SERVED else f"no: {NOT_SERVED[t]}"
        if t in EXPERTS_NOT_MATRICES:
            ct = "no: no expert matrices"
        elif t in CT_NOT_LOADABLE:
            ct = "no: fused experts on disk" if CT_FUSED_REASON in CT_NOT_LOADABLE[t] else "no: transformers' loader"
        else:
            ct = "loads in transformers"
        if t in GGUF_TESTED:
            gguf = "exported, verified, run by llama.cpp"
        elif t in GGUF_REFUSED:
            gguf = f"refused: {GGUF_REFUSED[t]}"
        elif causal_lm.get(t) in GGUF_CONVERTER_CLASSES:
            gguf = "converter supports it (not tested here)"
        else:
            gguf = "converter has no mapping"
        rows.append((t, experts, "yes" if found else "nothing to plan", served, ct, gguf))
    return rows


def support_markdown(model_types: Sequence[str], causal_lm: dict[str, str]) -> str:
    """The Markdown table of :func:`support_rows` (docs/architectures.md holds it verbatim)."""
    head = "| model_type | experts | plan, quantize | load_quantized, eval | compressed-tensors | GGUF |"
    lines = [head, "|---|---|---|---|---|---|"]
    for row in support_rows(model_types, causal_lm):
        cells = (f"`{row[0]}`", *(cell.replace("|", "\\|") for cell in row[1:]))  # a "|" would end the cell
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "CT_CONV1D_REASON",
    "CT_FUSED_REASON",
    "CT_NOT_LOADABLE",
    "EXPERTS_NOT_MATRICES",
    "GGUF_CONVERTER_CLASSES",
    "GGUF_REFUSED",
    "GGUF_TESTED",
    "NOT_BUILT",
    "NOT_SERVED",
    "support_markdown",
    "support_rows",
]
