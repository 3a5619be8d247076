from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphaq.errors import ConfigError, PlanError
from alphaq.planning import PlanConfig, load_plan, make_plan, save_plan, sweep
from alphaq.planning.planner import SWEEP_COLUMNS
from tests.planning.test_units import make_details, make_reader

PROVENANCE = {
    "checkpoint": {"path": "/ckpt", "fingerprint": "abc123"},
    "model_type": "qwen2_moe",
    "diagnostics": {"fit": "ww", "inspect_fingerprint": "def456"},
}


class CountingReader:
    def __init__(self, details: pd.DataFrame, scale_by=None) -> None:
        self.read = make_reader(details, scale_by)
        self.calls: list[str] = []

    def __call__(self, name: str):
        self.calls.append(name)
        return self.read(name)


def test_make_plan_end_to_end(tmp_path: Path) -> None:
    details = make_details(layers=2, experts=4)
    reader = CountingReader(details)
    config = PlanConfig("3.5", group_size=32, keep="shared=8,router=8")
    ticks: list[str] = []
    plan = make_plan(details, reader, config, provenance=PROVENANCE, progress=lambda n, item, total: ticks.append(item))
    expert_names = list(details.loc[details["role"] == "expert", "name"])
    assert sorted(reader.calls) == sorted(expert_names) and len(ticks) == len(expert_names)
    assert [t.name for t in plan.tensors] == list(details["name"])
    experts = [t for t in plan.tensors if t.role == "expert"]
    for unit in {t.unit for t in experts}:
        assert len({t.bits for t in experts if t.unit == unit}) == 1  # an expert's matrices share a width
    params = sum(t.params for t in experts)
    assert sum(t.params * t.bits for t in experts) / params <= 3.5
    summary = plan.summary
    assert summary["average_payload_bits"] == pytest.approx(3.5)
    assert summary["expert_bytes"] == sum(t.bytes for t in experts)
    # group 32: one fp16 scale and one fp16 zero (32 bits) per 32 weights = 1 bit/weight of overhead
    assert summary["effective_bits"] == pytest.approx(3.5 + 1.0)
    kept = {t.role: t for t in plan.tensors if t.unit is None}
    assert kept["attention"].bits == 16 and kept["attention"].group_size is None and kept["attention"].error == 0.0
    assert kept["shared_expert"].bits == 8 and kept["router"].bits == 8 and kept["embedding"].bits == 16
    assert summary["kept_bytes_by_role"]["attention"] == 2 * 64 * 64 * 2
    assert summary["total_bytes"] == summary["expert_bytes"] + summary["kept_bytes"]
    assert summary["compression_ratio"] == pytest.approx(summary["total_bytes_bf16"] / summary["total_bytes"])
    assert summary["expert_bytes_bf16"] == params * 2
    prov = plan.provenance
    assert prov["checkpoint"]["fingerprint"] == "abc123" and prov["diagnostics"]["fit"] == "ww"
    assert prov["options"]["gamma"] == 16.0 and prov["options"]["error_model"] == "measured"
    assert prov["budget"]["given"] == "3.5" and prov["budget"]["resolved"]["capacity"] == 3.5 * params
    assert prov["solver"]["status"] == "optimal" and prov["solver"]["gap"] == 0.0
    assert all(t.error is not None and t.error > 0 for t in experts)
    path = save_plan(plan, tmp_path / "plan.json")
    assert load_plan(path, checkpoint_tensors=set(details["tensor"])) == plan


def test_alpha_moves_bits_towards_low_alpha_experts() -> None:
    alphas = {(0, e): a for e, a in enumerate([2.0, 2.2, 5.5, 6.0])}
    details = make_details(layers=1, experts=4, alphas=alphas, extra=False)
    plan = make_plan(details, make_reader(details), PlanConfig("3", gamma=4.0, widths="2,3,4"), provenance={})
    bits = {t.unit: t.bits for t in plan.tensors}
    assert bits["L0.E0"] >= bits["L0.E2"] and bits["L0.E1"] >= bits["L0.E3"] and bits["L0.E0"] > bits["L0.E3"]


