"""Byte-level BPE tokenizer for the bundled demo model (trained with the ``tokenizers`` library)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)


def train_bpe_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a GPT-2 style byte-level BPE tokenizer.

    Args:
        texts: training documents.
        vocab_size: size of the vocabulary, special tokens and the 256 byte symbols included.
        min_frequency: minimum pair count for a merge.

    Returns:
        A ``tokenizers.Tokenizer`` with ``<|endoftext|>`` (id 0) and ``<|pad|>`` (id 1).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer, length=len(texts))
    return tokenizer


def to_transformers(tokenizer: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a trained tokenizer for ``save_pretrained`` / ``AutoTokenizer``.

    Args:
        tokenizer: the trained ``tokenizers.Tokenizer``.
        model_max_length: the model's context length.

    Returns:
        A ``PreTrainedTokenizerFast`` with eos/bos/unk ``<|endoftext|>`` and pad ``<|pad|>``.
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
