from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import pytest
import torch

from alphaq.errors import ConfigError, PlanError
from alphaq.planning.units import KeepPolicy, build_units, kept_bytes_by_role, kept_rows, matrix_nbytes

SHAPES = {"gate": (32, 64), "up": (32, 64), "down": (64, 32)}


def make_details(
    layers: int = 2,
    experts: int = 4,
    *,
    alphas: dict[tuple[int, int], float] | None = None,
    extra: bool = True,
    shapes: dict[str, tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """A hand-built inspect details table: routed experts (gate/up/down) plus attention, router, shared."""
    shapes = shapes or SHAPES
    rows = []
    for layer in range(layers):
        for expert in range(experts):
            alpha = (alphas or {}).get((layer, expert), 2.0 + 0.5 * expert + 0.1 * layer)
            for proj, (r, c) in shapes.items():
                rows.append(
                    {
                        "name": f"L{layer}.E{expert}.{proj}",
                        "tensor": f"model.layers.{layer}.mlp.experts.{expert}.{proj}_proj.weight",
                        "layer": layer,
                        "expert": expert,
                        "proj": proj,
                        "role": "expert",
                        "rows": r,
                        "cols": c,
                        "params": r * c,
                        "alpha": alpha,
                        "status": "success",
                    }
                )
        if extra:
            rows.append(
                {
                    "name": f"L{layer}.q",
                    "tensor": f"model.layers.{layer}.self_attn.q_proj.weight",
                    "layer": layer,
                    "expert": pd.NA,
                    "proj": "q",
                    "role": "attention",
                    "rows": 64,
                    "cols": 64,
                    "params": 4096,
                    "alpha": 3.0,
                    "status": "success",
                }
            )
            rows.append(
                {
                    "name": f"L{layer}.router",
                    "tensor": f"model.layers.{layer}.mlp.gate.weight",
                    "layer": layer,
                    "expert": pd.NA,
                    "proj": "router",
                    "role": "router",
                    "rows": experts,
                    "cols": 64,
                    "params": experts * 64,
                    "alpha": math.nan,
                    "status": "skipped",
                }
            )
            rows.append(
                {
                    "name": f"L{layer}.shared.up",
                    "tensor": f"model.layers.{layer}.mlp.shared_expert.up_proj.weight",
                    "layer": layer,
                    "expert": pd.NA,
                    "proj": "up",
                    "role": "shared_expert",
                    "rows": 32,
                    "cols": 64,
                    "params": 2048,
                    "alpha": 3.0,
                    "status": "success",
                }
            )
    if extra:
        rows.append(
            {
                "name": "embed",
                "tensor": "model.embed_tokens.weight",
                "layer": pd.NA,
                "expert": pd.NA,
                "proj": pd.NA,
                "role": "embedding",
                "rows": 100,
                "cols": 64,
                "params": 6400,
                "alpha": math.nan,
                "status": "skipped",
            }
        )
    frame = pd.DataFrame(rows)
    frame["layer"] = frame["layer"].astype("Int64")
    frame["expert"] = frame["expert"].astype("Int64")
    return frame


def make_reader(details: pd.DataFrame, scale_by: dict[str, float] | None = None):
    """Deterministic Gaussian weights per matrix name (seeded by a CRC of the name)."""
    shapes = {n: (int(r), int(c)) for n, r, c in zip(details["name"], details["rows"], details["cols"])}

    def read(name: str) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        scale = (scale_by or {}).get(name, 0.02)
        return torch.randn(shapes[name], generator=gen) * scale

    return read


def test_expert_units_group_gate_up_down_with_param_weighted_alpha() -> None:
    details = make_details(layers=2, experts=3)
    details.loc[details["name"] == "L0.E0.down", "alpha"] = 4.0  # gate/up 2.0 (2048 params each), down 4.0 (2048)
    units = build_units(details, "expert")
    assert [u.key for u in units] == ["L0.E0", "L0.E1", "L0.E2", "L1.E0", "L1.E1", "L1.E2"]
    first = units[0]
    assert first.matrices == ("L0.E0.gate", "L0.E0.up", "L0.E0.down")
    assert first.params == 3 * 2048 and first.shapes == ((32, 64), (32, 64), (64, 32))
    assert first.alpha == pytest.approx((2.0 + 2.0 + 4.0) / 3)
    assert first.status == "success" and first.proj is None and first.expert == 0


def test_matrix_and_layer_units() -> None:
    details = make_details(layers=2, experts=3)
    matrix = build_units(details, "matrix")
    assert len(matrix) == 18 and matrix[0].key == "L0.E0.gate" and matrix[0].proj == "gate"
    layer = build_units(details, "layer")
    assert [u.key for u in layer] == ["L0.gate", "L0.up", "L0.down", "L1.gate", "L1.up", "L1.down"]
    assert layer[0].expert is None and len(layer[0].matrices) == 3 and layer[0].params == 3 * 2048
    assert layer[0].alpha == pytest.approx(np.mean([2.0, 2.5, 3.0]))


def test_failed_and_partial_fits() -> None:
    details = make_details(layers=1, experts=2)
    details.loc[details["name"].str.startswith("L0.E0."), "status"] = "failed"
    details.loc[details["name"].str.startswith("L0.E0."), "alpha"] = math.nan
    details.loc[details["name"] == "L0.E1.up", "status"] = "nonfinite"
    units = build_units(details, "expert")
    assert units[0].status == "failed" and math.isnan(units[0].alpha)
    assert units[1].status == "partial" and units[1].alpha == pytest.approx(2.5)


def test_build_units_errors() -> None:
    with pytest.raises(ConfigError, match="granularity"):
        build_units(make_details(), "model")
    with pytest.raises(PlanError, match="column"):
        build_units(make_details().drop(columns=["alpha"]), "expert")
    no_experts = make_details()
    with pytest.raises(PlanError, match="no routed-expert"):
        build_units(no_experts[no_experts["role"] != "expert"], "expert")


def test_keep_policy_parse_and_bytes() -> None:
    policy = KeepPolicy.parse("attention=16, shared=8")
    assert policy.bits_for("attention") == 16 and policy.bits_for("shared_expert") == 8
    assert policy.bits_for("router") == 16 and policy.bits_for("embedding") == 16
    assert KeepPolicy.parse(None).widths == {}
    for bad in ("attention", "attn=8", "attention=12", "router=x"):
        with pytest.raises(ConfigError):
            KeepPolicy.parse(bad)
    kept = kept_rows(make_details(layers=1, experts=4), policy, 32)
    assert set(kept["role"]) == {"attention", "router", "shared_expert", "embedding"}
    # shared 32x64 at 8 bits, group 32: payload 32*8*8 = 2048, scales = zeros = 32*2*2 = 128
    assert kept.loc[kept["role"] == "shared_expert", "bytes"].item() == 2048 + 2 * 128
    assert kept_bytes_by_role(kept) == {
        "attention": 64 * 64 * 2,
        "embedding": 100 * 64 * 2,
        "router": 4 * 64 * 2,
        "shared_expert": 2304,
    }


def test_unit_bytes_match_hand_computation() -> None:
    # 2048 x 7168 at 3 bits, group 128: payload 2048 * 896 * 3; scales = zeros = 2048 * 56 * 2
    assert matrix_nbytes(2048, 7168, 3, 128) == 2048 * 896 * 3 + 2 * 2048 * 56 * 2
    # 5 x 20 at 2 bits, group 8: payload 5 * ceil(20/8) * 2 = 30; scales = zeros = 5 * 3 * 2 = 30
    assert matrix_nbytes(5, 20, 2, 8) == 30 + 60
    assert matrix_nbytes(5, 20, 16, 8) == 200
    unit = build_units(make_details(layers=1, experts=1, extra=False), "expert")[0]
    # three 2048-param matrices at 4 bits, group 32: gate/up 32x64: 32*8*4 + 2*32*2*2; down 64x32: 64*4*4 + 2*64*1*2
    assert unit.nbytes(4, 32) == 2 * (1024 + 256) + (1024 + 256)
