"""Config and tokenizer details that transformers 5 changes under llama.cpp's converter, put back as released.

The vendored ``convert_hf_to_gguf.py`` reads a checkpoint's hyperparameters through ``AutoConfig`` and its tokenizer
through ``AutoTokenizer``, and was written against the released ``config.json`` spellings and transformers 4's
tokenizer attributes. Where transformers 5.25 knows a type natively it drops or moves some of them, so the
converter fails on real checkpoints too (not only on the tests' tiny ones). Each function below restores one thing,
from the checkpoint's own files, and never overrides a value the converter already has:

* :func:`raw_hparams`: Dots3Note's top-level keys (``swa_*``, ``use_dsa``, ``first_k_dense_replace``).
* :func:`hub_aliases`: a config class's ``attribute_map`` spellings present in ``config.json`` (SarvamMoE's
  ``num_experts``).
* :func:`shared_rotary_factor`: one ``partial_rotary_factor`` shared by every layer type (MiMo-V2-Flash).
* :func:`restore_add_bos_token`: ``add_bos_token`` of ``tokenizer_config.json`` (DeepSeek-V3.2 asserts it).

Runs inside the converter's process (:mod:`alphaq.export.convert_shim`), after its package is importable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Architectures whose converter reads config.json keys that the installed transformers' config class folds away
#: (AutoConfig succeeds, so the converter never sees them): Dots3NoteTextConfig moves swa_* into per_layer_config
#: and pops use_dsa and first_k_dense_replace, which dots3.py (and DeepseekV2Model) read at the top level.
RAW_HPARAMS_ARCHITECTURES = frozenset(
    {"Dots3NoteForCausalLM", "Dots3NoteForConditionalGeneration", "Dots3NoteTextForCausalLM"}
)


def raw_hparams(config: dict[str, Any], raw: dict[str, Any]) -> None:
    """Put back the top-level ``config.json`` keys AutoConfig dropped, for :data:`RAW_HPARAMS_ARCHITECTURES` only.

    Args:
        config: the converter's hyperparameters (updated in place).
        raw: the checkpoint's ``config.json``.
    """
    archs = raw.get("architectures") or []
    if isinstance(archs, list) and RAW_HPARAMS_ARCHITECTURES.intersection(archs):
        config.update({k: v for k, v in raw.items() if k not in config})


def hub_aliases(config: dict[str, Any], raw: dict[str, Any]) -> None:
    """Keep the hub's names of renamed attributes in the converter's hyperparameters.

    The converter reads ``AutoConfig.from_pretrained(...).to_dict()``; when transformers knows a model type natively
    its dict holds only the canonical names, and a checkpoint's own spelling of an attribute that the config class
    aliases (``attribute_map``, e.g. SarvamMoE's ``num_experts`` -> ``n_routed_experts``) is lost, while converters
    written for the remote-code configs look that spelling up. Each such alias present in ``config.json`` is put
    back (never overriding a key the dict has).

    Args:
        config: the converter's hyperparameters (updated in place).
        raw: the checkpoint's ``config.json``.
    """
    from transformers import CONFIG_MAPPING

    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        return
    for alias in CONFIG_MAPPING[model_type].attribute_map:
        if alias in raw and alias not in config:
            config[alias] = raw[alias]


def shared_rotary_factor(config: dict[str, Any], raw: dict[str, Any]) -> None:
    """Give a per-layer-type ``rope_parameters`` the ``partial_rotary_factor`` all its layer types share.

    transformers 5 writes (and ``AutoConfig`` returns) ``rope_parameters`` per layer type (``full_attention``,
    ``sliding_attention``) for models such as MiMo-V2-Flash, even from a hub ``config.json`` with one top-level
    ``partial_rotary_factor``; converters written for the flat form read ``rope_parameters["partial_rotary_factor"]``
    (MiMo-V2: ``KeyError``). When every layer type has the same factor it is the model's, and it is copied to the
    top level; different factors (Gemma 4) are left alone, as converters read those per layer type.

    Args:
        config: the converter's hyperparameters (updated in place).
        raw: the checkpoint's ``config.json`` (unused).
    """
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "partial_rotary_factor" in rope:
        return
    per_type = [v for v in rope.values() if isinstance(v, dict)]
    factors = {v.get("partial_rotary_factor") for v in per_type}
    if per_type and len(factors) == 1 and None not in factors:
        config["rope_parameters"] = {**rope, "partial_rotary_factor": factors.pop()}


#: The hyperparameter restorations, in order.
HPARAM_FIXES = (raw_hparams, hub_aliases, shared_rotary_factor)


def patch_load_hparams(fixes: Any = HPARAM_FIXES) -> None:
    """Make the converter's ``ModelBase.load_hparams`` apply ``fixes`` (``fix(config, raw_config_json)``) to what it
    returns, for a Hugging Face checkpoint with a ``config.json``."""
    from conversion.base import ModelBase

    original = ModelBase.load_hparams

    def load_hparams(dir_model: Path, is_mistral_format: bool) -> Any:
        config = original(dir_model, is_mistral_format)
        path = Path(dir_model) / "config.json"
        if is_mistral_format or not isinstance(config, dict) or not path.is_file():
            return config
        raw = json.loads(path.read_text(encoding="utf-8"))
        for fix in fixes:
            fix(config, raw)
        return config

    ModelBase.load_hparams = staticmethod(load_hparams)  # type: ignore[method-assign]


def restore_add_bos_token(model_dir: Path | None) -> None:
    """Make ``AutoTokenizer`` report the ``add_bos_token`` of the checkpoint's ``tokenizer_config.json``.

    transformers 5 drops ``add_bos_token`` from ``tokenizer_config.json`` whenever a ``tokenizer.json`` is present
    (the attribute is then always False), while converters written against transformers 4 read it: DeepSeek-V3.2's
    ``set_vocab`` asserts it is true. Only the attribute is set; the tokenizer's encoding (its ``tokenizer.json``
    post-processor) is left as loaded.
    """
    path = model_dir / "tokenizer_config.json" if model_dir is not None else None
    if path is None or not path.is_file():
        return
    value = json.loads(path.read_text(encoding="utf-8")).get("add_bos_token")
    if not isinstance(value, bool):
        return
    import transformers

    original = transformers.AutoTokenizer.from_pretrained.__func__

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        tokenizer = original(cls, *args, **kwargs)
        if hasattr(tokenizer, "_add_bos_token"):
            object.__setattr__(tokenizer, "_add_bos_token", value)
        return tokenizer

    transformers.AutoTokenizer.from_pretrained = classmethod(from_pretrained)  # type: ignore[method-assign]


def install(model_dir: Path | None) -> None:
    """Install every restoration above (before the converter runs).

    Args:
        model_dir: the checkpoint folder (None: the tokenizer one is skipped).
    """
    patch_load_hparams()
    restore_add_bos_token(model_dir)


__all__ = [
    "HPARAM_FIXES",
    "RAW_HPARAMS_ARCHITECTURES",
    "hub_aliases",
    "install",
    "patch_load_hparams",
    "raw_hparams",
    "restore_add_bos_token",
    "shared_rotary_factor",
]
