"""Run llama.cpp's ``convert_hf_to_gguf.py`` unchanged, naming the pre-tokenizer of GPT-2-style BPE tokenizers.

``python -m alphaq.export.convert_shim CONVERTER MODEL_DIR [converter arguments...]``

The converter identifies a BPE tokenizer's pre-tokenizer by hashing the tokens of a fixed text and looking
the hash up in a table of published models (``TextModel.get_vocab_base_pre``); a tokenizer trained locally,
like the bundled demo model's, is in no such table and the converter stops with "BPE pre-tokenizer was not
recognized". This shim changes three things. First, when that lookup fails **and** the checkpoint's ``tokenizer.json``
declares exactly GPT-2's pre-tokenization (a lone ``ByteLevel`` pre-tokenizer with ``use_regex: true`` and
``add_prefix_space: false``, no normalizer), it answers ``gpt-2``, the name llama.cpp's vocabulary loader maps
to that regex (``LLAMA_VOCAB_PRE_TYPE_GPT2``). Any other tokenizer still fails as before. Second, a large 2-D
tensor that the architecture passes through unchanged (the embedding, the output head) is written in row blocks
(:mod:`alphaq.export.convert_chunks`): same bytes, a fraction of the memory. Third, config and tokenizer details
that transformers 5 drops from what the converter reads are put back from the checkpoint's own files
(:mod:`alphaq.export.convert_fixes`). Everything else, tensor mapping and writing included, is the converter's own
code.

When the checkpoint is of an architecture whose converter requires the multi-token-prediction layer's ``mtp.*``
tensors (:data:`MTP_ARCHITECTURES`: Qwen3-Next, Qwen3.5) and holds none (``save_pretrained`` of transformers' class
drops them), it adds the converter's own ``--no-mtp``: the GGUF then declares no MTP layer it has no tensors for.

Before running the converter it refuses, with one line and exit status 1, a checkpoint the GGUF export cannot
make the planned types from (:func:`unsupported_reason`): GPT-OSS experts stored in MXFP4, which the converter
copies into the GGUF as MXFP4 and ``llama-quantize`` then cannot requantize, and the architectures of
:data:`UNMAPPED_ARCHITECTURES`.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

#: The llama.cpp pre-tokenizer name of GPT-2's byte-level regex.
GPT2_PRE = "gpt-2"


def is_gpt2_pretokenizer(tokenizer_json: dict[str, Any]) -> bool:
    """True when a ``tokenizer.json`` pre-tokenizes exactly as GPT-2 (byte-level BPE with GPT-2's regex)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    model = tokenizer_json.get("model") or {}
    return (
        model.get("type") == "BPE"
        and tokenizer_json.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True) is True
        and pre.get("add_prefix_space", False) is False
    )


#: Architectures the converter writes under names the plan's mapping (:func:`alphaq.export.llamacpp.gguf_names`)
#: cannot give, each with its one-line reason.
UNMAPPED_ARCHITECTURES: dict[str, str] = {
    "GraniteMoeSWAForCausalLM": (
        "GraniteMoeSWA is not supported by the GGUF export: its converter keeps gate and up fused (ffn_gate_up_exps, "
        "ffn_up_shexp), which the plan mapping cannot tell from GraniteMoeShared's split ones; use --format "
        "llama.cpp --fused-gate-up"
    ),
    "DeepseekV4ForCausalLM": (
        "DeepSeek-V4 is not supported by the GGUF export: the vendored converter writes its routed experts only "
        "from the released FP4 weights, as MXFP4, which llama-quantize cannot requantize to the planned types"
    ),
}


#: Architectures whose converter (``_QwenMtpMixin``) asserts on a checkpoint without ``mtp.*`` tensors.
MTP_ARCHITECTURES: frozenset[str] = frozenset(
    {
        "Qwen3NextForCausalLM",
        "Qwen3_5ForCausalLM",
        "Qwen3_5ForConditionalGeneration",
        "Qwen3_5MoeForCausalLM",
        "Qwen3_5MoeForConditionalGeneration",
    }
)


