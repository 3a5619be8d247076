"""The model layouts the zoo trains: a Mixtral (the bundled demo) and a Qwen2-MoE with a shared expert.

Pure constructors: a :class:`~alphaq.zoo.train_demo.DemoTrainConfig` in, a freshly initialised transformers model out
(seeded by the caller); :func:`untie_embeddings` gives a trained tied model its own output head before saving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alphaq.zoo.train_demo import DemoTrainConfig


def build_model(cfg: DemoTrainConfig, eos_id: int, pad_id: int) -> Any:
    """A freshly initialised ``MixtralForCausalLM`` or ``Qwen2MoeForCausalLM`` (seed set by the caller)."""
    if cfg.architecture == "qwen2_moe":
        return _build_qwen2_moe(cfg, eos_id, pad_id)
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(
        **_shared_config(cfg, eos_id, pad_id),
        intermediate_size=cfg.intermediate_size,
        num_local_experts=cfg.num_experts,
        rope_theta=10000.0,
    )
    config._experts_implementation = cfg.experts_implementation
    return MixtralForCausalLM(config)


def _shared_config(cfg: DemoTrainConfig, eos_id: int, pad_id: int) -> dict[str, Any]:
    """Config fields both layouts take alike (tied embeddings, the recipe's sizes and router loss)."""
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "num_experts_per_tok": cfg.top_k,
        "max_position_embeddings": cfg.context,
        "initializer_range": cfg.init_std,
        "router_aux_loss_coef": cfg.router_aux_loss_coef,
        "output_router_logits": False,
        "tie_word_embeddings": True,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }


def _build_qwen2_moe(cfg: DemoTrainConfig, eos_id: int, pad_id: int) -> Any:
    """Qwen2-MoE layout: every layer sparse, ``num_experts`` routed experts of width ``intermediate_size``
    (top-``top_k``, weights not renormalised) plus a gated shared expert of width ``shared_expert_size``."""
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    config = Qwen2MoeConfig(
        **_shared_config(cfg, eos_id, pad_id),
        intermediate_size=cfg.shared_expert_size or cfg.intermediate_size,
        moe_intermediate_size=cfg.intermediate_size,
        shared_expert_intermediate_size=cfg.shared_expert_size,
        num_experts=cfg.num_experts,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    config._experts_implementation = cfg.experts_implementation
    return Qwen2MoeForCausalLM(config)


def untie_embeddings(model: Any) -> None:
    """Give the output head its own copy of the tied embedding (the same function; in place).

    llama.cpp's loaders of some layouts (``qwen2moe``) require an ``output.weight`` tensor, which the converter only
    writes for an untied head; real Qwen-MoE checkpoints are untied too.
    """
    import torch

    if not getattr(model.config, "tie_word_embeddings", False):
        return
    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.config.tie_word_embeddings = False
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    if text is not None and text is not model.config:
        text.tie_word_embeddings = False


__all__ = ["build_model", "untie_embeddings"]
