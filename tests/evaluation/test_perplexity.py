from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from alphaq.errors import ConfigError
from alphaq.evaluation.perplexity import model_context, perplexity, window_starts


class TinyLM(torch.nn.Module):
    """Embedding + linear head: logits depend on the current token only."""

    def __init__(self, vocab: int = 11, dim: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, vocab)
        self.config = SimpleNamespace(max_position_embeddings=4096)

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.head(self.emb(input_ids)))


def hand_nll(model: TinyLM, ids: list[int], context: int) -> tuple[float, int]:
    total, count = 0.0, 0
    with torch.no_grad():
        for w in range(len(ids) // context):
            window = ids[w * context : (w + 1) * context]
            for t in range(context - 1):
                logits = model.head(model.emb(torch.tensor([window[t]])))[0]
                total -= float(torch.log_softmax(logits.double(), dim=-1)[window[t + 1]])
                count += 1
    return total / count, count


def test_perplexity_equals_hand_computation_and_drops_remainder() -> None:
    model = TinyLM()
    ids = [int(i) for i in torch.randint(0, 11, (23,), generator=torch.Generator().manual_seed(1))]
    result = perplexity(model, ids, 5, batch_size=2)
    nll, count = hand_nll(model, ids, 5)
    assert result.windows == 4 and result.tokens == count == 16
    assert result.dropped_tokens == 3
    assert result.nll == pytest.approx(nll, rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(nll), rel=1e-5)
    assert result.status == "ok"


def test_max_windows_and_short_text() -> None:
    model = TinyLM()
    ids = list(range(11)) * 3
    first = perplexity(model, ids, 6, max_windows=2)
    assert first.windows == 2 and first.tokens == 10
    assert first.nll == pytest.approx(hand_nll(model, ids[:12], 6)[0], rel=1e-5)
    short = perplexity(model, ids[:4], 6)
    assert short.status == "no_window" and math.isnan(short.ppl) and short.dropped_tokens == 4


def test_sliding_stride_scores_each_token_once() -> None:
    model = TinyLM()
    ids = list(range(11)) * 2  # 22 tokens
    assert window_starts(22, 8, 4) == [0, 4, 8, 12]
    result = perplexity(model, ids, 8, stride=4)
    assert result.tokens == 7 + 3 * 4
    # unigram-like model: the sliding result equals scoring ids[0:20] as one sequence
    assert result.nll == pytest.approx(hand_nll(model, ids[:20], 20)[0], rel=1e-5)


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        perplexity(TinyLM(), [1, 2, 3], 4, stride=5)
    with pytest.raises(ConfigError):
        perplexity(TinyLM(), [1, 2, 3], 1)
    assert model_context(TinyLM()) == 2048


def test_window_cost_is_dominated_by_the_logits_of_a_large_vocabulary() -> None:
    from alphaq.evaluation.batch_memory import HIDDEN_COPIES, LOGITS_COPIES, WindowCost

    cost = WindowCost(context=2048, vocab=157184, hidden=2048, heads=16)
    logits = 2048 * 157184 * 4 * LOGITS_COPIES
    assert cost.nbytes == int(logits + 2048 * 2048 * 4 * HIDDEN_COPIES + 16 * 2048 * 2048 * 4)
    assert 3.8e9 < cost.nbytes < 4.5e9  # ~1.3 GB per float32 copy of the logits
    with pytest.raises(ValueError, match="vocab"):
        WindowCost(context=8, vocab=0, hidden=4)


def test_fit_batch_size_caps_the_batch_to_half_the_available_memory() -> None:
    from alphaq.evaluation.batch_memory import WindowCost, fit_batch_size

    cost = WindowCost(context=2048, vocab=157184, hidden=2048, heads=16)  # ~4.2 GB a window
    assert fit_batch_size(8, cost, 24 * 2**30) == 2  # 12 GiB usable: 2 windows, not 8 (about 20 GiB)
    assert fit_batch_size(8, cost, 2**30) == 1  # never below one window
    assert fit_batch_size(8, cost, 200 * 2**30) == 8  # never above the requested batch
    assert fit_batch_size(8, cost, None) == 8  # unknown memory: as requested
    small = WindowCost(context=64, vocab=96, hidden=32)
    assert fit_batch_size(8, small, 2**30) == 8


def test_memory_batch_size_reads_the_model_config_and_the_machine() -> None:
    from alphaq.evaluation.batch_memory import available_memory, memory_batch_size

    free = available_memory("cpu")
    assert free is not None and free > 0
    model = TinyLM()
    assert memory_batch_size(model, 8, 8, "cpu") == 8  # no vocab_size in its config: as requested
    model.config = SimpleNamespace(vocab_size=11, hidden_size=5)
    assert memory_batch_size(model, 8, 8, "cpu") == 8
    model.config = SimpleNamespace(vocab_size=10**9, hidden_size=5)  # 12 GB of logits per 8-token window... x 1000
    assert memory_batch_size(model, 1000, 8, "cpu") == 1
    result = perplexity(model, list(range(11)) * 3, 8)  # runs one window a pass, same numbers
    assert result.windows == 4 and math.isfinite(result.ppl)
