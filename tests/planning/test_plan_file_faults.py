"""Edited, damaged and foreign plan files, one per row of issue 23's table: every command that reads a plan refuses
them in one line (exit 2), with no traceback and nothing written; a gguf plan goes to ``alphaq export``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from alphaq.errors import PlanError
from alphaq.planning.plan_file import load_plan
from tests.fixtures.bad_input import assert_nothing_partial, assert_one_line_or_success, invoke, shared_plans, snapshot


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return shared_plans(tmp_path_factory)


def plan_commands(plan: Path, model: Path, tmp: Path) -> dict[str, tuple[list, Path]]:
    """Every command that reads a plan file: name -> (arguments, the output it must not leave half-written)."""
    return {
        "quantize": (["quantize", model, "--plan", plan, "--out", tmp / "q", "--no-html"], tmp / "q"),
        "export llama.cpp": (["export", plan, "--out", tmp / "x" / "types.txt"], tmp / "x"),
        "export gguf": (
            ["export", plan, "--format", "gguf", "--model", model, "--out", tmp / "g" / "m.gguf"],
            tmp / "g",
        ),
        "export compressed-tensors": (
            ["export", plan, "--format", "compressed-tensors", "--model", model, "--out", tmp / "ct"],
            tmp / "ct",
        ),
    }


def _edited(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    data = json.loads(src.read_text())
    edit(data)
    dst.write_text(json.dumps(data))
    return dst


def _run_all(plan: Path, model: Path, tmp: Path, names: tuple[str, ...], match: str) -> None:
    for name, (args, out) in plan_commands(plan, model, tmp).items():
        if name not in names:
            continue
        before = snapshot(out)
        result = invoke(args)
        assert_one_line_or_success(result, args, allow_success=False)
        assert match in result.stderr, (name, result.stderr)
        assert_nothing_partial(out, before)


def test_gguf_plan_given_to_quantize_names_the_command_that_takes_it(plans: dict[str, Path], tmp_path: Path) -> None:
    args = ["quantize", plans["model"], "--plan", plans["gguf"], "--out", tmp_path / "q", "--no-html"]
    result = invoke(args)
    assert_one_line_or_success(result, args, allow_success=False)
    assert "--target gguf" in result.stderr and f"alphaq export {plans['gguf']} --format gguf" in result.stderr
    assert not (tmp_path / "q").exists()


def test_edited_gguf_plan_is_refused_at_load_not_after_writing(plans: dict[str, Path], tmp_path: Path) -> None:
    def bits5(data: dict) -> None:
        expert = next(t for t in data["tensors"] if t["role"] == "expert")
        from alphaq.export.ggml_types import gguf_matrix_nbytes

        expert.update(bits=5, group_size=256, bytes=gguf_matrix_nbytes(expert["rows"], expert["cols"], 5))
        data["plan_fingerprint"] = None

    edited = _edited(plans["gguf"], tmp_path / "edited.json", bits5)
    assert load_plan(edited).provenance["edited_by_hand"] is True
    _run_all(edited, plans["model"], tmp_path, ("quantize", "export compressed-tensors"), "--format gguf")


def test_edited_alphaq_plan_with_a_new_width_is_executed(plans: dict[str, Path], tmp_path: Path) -> None:
    from alphaq.planning.units import matrix_nbytes
    from alphaq.quantization.shards import read_quantization_config

    def bits5(data: dict) -> None:
        expert = next(t for t in data["tensors"] if t["role"] == "expert")
        expert.update(bits=5, group_size=64, bytes=matrix_nbytes(expert["rows"], expert["cols"], 5, 64))
        data["plan_fingerprint"] = None

    edited = _edited(plans["alphaq"], tmp_path / "edited.json", bits5)
    result = invoke(["quantize", plans["model"], "--plan", edited, "--out", tmp_path / "q", "--no-html"])
    assert result.exit_code == 0, result.output
    entries = read_quantization_config(tmp_path / "q")["tensors"]
    assert sorted({(e["bits"], e["group_size"]) for e in entries.values()})[-1][0] in (5, 8)
    assert any(e["bits"] == 5 and e["group_size"] == 64 for e in entries.values())


@pytest.mark.parametrize("encoding", ["binary", "latin-1"])
def test_plan_that_is_not_utf8_is_one_line(plans: dict[str, Path], tmp_path: Path, encoding: str) -> None:
    bad = tmp_path / "plan.json"
    if encoding == "binary":
        bad.write_bytes(bytes(range(256)) * 4)
    else:
        bad.write_bytes(plans["alphaq"].read_text().replace('"rtn"', '"rtn \u00e9t\u00e9"').encode("latin-1"))
    with pytest.raises(PlanError, match=r"is not UTF-8 text \(byte 0x[0-9a-f]{2} at offset \d+\)"):
        load_plan(bad)
    _run_all(bad, plans["model"], tmp_path, tuple(plan_commands(bad, plans["model"], tmp_path)), "not UTF-8")


@pytest.mark.parametrize(
    ("field", "value"),
    [("checkpoint", "demo-moe"), ("options", ["rtn"]), ("budget", "3.5"), ("diagnostics", [1]), ("notes", "none")],
)
def test_provenance_fields_of_other_types_are_one_line(
    plans: dict[str, Path], tmp_path: Path, field: str, value: object
) -> None:
    bad = _edited(plans["alphaq"], tmp_path / "plan.json", lambda d: d["provenance"].update({field: value}))
    with pytest.raises(PlanError, match=f"provenance.{field} is .*; it must be"):
        load_plan(bad)
    _run_all(bad, plans["model"], tmp_path, tuple(plan_commands(bad, plans["model"], tmp_path)), f"provenance.{field}")


def test_checkpoint_path_that_is_a_number_is_one_line(plans: dict[str, Path], tmp_path: Path) -> None:
    bad = _edited(plans["alphaq"], tmp_path / "plan.json", lambda d: d["provenance"]["checkpoint"].update(path=5))
    with pytest.raises(PlanError, match=r"provenance.checkpoint.path is 5; it must be a folder path string"):
        load_plan(bad)
    for name, (args, out) in plan_commands(bad, plans["model"], tmp_path).items():
        if name.startswith("export g") or name.startswith("export c"):
            args = [a for a in args if a not in ("--model", plans["model"])]  # the path recorded in the plan is used
            result = invoke(args)
            assert_one_line_or_success(result, args, allow_success=False)
            assert "provenance.checkpoint.path" in result.stderr
            assert not out.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["provenance"]["options"].update(target="onnx"), 'target is "onnx"; plans target alphaq or gguf'),
        (lambda d: d.update(plan_fingerprint=7), "plan_fingerprint is 7"),
        (lambda d: d["tensors"][0].update(group_size=1 << 20, bits=4), "group_size=1048576"),
    ],
)
def test_other_field_edits_are_one_line(
    plans: dict[str, Path],
    tmp_path: Path,
    edit,  # noqa: ANN001
    message: str,
) -> None:
    bad = _edited(plans["alphaq"], tmp_path / "plan.json", edit)
    with pytest.raises(PlanError, match=message.replace("(", r"\(")):
        load_plan(bad)


def test_deeply_nested_plan_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PlanError, match="nests JSON too deeply|not valid JSON"):
        load_plan(bad)
