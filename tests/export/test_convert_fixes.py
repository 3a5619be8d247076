"""The converter-side restorations of ``alphaq.export.convert_fixes`` on plain dicts (the end-to-end effect is in
``tests/export/test_gguf_all_types.py``: dots3-note, SarvamMoE, MiMo-V2-Flash and DeepSeek-V3.2 convert with them)."""

from __future__ import annotations

from alphaq.export.convert_fixes import hub_aliases, raw_hparams, shared_rotary_factor


def test_raw_hparams_only_for_dots3_note_and_never_overriding() -> None:
    raw = {"architectures": ["Dots3NoteForCausalLM"], "swa_head_dim": 96, "use_dsa": True, "hidden_size": 7}
    config = {"hidden_size": 256}
    raw_hparams(config, raw)
    assert config == {
        "hidden_size": 256,
        "architectures": ["Dots3NoteForCausalLM"],
        "swa_head_dim": 96,
        "use_dsa": True,
    }
    other = {"hidden_size": 256}
    raw_hparams(other, {**raw, "architectures": ["Qwen3MoeForCausalLM"]})
    assert other == {"hidden_size": 256}


def test_hub_aliases_put_back_the_released_spelling() -> None:
    config = {"n_routed_experts": 4, "n_shared_experts": 1}
    hub_aliases(config, {"model_type": "sarvam_moe", "num_experts": 4, "num_shared_experts": 1, "unrelated": 3})
    assert config == {"n_routed_experts": 4, "n_shared_experts": 1, "num_experts": 4, "num_shared_experts": 1}
    untouched = {"n_routed_experts": 4}
    hub_aliases(untouched, {"model_type": "not_a_transformers_type", "num_experts": 8})
    assert untouched == {"n_routed_experts": 4}


def test_shared_rotary_factor_is_copied_only_when_every_layer_type_agrees() -> None:
    same = {
        "rope_parameters": {
            "full_attention": {"partial_rotary_factor": 0.334},
            "sliding_attention": {"partial_rotary_factor": 0.334},
        }
    }
    shared_rotary_factor(same, {})
    assert same["rope_parameters"]["partial_rotary_factor"] == 0.334
    differ = {
        "rope_parameters": {
            "full_attention": {"partial_rotary_factor": 0.25},
            "sliding_attention": {"partial_rotary_factor": 1.0},
        }
    }
    shared_rotary_factor(differ, {})
    assert "partial_rotary_factor" not in differ["rope_parameters"]  # Gemma 4: read per layer type
    flat = {"rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": 0.5}}
    shared_rotary_factor(flat, {})
    assert flat == {"rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": 0.5}}