def tensor_names(model_dir: Path) -> set[str]:
    """Names of the tensors of a safetensors checkpoint folder (its index, else each shard's header)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    names: set[str] = set()
    for shard in sorted(model_dir.glob("*.safetensors")):
        with shard.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            names.update(k for k in json.loads(fh.read(size)) if k != "__metadata__")
    return names


def needs_no_mtp(config: dict[str, Any], model_dir: Path) -> bool:
    """True for a :data:`MTP_ARCHITECTURES` checkpoint that holds no ``mtp.*`` tensor (a transformers save)."""
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not MTP_ARCHITECTURES.intersection(architectures):
        return False
    return not any(n.startswith(("mtp.", "model.mtp.")) for n in tensor_names(model_dir))


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """Why a checkpoint (its ``config.json``) cannot be exported to planned GGUF types, or None.

    Args:
        config: the checkpoint's ``config.json``.

    Returns:
        One line naming the problem and the fix, or None when the converter may run.
    """
    architectures = config.get("architectures") or []
    for arch in architectures if isinstance(architectures, list) else []:
        if arch in UNMAPPED_ARCHITECTURES:
            return UNMAPPED_ARCHITECTURES[arch]
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower() if isinstance(quant, dict) else ""
    if method == "mxfp4":
        return (  # under 300 characters: gguf_io keeps that much of the converter's last error line
            "MXFP4 experts (quantization_config mxfp4) are not supported by the GGUF export: llama-quantize cannot "
            "requantize them to the planned types; plan and export a bf16 copy (Mxfp4Config(dequantize=True))"
        )
    return None


def main(argv: list[str]) -> None:
    """Run the converter at ``argv[0]`` on ``argv[1:]`` (its own command line) with the pre-tokenizer fallback."""
    converter, args = Path(argv[0]).resolve(), argv[1:]
    model_dir = next((Path(a) for a in args if not a.startswith("-") and Path(a).is_dir()), None)
    config_path = model_dir / "config.json" if model_dir is not None else None
    if model_dir is not None and config_path is not None and config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        reason = unsupported_reason(config)
        if reason is not None:
            print(f"alphaq: {reason}", file=sys.stderr)
            raise SystemExit(1)
        if "--no-mtp" not in args and needs_no_mtp(config, model_dir):
            print(f"alphaq: {model_dir} holds no mtp.* tensors; converting with --no-mtp", file=sys.stderr)
            args = [*args, "--no-mtp"]
    sys.path.insert(0, str(converter.parent))
    sys.path.insert(1, str(converter.parent / "gguf-py"))
    import gguf
    from conversion.base import ModelBase, TextModel  # llama.cpp's converter package, beside convert_hf_to_gguf.py

    from alphaq.export import convert_chunks, convert_fixes

    quantized = (
        config_path is not None
        and config_path.is_file()
        and bool(json.loads(config_path.read_text(encoding="utf-8")).get("quantization_config"))
    )
    if model_dir is not None and not quantized:  # a quantized checkpoint's tensors are rewritten before the loop
        big = convert_chunks.large_float_tensors(model_dir, convert_chunks.min_bytes_from_env())
        convert_chunks.install(ModelBase, gguf.LazyChunkedTensor, big)

    original = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            path = (model_dir or Path(self.dir_model)) / "tokenizer.json"
            if path.is_file() and is_gpt2_pretokenizer(json.loads(path.read_text(encoding="utf-8"))):
                print(
                    f"alphaq: unknown BPE pre-tokenizer hash; {path} declares GPT-2's byte-level "
                    f"pre-tokenization, using tokenizer.ggml.pre = {GPT2_PRE!r}",
                    file=sys.stderr,
                )
                return GPT2_PRE
            raise

    TextModel.get_vocab_base_pre = get_vocab_base_pre  # type: ignore[method-assign]
    convert_fixes.install(model_dir)
    sys.argv = [str(converter), *args]
    runpy.run_path(str(converter), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
