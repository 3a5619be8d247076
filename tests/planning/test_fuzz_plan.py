"""Property-based bad input (issue 23): mutations of a valid plan.json (any field at any depth, its encoding, its
end) fed to :func:`load_plan` and to every command that reads a plan. Each either succeeds or exits 2 with one
``error:`` line (no traceback, no "bug in alphaq"), and a refused command leaves nothing partial behind."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphaq.errors import PlanError
from alphaq.planning.plan_file import load_plan
from tests.fixtures.bad_input import (
    assert_nothing_partial,
    assert_one_line_or_success,
    fuzz_settings,
    invoke,
    json_value_strategy,
    shared_plans,
    shared_text,
    snapshot,
)

FUZZ = fuzz_settings(40)
COMMANDS = ("api", "quantize", "export llama.cpp", "export gguf", "export compressed-tensors", "eval", "report")

#: JSON values of every kind, biased to the ones a damaged plan holds.
json_values = json_value_strategy(
    ["", "gguf", "alphaq", "rtn", "hqq", "expert", "16", "\u00e9", "/nonexistent"],
    min_int=-3,
    text_size=6,
    key_size=5,
    list_size=3,
    leaves=5,
)


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return shared_plans(tmp_path_factory)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_text(tmp_path_factory)


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path (tuple of keys and indexes) into a JSON value, the first three tensors' only."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield from _paths(item, (*prefix, index))


def _replace(data: Any, path: tuple, value: Any, drop: bool) -> Any:
    if not path:
        return value
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    if drop and isinstance(holder, dict):
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return data


@st.composite
def mutated_plans(draw: st.DrawFn, original: bytes) -> bytes:
    """A plan.json damaged one way: a value replaced or dropped anywhere, re-encoded, or cut short."""
    kind = draw(st.sampled_from(["value", "value", "value", "drop", "latin-1", "truncate", "bytes"]), label="kind")
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original) - 1), label="cut at")]
    if kind == "bytes":
        at = draw(st.integers(0, len(original) - 1), label="at")
        return original[:at] + draw(st.binary(min_size=1, max_size=4), label="bytes") + original[at + 1 :]
    data = json.loads(original)
    if kind == "latin-1":
        data["provenance"]["notes"] = ["\u00e9t\u00e9"]
        return json.dumps(data, ensure_ascii=False).encode("latin-1")
    paths = sorted(_paths(data), key=repr)
    path = draw(st.sampled_from(paths), label="path")
    value = draw(json_values, label="value")
    return json.dumps(_replace(data, path, value, drop=kind == "drop")).encode("utf-8")


@given(data=st.data())
@FUZZ
def test_mutated_plan_json(plans: dict[str, Path], text_file: Path, data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(["alphaq", "gguf"]), label="plan")
    blob = data.draw(mutated_plans(plans[source].read_bytes()), label="plan.json")
    command = data.draw(st.sampled_from(COMMANDS), label="command")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run = tmp / "run"
        shutil.copytree(plans[source].parent, run)  # the plan's run folder (inspect artifacts beside it)
        plan = run / "plan.json"
        plan.write_bytes(blob)
        if command == "api":
            try:
                loaded = load_plan(plan)
            except PlanError as error:
                assert str(error) and "\n" not in str(error)
            else:
                assert loaded.target in ("alphaq", "gguf") and loaded.tensors
            return
        model, out = plans["model"], tmp / "out"
        args: list[Any] = {
            "quantize": ["quantize", model, "--plan", plan, "--out", out, "--no-html"],
            "export llama.cpp": ["export", plan, "--out", out / "types.txt"],
            "export gguf": ["export", plan, "--format", "gguf", "--model", model, "--out", out / "m.gguf"],
            "export compressed-tensors": [
                "export",
                plan,
                "--format",
                "compressed-tensors",
                "--model",
                model,
                "--out",
                out,
            ],
            "eval": [
                "eval",
                model,
                "--plan",
                plan,
                "--out",
                out,
                "--text-file",
                text_file,
                "--max-windows",
                "1",
                "--context",
                "32",
                "--no-baseline",
                "--no-html",
            ],
            "report": ["report", run],
        }[command]
        before = snapshot(out)
        result = invoke(args)
        assert_one_line_or_success(result, args)
        if result.exit_code == 2:
            assert_nothing_partial(out, before)
