"""Run llama.cpp's ``convert_hf_to_gguf.py`` unchanged, naming the pre-tokenizer of GPT-2-style BPE tokenizers.

``python -m alphaq.export.convert_shim CONVERTER MODEL_DIR [converter arguments...]``

The converter identifies a BPE tokenizer's pre-tokenizer by hashing the tokens of a fixed text and looking
the hash up in a table of published models (``TextModel.get_vocab_base_pre``); a tokenizer trained locally,
like the bundled demo model's, is in no such table and the converter stops with "BPE pre-tokenizer was not
recognized". This shim changes one thing: when that lookup fails **and** the checkpoint's ``tokenizer.json``
declares exactly GPT-2's pre-tokenization (a lone ``ByteLevel`` pre-tokenizer with ``use_regex: true`` and
``add_prefix_space: false``, no normalizer), it answers ``gpt-2``, the name llama.cpp's vocabulary loader maps
to that regex (``LLAMA_VOCAB_PRE_TYPE_GPT2``). Any other tokenizer still fails as before. Everything else,
tensor mapping and writing included, is the converter's own code.
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


def main(argv: list[str]) -> None:
    """Run the converter at ``argv[0]`` on ``argv[1:]`` (its own command line) with the pre-tokenizer fallback."""
    converter, args = Path(argv[0]).resolve(), argv[1:]
    model_dir = next((Path(a) for a in args if not a.startswith("-") and Path(a).is_dir()), None)
    sys.path.insert(0, str(converter.parent))
    sys.path.insert(1, str(converter.parent / "gguf-py"))
    from conversion.base import TextModel  # llama.cpp's converter package, beside convert_hf_to_gguf.py

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
    sys.argv = [str(converter), *args]
    runpy.run_path(str(converter), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
