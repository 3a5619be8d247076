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
            out = model(ids[w * 32:(w + 1) * 32].unsqueeze(0), output_router_logits=True)
            for layer, logits in enumerate(out.router_logits):
                expected[layer] += torch.bincount(logits.topk(2, dim=-1).indices.reshape(-1), minlength=E).numpy()
    np.testing.assert_array_equal(stats.counts, expected)
    shares = stats.shares()
    assert abs(sum(shares[(0, e)] for e in range(E)) - 1.0) < 1e-12
