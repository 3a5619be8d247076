"""Faults in ``alphaq plan`` and in edited plan files: NaN/Inf weights, a summary that disagrees with its
tensors, edits accepted by hand, analytic units, byte budgets smaller than the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alphaq.cli import app
from alphaq.errors import PlanError
from alphaq.planning.costs import prediction_units
from alphaq.planning.plan_file import load_plan, tensor_totals
from tests.quantization.quantize_helpers import write_checkpoint

runner = CliRunner()


def _checkpoint_with(tmp_path: Path, value: float) -> Path:
    g = torch.Generator().manual_seed(0)
    tensors = {
        f"model.layers.0.block_sparse_moe.experts.{e}.{p}.weight": torch.randn(*shape, generator=g)
        for e in range(4)
        for p, shape in (("w1", (64, 32)), ("w3", (64, 32)), ("w2", (32, 64)))
    }
    tensors["model.layers.0.block_sparse_moe.experts.2.w3.weight"][7, 3] = value
    return write_checkpoint(
        tmp_path / f"ckpt-{value}", {"model_type": "mixtral", "hidden_size": 32, "num_hidden_layers": 1}, tensors
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("error_model", ["measured", "analytic"])
def test_nonfinite_weight_is_one_line_naming_the_matrix(tmp_path: Path, value: float, error_model: str) -> None:
    model = _checkpoint_with(tmp_path, value)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["plan", str(model), "--budget", "3", "--group-size", "32", "--error-model", error_model, "--out", str(out)],
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert "experts.2.w3" in result.output and "NaN/Inf" in result.output
    assert not (out / "plan.json").exists()
    inspect = json.loads((out / "inspect.json").read_text())  # inspect ran and flagged the matrix
    assert inspect["timing"]["matrices"] == 12


@pytest.fixture(scope="module")
def demo_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "run"
    result = runner.invoke(app, ["plan", "--budget", "3.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "plan.json"


def _edit(src: Path, dst: Path, fn) -> Path:  # noqa: ANN001
    data = json.loads(src.read_text())
    fn(data)
    dst.write_text(json.dumps(data))
    return dst


def test_summary_that_disagrees_with_the_tensors_is_refused(demo_plan: Path, tmp_path: Path) -> None:
    bad = _edit(demo_plan, tmp_path / "bad.json", lambda d: d["summary"].update(average_payload_bits=1e9))
    with pytest.raises(PlanError, match=r"summary\.average_payload_bits is 1000000000\.0 but its tensors give 3\.5"):
        load_plan(bad)
    bytes_edit = _edit(demo_plan, tmp_path / "bytes.json", lambda d: d["summary"].update(total_bytes=1))
    with pytest.raises(PlanError, match=r"summary\.total_bytes is 1 but its tensors give"):
        load_plan(bytes_edit)
    result = runner.invoke(app, ["quantize", "--plan", str(bad), "--out", str(tmp_path / "q")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and not (tmp_path / "q").exists()


def test_summary_is_what_the_tensors_give(demo_plan: Path) -> None:
    plan = load_plan(demo_plan)
    for key, value in tensor_totals(plan.tensors).items():
        assert plan.summary[key] == pytest.approx(value, rel=1e-12), key


def test_edit_accepted_by_hand_drops_the_stale_predictions(demo_plan: Path, tmp_path: Path) -> None:
    from alphaq.planning.units import matrix_nbytes

    def to_two_bits(data: dict) -> None:
        data["plan_fingerprint"] = None
        for t in data["tensors"]:
            if t["unit"] is not None and t["layer"] == 0:
                t["bits"], t["bytes"] = 2, matrix_nbytes(t["rows"], t["cols"], 2, t["group_size"])

    plan = load_plan(_edit(demo_plan, tmp_path / "edited.json", to_two_bits))
    assert plan.provenance["edited_by_hand"] is True and plan.summary["predicted_error"] is None
    assert all(t.error is None for t in plan.tensors if t.unit is not None)
    totals = tensor_totals(plan.tensors)
    assert plan.summary["average_payload_bits"] == totals["average_payload_bits"] < 3.5
    assert plan.summary["expert_bytes"] == totals["expert_bytes"]


def test_analytic_prediction_is_shown_in_its_own_units() -> None:
    assert prediction_units("analytic")[:2] == ("predicted MSE", "{:.3e}")
    assert prediction_units("measured")[:2] == ("predicted error", "{:.5f}")
    assert prediction_units(None) == prediction_units("measured")


def test_analytic_plan_quantize_summary_prints_mse(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert runner.invoke(app, ["plan", "--budget", "3", "--error-model", "analytic", "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["quantize", "--plan", str(out / "plan.json"), "--out", str(out / "q"), "--no-html"])
    assert result.exit_code == 0, result.output
    assert "plan predicted MSE" in result.output and "plan predicted 0.00000" not in result.output


def test_byte_budget_smaller_than_the_model_warns(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["plan", "--budget", "8MB", "--out", str(out)])
    assert result.exit_code == 0, result.output
    warnings = load_plan(out / "plan.json").provenance["warnings"]
    assert len(warnings) == 1 and "counts the routed experts only" in warnings[0]
    assert "warning:" in result.output and "MB of non-expert weights" in result.output
    roomy = runner.invoke(app, ["plan", "--budget", "3.5", "--out", str(tmp_path / "roomy")])
    assert roomy.exit_code == 0 and load_plan(tmp_path / "roomy" / "plan.json").provenance["warnings"] == []


_FUZZ_VALUES = (None, -1, 0, 1, 3, 16, 1e9, -0.5, float("nan"), "x", "", [], {}, True, [1, 2], {"a": 1})


def _random_edit(data: dict, rng) -> str:  # noqa: ANN001
    """Apply one random edit (replace or delete a field somewhere in the plan); return where."""
    where = rng.choice(["top", "summary", "provenance", "tensor", "tensor", "tensor"])
    tensors = data.get("tensors")
    holder = data
    if where == "tensor" and isinstance(tensors, list) and tensors:
        holder = tensors[rng.randrange(len(tensors))]
    elif where in ("summary", "provenance") and isinstance(data.get(where), dict) and data[where]:
        holder = data[where]
    if not isinstance(holder, dict) or not holder:
        holder = data
    key = rng.choice(sorted(holder))
    if rng.random() < 0.2:
        del holder[key]
        return f"{where}.{key} deleted"
    holder[key] = rng.choice(_FUZZ_VALUES)
    return f"{where}.{key} = {holder[key]!r}"


def test_fuzzed_plans_are_accepted_consistent_or_refused_in_one_line(demo_plan: Path, tmp_path: Path) -> None:
    import random

    original = json.loads(demo_plan.read_text())
    rng = random.Random(0)
    accepted = refused = 0
    for trial in range(300):
        data = json.loads(json.dumps(original))
        edits = [_random_edit(data, rng) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3:
            data["plan_fingerprint"] = None
        path = tmp_path / "fuzz.json"
        path.write_text(json.dumps(data))
        try:
            plan = load_plan(path)
        except PlanError as error:
            assert "\n" not in str(error), (edits, str(error))
            refused += 1
            continue
        accepted += 1
        totals = tensor_totals(plan.tensors)
        for key in ("expert_bytes", "kept_bytes", "total_bytes", "average_payload_bits", "expert_params"):
            assert plan.summary.get(key) == pytest.approx(totals[key], rel=1e-6), (trial, edits, key)
        if plan.provenance.get("edited_by_hand"):
            assert plan.summary["predicted_error"] is None
    assert accepted > 10 and refused > 100


@pytest.mark.parametrize("command", ["inspect", "plan", "quantize", "export"])
def test_full_disk_is_one_line_and_leaves_nothing(tiny_checkpoints, tmp_path: Path, monkeypatch, command: str) -> None:
    import errno
    import tempfile

    from alphaq.load import open_checkpoint
    from tests.quantization.quantize_helpers import make_plan

    model = tiny_checkpoints["mixtral"]
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json", lambda m: 4 if m.role.value == "expert" else 16)
    out = tmp_path / "out"
    args = {
        "inspect": ["inspect", str(model)],
        "plan": ["plan", str(model), "--budget", "3", "--group-size", "32"],
        "quantize": ["quantize", str(model), "--plan", str(plan)],
        "export": ["export", str(plan), "--format", "compressed-tensors", "--model", str(model)],
    }[command]
    real = tempfile.mkstemp

    def full(*a, **k):  # noqa: ANN002, ANN003 - every new file in out fails as on a full disk
        if str(k.get("dir", "")).startswith(str(out)):
            raise OSError(errno.ENOSPC, "No space left on device", str(k.get("dir")))
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", full)
    import alphaq.quantization.shards as shards

    def full_shard(path, *a, **k):  # noqa: ANN001, ANN002, ANN003
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(shards, "write_shard", full_shard)
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not [
        p
        for p in leftovers
        if p.name in ("plan.json", "inspect.json", "quantize.json", "config.json")
        or p.suffix in (".safetensors", ".tmp")
    ], leftovers


def test_default_gamma_moves_bits_at_a_candidate_width_and_gamma_1_says_uniform_is_optimal(tmp_path: Path) -> None:
    from alphaq.planning.defaults import DEFAULT_GAMMA

    assert DEFAULT_GAMMA == 16.0
    for gamma, mixed in ((None, True), ("1", False)):
        out = tmp_path / f"g{gamma}"
        args = ["plan", "--budget", "3", "--out", str(out)] + (["--gamma", gamma] if gamma else [])
        assert runner.invoke(app, args).exit_code == 0
        plan = load_plan(out / "plan.json")
        widths = {t.bits for t in plan.tensors if t.unit is not None}
        assert (len(widths) > 1) is mixed
        notes = " ".join(plan.provenance["notes"])
        assert ("the exact optimum is the uniform 3-bit plan" in notes) is not mixed
