"""The whole-model GGUF planner (pure): budgets, exact file sizes, importance forms and the knapsack."""

from __future__ import annotations

import numpy as np
import pytest

from alphaq.errors import ConfigError, PlanError
from alphaq.export.gguf_measure import GgufMeasurements, GgufWeight, padded
from alphaq.planning import gguf_model as gm

TYPES = ("Q2_K", "Q4_K", "Q8_0", "F16")


def measurements() -> GgufMeasurements:
    """Three tensors: an embedding [4096, 256], an attention [256, 256] and 4 experts [4, 512, 256]."""
    weights = (
        GgufWeight("token_embd.weight", "embedding", None, (4096, 256), 4096 * 256),
        GgufWeight("blk.0.attn_q.weight", "attention", 0, (256, 256), 256 * 256),
        GgufWeight("blk.0.ffn_up_exps.weight", "expert", 0, (4, 512, 256), 4 * 512 * 256),
    )
    bpw = {"Q2_K": 84 / 256, "Q4_K": 144 / 256, "Q8_0": 34 / 32, "F16": 2.0}
    nbytes = np.array([[int(w.params * bpw[t]) for t in TYPES] for w in weights], dtype=np.int64)
    rel = np.array([0.09, 0.005, 3e-5, 0.0])  # relative squared error of each type
    norms = np.array([10.0, 4.0, 20.0])
    sq = norms[:, None] * rel[None, :]
    expert = {"blk.0.ffn_up_exps.weight": np.outer(rel, [8.0, 6.0, 4.0, 2.0])}  # [K, E], sums to 20 * rel
    return GgufMeasurements(
        weights=weights,
        types=TYPES,
        nbytes=nbytes,
        sq_error=sq,
        sq_norm=norms,
        expert_sq_error=expert,
        weighted_error={"fisher": sq * np.array([[5.0], [1.0], [0.1]])},
        expert_weighted_error={"fisher": {k: v * 0.1 for k, v in expert.items()}},
        kurtosis={w.name: np.ones(w.experts) for w in weights},
        stored_types=tuple(TYPES for _ in weights),
        fixed_bytes=100_000,
        alignment=32,
        total_params=sum(w.params for w in weights) + 1000,
        f16_file_bytes=0,
    )


@pytest.mark.parametrize(
    ("text", "kind", "value", "preset"),
    [
        ("7.5MB", "bytes", 7.5e6, None),
        ("1GiB", "bytes", 2**30, None),
        ("3.5", "bits", 3.5, None),
        ("q3_k_m", "preset", 0.0, "Q3_K_M"),
        ("Q4_K_S", "preset", 0.0, "Q4_K_S"),
    ],
)
def test_budget_forms(text: str, kind: str, value: float, preset: str | None) -> None:
    budget = gm.GgufBudget.parse(text)
    assert (budget.kind, budget.value, budget.preset) == (kind, value, preset)


@pytest.mark.parametrize("text", ["Q9_K", "IQ9_XS", "Q3_K_XL"])
def test_unknown_preset_is_one_line_listing_the_presets(text: str) -> None:
    with pytest.raises(ConfigError, match="not a llama-quantize preset") as err:
        gm.GgufBudget.parse(text)
    assert "Q3_K_M" in str(err.value) and "\n" not in str(err.value)


def test_resolved_budgets() -> None:
    m = measurements()
    assert gm.resolve_budget(gm.GgufBudget.parse("3.5"), m) == int(3.5 * m.total_params / 8)
    assert gm.resolve_budget(gm.GgufBudget.parse("2MB"), m) == 2_000_000
    assert gm.resolve_budget(gm.GgufBudget.parse("Q3_K_M"), m, lambda p: {"Q3_K_M": 1234}[p]) == 1234
    with pytest.raises(PlanError, match="needs llama-quantize"):
        gm.resolve_budget(gm.GgufBudget.parse("Q3_K_M"), m)


