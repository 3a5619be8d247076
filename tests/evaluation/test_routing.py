from __future__ import annotations

import numpy as np
import torch

from alphaq.evaluation.routing import routing_stats
from tests.fixtures.tiny_models import E, L


def test_routing_counts_match_the_model_router_logits(tiny_checkpoints):
    import transformers

    model = transformers.MixtralForCausalLM.from_pretrained(tiny_checkpoints["mixtral"], dtype=torch.float32).eval()
    ids = torch.randint(3, 90, (64,), generator=torch.Generator().manual_seed(0))
    stats = routing_stats(model, ids, context=32)
    assert stats.counts.shape == (L, E) and stats.tokens == 64 and stats.top_k == 2
    assert (stats.counts.sum(axis=1) == 64 * 2).all()
    # Cross-check with transformers' own router logits.
    expected = np.zeros((L, E), dtype=np.int64)
    with torch.no_grad():
        for w in range(2):
            out = model(ids[w * 32 : (w + 1) * 32].unsqueeze(0), output_router_logits=True)
            for layer, logits in enumerate(out.router_logits):
                expected[layer] += torch.bincount(logits.topk(2, dim=-1).indices.reshape(-1), minlength=E).numpy()
    np.testing.assert_array_equal(stats.counts, expected)
    shares = stats.shares()
    assert abs(sum(shares[(0, e)] for e in range(E)) - 1.0) < 1e-12


def test_random_token_prior_is_seeded_and_counts_every_token(tiny_checkpoints):
    import transformers

    from alphaq.evaluation.routing import random_token_routing

    model = transformers.MixtralForCausalLM.from_pretrained(tiny_checkpoints["mixtral"], dtype=torch.float32).eval()
    a = random_token_routing(model, context=16, windows=3, seed=5)
    b = random_token_routing(model, context=16, windows=3, seed=5)
    c = random_token_routing(model, context=16, windows=3, seed=6)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, c.counts)
    assert a.tokens == 48 and (a.counts.sum(axis=1) == 48 * 2).all()


def test_random_token_prior_ranks_the_bundled_models_experts_like_real_text(shared_data_dir):
    """The data-free prior (no text read) ranks experts' routing shares like WikiText-2 does (0.83 on 128 windows
    of the bundled model; here 16 windows of each)."""
    from scipy.stats import spearmanr

    from alphaq.evaluation.routing import random_token_routing
    from alphaq.load.model import load_model, tokenize_text
    from alphaq.zoo.demo import demo_model_path

    model, tokenizer = load_model(demo_model_path(), device="cpu", dtype=torch.float32)
    text = (shared_data_dir / "wikitext-2" / "test.txt").read_text(encoding="utf-8")[:400_000]
    ids = torch.tensor(tokenize_text(tokenizer, text))
    real = routing_stats(model, ids, context=256, max_windows=16).shares()
    prior = random_token_routing(model, context=256, windows=16).shares()
    keys = sorted(real)
    assert abs(sum(prior[(0, e)] for e in range(8)) - 1.0) < 1e-12
    assert spearmanr([prior[k] for k in keys], [real[k] for k in keys])[0] > 0.7
