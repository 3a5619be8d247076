"""A tokenizer whose ids the model's embedding cannot look up is refused in one line, before any forward pass."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from alphaq.errors import CheckpointError
from alphaq.load.model import check_token_ids


def test_ids_beyond_the_vocabulary_are_refused() -> None:
    model = SimpleNamespace(config=SimpleNamespace(vocab_size=64))
    check_token_ids([0, 5, 63], model, "text.txt")
    with pytest.raises(CheckpointError, match="token id 4000 but the model's vocabulary has 64 entries") as err:
        check_token_ids([1, 4000, 2], model, "text.txt")
    assert "\n" not in str(err.value) and "tokenizer" in str(err.value)
