from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alphaq.errors import PlanError
from alphaq.planning.plan_file import (
    PLAN_SCHEMA_VERSION,
    Plan,
    PlanTensor,
    load_plan,
    save_plan,
    tensor_totals,
    tensors_fingerprint,
)


def tiny_plan() -> Plan:
    tensors = (
        PlanTensor(
            name="L0.E0.gate",
            tensor="model.layers.0.mlp.experts.0.gate_proj.weight",
            layer=0,
            expert=0,
            proj="gate",
            role="expert",
            rows=32,
            cols=64,
            params=2048,
            bits=3,
            group_size=32,
            bytes=32 * 8 * 3 + 2 * 32 * 2 * 2,
            error=0.12,
            unit="L0.E0",
        ),
        PlanTensor(
            name="L0.q",
            tensor="model.layers.0.self_attn.q_proj.weight",
            layer=0,
            expert=None,
            proj="q",
            role="attention",
            rows=64,
            cols=64,
            params=4096,
            bits=16,
            group_size=None,
            bytes=8192,
            error=0.0,
        ),
    )
    return Plan(
        provenance={"alphaq_version": "0.1.0", "gamma": 1.0, "bound": math.nan, "widths": (2, 3)},
        summary=tensor_totals(tensors),
        tensors=tensors,
    )


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_round_trip(tmp_path: Path) -> None:
    plan = tiny_plan()
    assert plan.provenance["bound"] is None and plan.provenance["widths"] == [2, 3]
    assert plan.plan_fingerprint == tensors_fingerprint(plan.tensors) and len(plan.plan_fingerprint) == 64
    path = save_plan(plan, tmp_path / "out" / "plan.json")
    loaded = load_plan(path, checkpoint_tensors={t.tensor for t in plan.tensors} | {"other"})
    assert loaded == plan
    assert loaded.bits_by_name() == {"L0.E0.gate": 3, "L0.q": 16}
    assert json.loads(path.read_text())["schema_version"] == PLAN_SCHEMA_VERSION
    assert not [p for p in path.parent.iterdir() if p.name != "plan.json"]  # no temporary left behind


def test_fingerprint_changes_with_widths() -> None:
    plan = tiny_plan()
    wider = PlanTensor(**{**plan.tensors[0].__dict__, "bits": 4, "bytes": 32 * 8 * 4 + 256})
    edited = Plan(plan.provenance, plan.summary, (wider, plan.tensors[1]))
    assert edited.plan_fingerprint != plan.plan_fingerprint
    assert Plan({}, {}, plan.tensors).plan_fingerprint == plan.plan_fingerprint  # tensors only


def broken(**changes):
    data = tiny_plan().to_dict()
    for key, value in changes.items():
        if key.startswith("t0_"):
            if value is KeyError:
                del data["tensors"][0][key[3:]]
            else:
                data["tensors"][0][key[3:]] = value
        elif value is KeyError:
            del data[key]
        else:
            data[key] = value
    if not any(k == "plan_fingerprint" for k in changes):
        data["plan_fingerprint"] = None
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", r"not valid JSON \(line 1, column 2"),
        ("[1, 2]", "JSON list, not a plan object"),
        (broken(schema_version=2), "schema_version 2, this alphaq reads 1; re-create it"),
        (broken(schema_version=KeyError), "schema_version None"),
        (broken(summary=KeyError), r"lacks field\(s\) summary"),
        (broken(tensors=[]), "tensors must be a non-empty list"),
        (broken(t0_bits=KeyError), r"tensor L0.E0.gate lacks field\(s\) bits"),
        (broken(t0_bits=9), "bits=9; widths must be 1..8"),
        (broken(t0_bits=0), "bits=0; widths must be 1..8"),
        (broken(t0_bits=3.5), "bits=3.5 of the wrong type"),
        (broken(t0_group_size=12), "group_size=12; use a positive multiple of 8"),
        (broken(t0_group_size=None), "group_size=None; use a positive multiple of 8"),
        (broken(t0_bytes=1), "bytes=1 but 3-bit storage takes 1024"),
        (broken(t0_params=7), "disagree"),
        (broken(t0_error=-1.0), "error=-1.0"),
        (broken(plan_fingerprint="0" * 64), "plan_fingerprint does not match its tensors"),
    ],
)
def test_validation_errors(tmp_path: Path, data, message) -> None:
    with pytest.raises(PlanError, match=message):
        load_plan(write(tmp_path, data))


def test_duplicate_missing_file_and_checkpoint_names(tmp_path: Path) -> None:
    data = broken()
    data["tensors"].append(dict(data["tensors"][0]))
    with pytest.raises(PlanError, match="lists tensor 'L0.E0.gate' twice"):
        load_plan(write(tmp_path, data))
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path / "absent.json")
    path = save_plan(tiny_plan(), tmp_path / "ok.json")
    with pytest.raises(PlanError, match=r"1 tensor\(s\) not in the checkpoint \(first: model.layers.0.self_attn"):
        load_plan(path, checkpoint_tensors={"model.layers.0.mlp.experts.0.gate_proj.weight"})


def test_null_fingerprint_accepts_hand_edit(tmp_path: Path) -> None:
    data = broken(t0_bits=4, t0_bytes=32 * 8 * 4 + 256)
    plan = load_plan(write(tmp_path, data))
    assert plan.tensors[0].bits == 4 and plan.plan_fingerprint == tensors_fingerprint(plan.tensors)
