"""``alphaq plan --target gguf`` and ``alphaq export --format gguf`` against the real llama.cpp (no mocks).

Needs llama.cpp's tools built from the llama-cpp-python sdist (``alphaq llamacpp build``; found through
``$ALPHAQ_LLAMACPP_DIR`` or the default cache). Skips without them, except when ``$CI`` is set: CI builds them
(``.ci/run``), so missing tools there are a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from alphaq.cli import app
from alphaq.export.ggml_types import GGUF_WIDTH_TYPES
from alphaq.export.llamacpp_tools import BUILD_COMMAND, LlamaCppMissing, LlamaCppTools, find_tools
from tests.fixtures.tiny_gguf import make_tiny_mixtral

pytest.importorskip("gguf", reason="the GGUF tests need the gguf package (pip install 'alphaq[gguf]')")


def tools_or_skip() -> LlamaCppTools:
    """The llama.cpp tools; skip without them, fail when $CI is set (CI builds them)."""
    try:
        return find_tools()
    except LlamaCppMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(
                f"GGUF tests need llama.cpp and CI is set (.ci/run must `{BUILD_COMMAND}`): {exc}", pytrace=False
            )
        pytest.skip(f"GGUF tests need llama.cpp (`{BUILD_COMMAND}`): {exc}")


@pytest.fixture(scope="module")
def tools() -> LlamaCppTools:
    return tools_or_skip()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_mixtral(tmp_path_factory.mktemp("tiny-gguf") / "mixtral")


@pytest.fixture(scope="module")
def planned(tools: LlamaCppTools, tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``alphaq plan --target gguf --budget 3.8`` on the tiny Mixtral (between Q3_K and Q4_K: a mixture): errors measured by llama-quantize."""
    out = tmp_path_factory.mktemp("gguf-plan") / "run"
    result = CliRunner().invoke(
        app, ["plan", str(tiny), "--target", "gguf", "--budget", "3.8", "--out", str(out), "--no-html"]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def exported(planned: Path) -> tuple[Path, str]:
    """``alphaq export plan.json --format gguf --out tiny-alphaq.gguf --keep f16``: the GGUF and the output."""
    out = planned / "tiny-alphaq.gguf"
    code, output = run_cli(
        ["export", str(planned / "plan.json"), "--format", "gguf", "--out", str(out), "--keep", "f16"]
    )
    assert code == 0, output
    return out, output


def run_cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def gguf_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.gguf"))


def test_plan_errors_are_measured_by_llama_cpp(planned: Path) -> None:
    errors = json.loads((planned / "gguf_errors.json").read_text())
    assert errors["types"] == {str(w): t for w, t in GGUF_WIDTH_TYPES.items()}
    table = np.asarray(errors["error"])  # [matrices, widths]
    assert table.shape == (2 * 4 * 3, 6)
    assert np.all(np.diff(table, axis=1) < 0)  # every matrix: more bits, less error (Q2_K .. Q8_0)
    assert np.all((table[:, 0] > 0.1) & (table[:, 0] < 0.6)) and np.all(table[:, -1] < 0.01)
    plan = json.loads((planned / "plan.json").read_text())
    experts = [t for t in plan["tensors"] if t["role"] == "expert"]
    widths = {(t["layer"], t["proj"]): set() for t in experts}
    for t in experts:
        widths[(t["layer"], t["proj"])].add(t["bits"])
    assert all(len(v) == 1 for v in widths.values())  # one type per layer and projection
    assert len({next(iter(v)) for v in widths.values()}) > 1  # a mixture
    real_bits = 8 * sum(t["bytes"] for t in experts) / sum(t["params"] for t in experts)
    assert 3.4375 < real_bits <= 3.8  # the budget is the GGUF's bits per expert weight


def test_export_writes_the_planned_types_and_verifies_them(
    planned: Path, exported: tuple[Path, str], tools: LlamaCppTools
) -> None:
    import gguf

    out, output = exported
    plan = json.loads((planned / "plan.json").read_text())
    want = {
        f"blk.{t['layer']}.ffn_{t['proj']}_exps.weight": GGUF_WIDTH_TYPES[t["bits"]]
        for t in plan["tensors"]
        if t["role"] == "expert"
    }
    reader = gguf.GGUFReader(str(out))  # read independently of alphaq's own read-back
    stored = {t.name: t.tensor_type.name for t in reader.tensors}
    assert {n: stored[n] for n in want} == want
    assert stored["blk.0.attn_q.weight"] == "F16" and stored["token_embd.weight"] == "F16"
    assert stored["blk.0.ffn_gate_inp.weight"] == "F32"  # routers: never quantized by llama.cpp
    record = json.loads((planned / "gguf_export.json").read_text())
    check = record["verification"]
    assert check["ok"] and check["problems"] == []
    assert check["file_bytes"] == out.stat().st_size
    assert check["expert_bytes"] == check["predicted_expert_bytes"] == check["plan_expert_bytes"]
    expert_bytes = sum(t.n_bytes for t in reader.tensors if t.name in want)
    assert expert_bytes == sum(t["bytes"] for t in plan["tensors"] if t["role"] == "expert")
    assert record["llama_cpp"]["llama_cpp_python"] == tools.info.get("llama_cpp_python")
    assert "ok" in output and "MISMATCH" not in output
    assert [p.name for p in gguf_files(planned)] == ["tiny-alphaq.gguf"]  # no temporary file left
    from alphaq.report.plan_page import render_plan

    page = render_plan(planned).read_text(encoding="utf-8")  # the record reaches the plan report
    assert "GGUF export (llama.cpp)" in page and "Types as planned" in page and "MISMATCH" not in page


def test_llama_perplexity_runs_and_is_parsed(exported: tuple[Path, str], tools: LlamaCppTools, tmp_path: Path) -> None:
    from alphaq.export.gguf_io import run_perplexity

    out = exported[0]
    text = tmp_path / "text.txt"
    text.write_text(
        "The river ran past the old mill, and the miller's sons watched the water rise. " * 40, encoding="utf-8"
    )
    result = run_perplexity(tools, out, text, ctx=64, chunks=4)
    assert result.chunks == 4 and result.n_ctx == 64
    assert np.isfinite(result.ppl) and 1.0 < result.ppl < 1e5 and result.stderr > 0


def test_plan_of_another_checkpoint_is_refused(planned: Path, tmp_path: Path) -> None:
    other = make_tiny_mixtral(tmp_path / "other", seed=1)
    out = tmp_path / "x.gguf"
    code, output = run_cli(
        ["export", str(planned / "plan.json"), "--format", "gguf", "--out", str(out), "--model", str(other)]
    )
    assert code == 2
    assert output.count("error:") == 1 and "made for another checkpoint" in output and "alphaq plan" in output
    assert gguf_files(tmp_path) == []


def test_budget_the_gguf_types_cannot_meet_is_refused(planned: Path, tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(planned, run, ignore=shutil.ignore_patterns("*.gguf", "plan.json"))
    code, output = run_cli(["plan", str(tiny), "--target", "gguf", "--budget", "2.5", "--out", str(run), "--no-html"])
    assert code == 2
    assert output.strip().count("\n") == 0 and "below the smallest feasible value" in output and "2.625" in output
    assert not (run / "plan.json").exists()


def test_missing_tools_name_the_build_command(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text("{}", encoding="utf-8")
    code, output = run_cli(["llamacpp", "where", "--llamacpp-dir", str(tmp_path / "none")])
    assert code == 2 and output.count("\n") == 1
    assert "llama.cpp tools not found" in output and BUILD_COMMAND in output


def test_missing_tools_stop_the_export_before_writing(planned: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.gguf"
    code, output = run_cli(
        [
            "export",
            str(planned / "plan.json"),
            "--format",
            "gguf",
            "--out",
            str(out),
            "--llamacpp-dir",
            str(tmp_path / "none"),
        ]
    )
    assert code == 2 and "llama.cpp tools not found" in output and BUILD_COMMAND in output
    assert gguf_files(tmp_path) == []


def test_architecture_the_converter_does_not_know_is_refused(
    tools: LlamaCppTools, tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from alphaq.load import open_checkpoint
    from alphaq.planning.plan_file import save_plan
    from alphaq.planning.planner import PlanConfig, make_plan

    ckpt = open_checkpoint(tiny_checkpoints["phimoe"])  # PhiMoE: alphaq reads it, convert_hf_to_gguf.py does not
    details = pd.DataFrame(
        [
            {
                "name": m.name,
                "tensor": m.tensor,
                "layer": m.layer,
                "expert": m.expert,
                "proj": m.proj,
                "role": m.role.value,
                "rows": m.shape[0],
                "cols": m.shape[1],
                "params": m.params,
                "alpha": 3.0,
                "status": "success",
            }
            for m in ckpt.matrices
        ]
    )
    refs = {m.name: m for m in ckpt.matrices}
    plan = make_plan(
        details,
        lambda n: ckpt.read_matrix(refs[n]),
        PlanConfig(budget="4", granularity="layer"),
        provenance={"checkpoint": {"path": str(ckpt.path), "fingerprint": ckpt.fingerprint}},
    )
    save_plan(plan, tmp_path / "plan.json")
    code, output = run_cli(
        [
            "export",
            str(tmp_path / "plan.json"),
            "--format",
            "gguf",
            "--out",
            str(tmp_path / "phimoe.gguf"),
            "--allow-fallback",
        ]
    )
    assert code == 2 and output.count("error:") == 1
    assert "does not support architecture PhimoeForCausalLM" in output
    assert gguf_files(tmp_path) == []