def test_byte_budget_layer_granularity_and_bounds() -> None:
    details = make_details(layers=3, experts=4, extra=False)
    config = PlanConfig("60kB", granularity="layer", group_size=32, min_bits="0:4", error_model="analytic")
    plan = make_plan(details, make_reader(details), config, provenance={})
    assert plan.summary["expert_bytes"] <= 60_000
    by_key: dict[tuple, set] = {}
    for t in plan.tensors:
        by_key.setdefault((t.layer, t.proj), set()).add(t.bits)
        if t.layer == 0:
            assert t.bits >= 4
    assert all(len(widths) == 1 for widths in by_key.values())


def test_failed_fits_are_listed_and_frequency_needs_shares() -> None:
    details = make_details(layers=1, experts=4, extra=False)
    details.loc[details["expert"] == 2, ["status", "alpha"]] = ["failed", np.nan]
    plan = make_plan(details, make_reader(details), PlanConfig("3"), provenance={})
    assert plan.provenance["failed_fits"] == ["L0.E2"]
    with pytest.raises(PlanError, match="routing shares"):
        make_plan(details, make_reader(details), PlanConfig("3", allocator="frequency"), provenance={})
    shares = {(0, 0): 0.7, (0, 1): 0.1, (0, 2): 0.1, (0, 3): 0.1}
    freq = make_plan(
        details, make_reader(details), PlanConfig("3", allocator="frequency"), provenance={}, routing_shares=shares
    )
    assert freq.provenance["options"]["allocator"] == "frequency"


def test_infeasible_budget_message() -> None:
    details = make_details(layers=1, experts=2, extra=False)
    with pytest.raises(PlanError, match=r"below the smallest feasible value.*2 to 8 bits/weight"):
        make_plan(details, make_reader(details), PlanConfig("1.5"), provenance={})


def test_sweep_reads_weights_once_and_compares_allocators() -> None:
    details = make_details(layers=2, experts=4, extra=False)
    reader = CountingReader(details)
    frame = sweep(details, reader, PlanConfig("3"), ["2.5", "3.5", "1", "50kB"], ["alphaq", "uniform", "random"])
    assert len(reader.calls) == 24 and list(frame.columns) == SWEEP_COLUMNS and len(frame) == 12
    feasible = frame[frame["status"] != "infeasible"]
    assert (frame.loc[frame["budget"] == "1", "status"] == "infeasible").all()
    bits = feasible[feasible["budget_kind"] == "bits"]
    assert (bits["average_payload_bits"] <= bits["budget"].astype(float) + 1e-12).all()
    for _budget, group in feasible.groupby("budget"):
        best = group.set_index("allocator")["alpha_objective"]
        assert best["alphaq"] <= best.min() + 1e-12
    with pytest.raises(ConfigError, match="unknown allocator"):
        sweep(details, reader, PlanConfig("3"), ["3"], ["nope"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": "3.5x"}, "unknown budget unit"),
        ({"budget": "3", "widths": "2,9"}, "subset of 1..8"),
        ({"budget": "3", "group_size": 100}, "group_size=100"),
        ({"budget": "3", "granularity": "model"}, "--granularity"),
        ({"budget": "3", "error_model": "guess"}, "--error-model"),
        ({"budget": "3", "allocator": "best"}, "--allocator"),
        ({"budget": "3", "solver": "cplex"}, "--solver"),
        ({"budget": "3", "gamma": -1.0}, "--gamma"),
        ({"budget": "3", "min_bits": "5", "max_bits": "4"}, "exceeds --max-bits"),
        ({"budget": "3", "keep": "attention=3.5"}, "malformed"),
    ],
)
def test_config_validation(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        PlanConfig(**kwargs)