def test_file_size_is_fixed_bytes_plus_aligned_tensors() -> None:
    m = measurements()
    choice = np.array([0, 1, 2])
    expected = 100_000 + sum(-(-int(m.nbytes[i, k]) // 32) * 32 for i, k in enumerate(choice))
    assert gm.file_bytes(m, choice) == expected
    assert padded(33, 32) == 64 and padded(64, 32) == 64


def test_knapsack_fills_the_budget_with_the_best_types() -> None:
    m = measurements()
    cost = gm.importance_costs(m, "fisher", gm.Signals(fisher_error=m.weighted_error["fisher"]))
    smallest = gm.file_bytes(m, np.zeros(3, dtype=int))
    capacity = smallest + int(m.nbytes[0, 1] - m.nbytes[0, 0]) + 64  # room to raise exactly the embedding to Q4_K
    a = gm.solve_gguf(m, cost, capacity)
    assert a.types == {"token_embd.weight": "Q4_K", "blk.0.attn_q.weight": "Q2_K", "blk.0.ffn_up_exps.weight": "Q2_K"}
    assert a.file_bytes <= capacity and a.status == "optimal"
    exhaustive = min(
        (float(sum(cost[i, k] for i, k in enumerate(c))), c)
        for c in np.ndindex(4, 4, 4)
        if gm.file_bytes(m, np.array(c)) <= capacity
    )
    assert a.objective == pytest.approx(exhaustive[0])


def test_budget_below_the_smallest_file_is_refused_in_one_line() -> None:
    m = measurements()
    with pytest.raises(PlanError, match="below the smallest GGUF") as err:
        gm.solve_gguf(m, m.sq_error, 1000)
    assert "raise --budget" in str(err.value) and "\n" not in str(err.value)


def test_importance_forms() -> None:
    m = measurements()
    rel = gm.importance_costs(m, "relative")
    assert np.allclose(rel, rel[0])  # every tensor alike
    assert np.array_equal(gm.importance_costs(m, "absolute"), m.sq_error)
    alpha = {"blk.0.ffn_up_exps.weight": np.array([2.0, 2.0, 4.0, 4.0]), "blk.0.attn_q.weight": np.array([2.0])}
    cost = gm.importance_costs(m, "alpha", gm.Signals(alpha=alpha, gamma=1.0))
    # median alpha 2 over the five matrices: factor 1 for alpha 2, 0.5 for alpha 4 (heavier tails count more)
    expected = m.expert_sq_error["blk.0.ffn_up_exps.weight"] @ np.array([1.0, 1.0, 0.5, 0.5])  # [K, E] @ [E]
    assert np.allclose(cost[2], expected)
    assert np.allclose(cost[1], m.sq_error[1])  # alpha 2 = the median
    assert np.allclose(cost[0], m.sq_error[0])  # no alpha: the median's factor
    with pytest.raises(PlanError, match="self-Fisher"):
        gm.importance_costs(m, "fisher")
    with pytest.raises(ConfigError, match="unknown"):
        gm.importance_costs(m, "entropy")


def test_choice_of_reads_a_files_types() -> None:
    m = measurements()
    types = {"token_embd.weight": "Q8_0", "blk.0.attn_q.weight": "F16", "blk.0.ffn_up_exps.weight": "Q2_K"}
    assert gm.choice_of(m, types).tolist() == [2, 3, 0]
    with pytest.raises(PlanError, match="not one of"):
        gm.choice_of(m, {**types, "token_embd.weight": "IQ2_XS"})


def test_types_llama_quantize_would_store_as_another_type_are_not_offered() -> None:
    import dataclasses

    m = measurements()
    stored = (TYPES, ("Q4_0", "Q5_0", "Q8_0", "F16"), TYPES)  # attn_q: rows of 32 values, k-quants fall back
    m = dataclasses.replace(m, stored_types=stored)
    mask = gm.allowed_types(m)
    assert mask[1].tolist() == [False, False, True, True] and mask[0].all() and mask[2].all()
    a = gm.solve_gguf(m, m.sq_error, 10**9)
    assert a.types["blk.0.attn_q.weight"] in ("Q8_0", "F16")
