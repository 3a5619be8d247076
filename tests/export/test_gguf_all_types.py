"""GGUF export of every MoE type the vendored ``convert_hf_to_gguf.py`` converts, beyond the families of
``test_gguf_families.py``: one tiny model each (:mod:`tests.fixtures.gguf_recipes`), planned with the default alphaq
target (per-expert widths, 3.5 bits), exported with :func:`alphaq.export.gguf_export.export_gguf` (the real converter
and ``llama-quantize``), read back with ``gguf.GGUFReader`` and run by ``llama-perplexity``.

The models are built and planned one after another while the exports (subprocesses) run two at a time; then each
GGUF is run. The types the export refuses fail with one line.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alphaq.errors import AlphaQError
from alphaq.export.llamacpp_tools import LlamaCppFailed, LlamaCppTools
from tests.export.test_gguf import tools_or_skip
from tests.fixtures.gguf_recipes import RECIPE, RECIPES, REFUSED
from tests.fixtures.tiny_gguf_all import GgufRecipe, make_tiny_recipe

pytest.importorskip("gguf", reason="the GGUF tests need the gguf package (pip install 'alphaq[gguf]')")

TEXT = "The river ran past the old mill, and the miller's sons watched the water rise. " * 40


@dataclass(frozen=True)
class Outcome:
    """One recipe's export (or the error it raised) and its llama-perplexity run."""

    recipe: GgufRecipe
    run: Path
    gguf: Path
    result: Any = None
    error: BaseException | None = None
    ppl: float | None = None
    ppl_error: BaseException | None = None


def _plan(model: Path, run: Path) -> Path:
    import alphaq
    from alphaq.planning.planner import PlanConfig

    alphaq.plan(model, PlanConfig(budget="3.5"), run)
    return run / "plan.json"


def _export(recipe: GgufRecipe, plan: Path, out: Path, tools: LlamaCppTools) -> Outcome:
    from alphaq.export.gguf_export import GgufExportOptions, export_gguf

    try:
        result = export_gguf(plan, out, options=GgufExportOptions(keep_type="f16", threads=1), tools=tools)
    except AlphaQError as error:
        return Outcome(recipe, plan.parent, out, error=error)
    return Outcome(recipe, plan.parent, out, result=result)


def _run(outcome: Outcome, text: Path, tools: LlamaCppTools) -> Outcome:
    """``llama-perplexity`` on the export (after the exports: a loaded machine cuts llama.cpp's log more often)."""
    from dataclasses import replace

    from alphaq.export.gguf_io import run_perplexity

    if outcome.error is not None:
        return outcome
    for attempt in range(3):  # llama.cpp may exit before its last log lines (see llamacpp_tools.run_parsed)
        try:
            return replace(outcome, ppl=run_perplexity(tools, outcome.gguf, text, ctx=64, chunks=2, threads=1).ppl)
        except LlamaCppFailed as error:
            if "log was cut" not in str(error) or attempt == 2:
                return replace(outcome, ppl_error=error)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Build and plan every recipe (and every refused one) in turn; export and run them on two threads."""
    tools = tools_or_skip()
    root = tmp_path_factory.mktemp("gguf-all")
    text = root / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    futures: dict[str, Future[Outcome]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for recipe in (*RECIPES, *(r for r, _ in REFUSED)):
            folder = root / recipe.model_type
            model = make_tiny_recipe(recipe, folder / "model")
            plan = _plan(model, folder / "run")
            futures[recipe.model_type] = pool.submit(_export, recipe, plan, folder / f"{recipe.model_type}.gguf", tools)
    return {name: _run(future.result(), text, tools) for name, future in futures.items()}


@pytest.mark.parametrize("model_type", [r.model_type for r in RECIPES])
def test_export_holds_the_planned_types_and_llama_cpp_runs_it(model_type: str, outcomes: dict[str, Outcome]) -> None:
    import gguf

    outcome = outcomes[model_type]
    assert outcome.error is None, f"{model_type}: {outcome.error}"
    reader = gguf.GGUFReader(str(outcome.gguf))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == outcome.recipe.arch
    stored = {t.name: t.tensor_type.name for t in reader.tensors}
    planned = {t.name + ".weight": t.stored_type for t in outcome.result.export.tensors if t.role == "expert"}
    assert planned and {n: stored.get(n) for n in planned} == planned  # every routed-expert tensor as planned
    assert {n for n in stored if "_exps.weight" in n} == set(planned)
    for name, ggml in outcome.recipe.tensors.items():
        assert stored.get(name) == ggml, name
    record = json.loads((outcome.run / "gguf_export.json").read_text())
    check = record["verification"]
    assert check["ok"] and check["problems"] == [] and check["expert_bytes"] == check["predicted_expert_bytes"] > 0
    assert not any("no known GGUF name" in n for n in record["cost"]["notes"])  # every planned matrix mapped
    assert outcome.ppl_error is None, f"{model_type}: {outcome.ppl_error}"
    assert outcome.ppl is not None and np.isfinite(outcome.ppl) and 1.0 < outcome.ppl < 1e5


@pytest.mark.parametrize(("model_type", "reason"), [(r.model_type, why) for r, why in REFUSED])
def test_type_the_export_cannot_make_is_refused_in_one_line(
    model_type: str, reason: str, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes[model_type]
    assert outcome.error is not None and reason in str(outcome.error), outcome.error
    assert "\n" not in str(outcome.error) and len(str(outcome.error)) < 500
    assert not outcome.gguf.exists()


def test_every_converter_supported_type_has_a_recipe_a_family_or_a_refusal() -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from alphaq.load.support import GGUF_CONVERTER_CLASSES, GGUF_REFUSED, GGUF_TESTED
    from tests.fixtures.tiny_all import BUILT

    supported = {t for t in BUILT if MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[t] in GGUF_CONVERTER_CLASSES}
    covered = set(GGUF_TESTED) | set(GGUF_REFUSED)
    assert supported <= covered, sorted(supported - covered)
    assert set(RECIPE) <= set(GGUF_TESTED) and {r.model_type for r, _ in REFUSED} <= set(GGUF_REFUSED)
