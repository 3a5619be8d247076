"""KL divergence from the reference model: known values, zero against itself, positive under a perturbation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from alphaq.errors import ConfigError
from alphaq.evaluation import divergence
from alphaq.evaluation.bootstrap import paired_mean_bootstrap
from alphaq.evaluation.divergence import DivergenceMeter, ReferenceLogprobs, divergence_between, token_divergence


def test_token_divergence_known_values() -> None:
    ref = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.8]], dtype=torch.float64))
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64))
    kld, same = token_divergence(ref, logits)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kld[0].item() == pytest.approx(expected, rel=1e-12)
    assert kld[1].item() == pytest.approx(0.0, abs=1e-15)
    assert same.tolist() == [True, True]
    _, flipped = token_divergence(ref, torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1]], dtype=torch.float64)))
    assert flipped.tolist() == [True, False]


def test_meter_sums_windows_and_spills_to_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(divergence, "IN_MEMORY_VALUES", 10)
    gen = torch.Generator().manual_seed(0)
    ref_logits = torch.randn(3, 4, 5, generator=gen)  # [W, T, V]
    cand_logits = ref_logits + 0.3 * torch.randn(3, 4, 5, generator=gen)
    store = ReferenceLogprobs(3, spill_dir=tmp_path)
    store.record([0, 1], ref_logits[:2])
    assert (tmp_path / "reference_logprobs.f16").is_file()
    store.record([2], ref_logits[2:])
    meter = DivergenceMeter(store)
    meter.record([2], cand_logits[2:])
    meter.record([0, 1], cand_logits[:2])
    result = meter.result()
    kld, same = token_divergence(torch.log_softmax(ref_logits, -1).half(), torch.log_softmax(cand_logits, -1).half())
    assert result.tokens == 12 and result.windows == 3
    assert result.mean_kld == pytest.approx(kld.mean().item(), rel=1e-9)
    assert result.window_kld == pytest.approx(tuple(kld.sum(1).tolist()), rel=1e-9)
    assert result.same_top == pytest.approx(same.double().mean().item())
    assert result.median_kld <= result.p99_kld <= result.max_kld
    store.close()
    assert not (tmp_path / "reference_logprobs.f16").exists()


def test_unscored_window_is_a_one_line_error() -> None:
    store = ReferenceLogprobs(2)
    store.record([0], torch.zeros(1, 3, 4))
    with pytest.raises(ConfigError, match="window 1 has no reference"):
        DivergenceMeter(store).record([1], torch.zeros(1, 3, 4))
    with pytest.raises(ConfigError, match="no window was scored"):
        DivergenceMeter(store).result()
    store.record([5], torch.zeros(1, 3, 4))  # past the stored windows: ignored by both sides
    meter = DivergenceMeter(store)
    meter.record([0, 5], torch.zeros(2, 3, 4))
    assert meter.result().windows == 1 and meter.result().mean_kld == 0.0


@pytest.fixture(scope="module")
def demo_lm():
    from alphaq.load.model import load_model

    model, tokenizer = load_model()
    ids = torch.randint(0, model.config.vocab_size, (4 * 64,), generator=torch.Generator().manual_seed(1))
    return model, ids


def test_model_against_itself_is_zero(demo_lm) -> None:
    model, ids = demo_lm
    result = divergence_between(model, model, ids, 64)
    assert result.windows == 4 and result.tokens == 4 * 63
    assert result.max_kld == 0.0 and result.mean_kld == 0.0
    assert result.same_top == 1.0


def test_known_perturbation_is_positive_with_an_interval(demo_lm) -> None:
    model, ids = demo_lm
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        head = noisy.get_output_embeddings().weight
        head.add_(0.5 * head.std() * torch.randn(head.shape, generator=torch.Generator().manual_seed(2)))
    result = divergence_between(model, noisy, ids, 64, batch_size=3)
    assert result.mean_kld > 0.01
    assert result.p99_kld > result.median_kld > 0
    assert result.same_top < 1.0
    ci = paired_mean_bootstrap(result.window_kld, np.zeros(result.windows), result.window_tokens, resamples=200)
    assert ci.delta == pytest.approx(result.mean_kld)
    assert ci.low > 0 and ci.significant
