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
    """``alphaq plan --target gguf --budget Q3_K_M`` on the tiny Mixtral: a whole-model plan, errors measured by
    llama-quantize, the budget the size llama-quantize's Q3_K_M preset gives it (self-Fisher on 2 sequences)."""
    out = tmp_path_factory.mktemp("gguf-plan") / "run"
    args = ["plan", str(tiny), "--target", "gguf", "--budget", "Q3_K_M", "--fisher-sequences", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-html"])
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


def test_whole_model_plan_is_measured_by_llama_cpp(planned: Path, tools: LlamaCppTools, tmp_path: Path) -> None:
    from alphaq.export.gguf_io import quantize_gguf
    from alphaq.export.gguf_measure import MODEL_TYPES

    m = json.loads((planned / "gguf" / "measurements.json").read_text())
    assert m["types"] == list(MODEL_TYPES)
    names = [w["name"] for w in m["weights"]]
    per_layer = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")
    assert sorted(names) == sorted(["token_embd.weight"] + [f"blk.{i}.{k}.weight" for i in range(2) for k in per_layer])
    errors = np.asarray(m["sq_error"])  # [tensors, types]
    assert np.all(np.diff(errors, axis=1) < 0) and np.all(errors[:, -1] == 0)  # more bits, less error; F16 exact
    rel = errors[:, 0] / np.asarray(m["sq_norm"])
    assert np.all((rel > 0.05) & (rel < 0.15))  # Q2_K: ~9 % of the squared norm, as llama.cpp quantizes
    fisher = np.asarray(m["weighted_error"]["fisher"])
    assert np.all(fisher[:, :-1] > 0) and np.all(np.diff(fisher, axis=1) <= 0)
    plan = json.loads((planned / "plan.json").read_text())
    gguf = plan["provenance"]["gguf"]
    assert sorted(gguf["types"]) == sorted(names) and len(set(gguf["types"].values())) > 1  # a mixture
    preset = tmp_path / "q3km.gguf"
    quantize_gguf(tools, planned / "gguf" / "model-f16.gguf", preset, tensor_type_file=None, base_type="Q3_K_M")
    assert gguf["capacity"] == preset.stat().st_size  # --budget Q3_K_M: the preset's real size
    assert 0.99 * gguf["capacity"] <= gguf["file_bytes"] <= gguf["capacity"]
    assert plan["provenance"]["budget"] | {"resolved": None} == {
        "given": "Q3_K_M",
        "kind": "preset",
        "value": 0.0,
        "resolved": None,
    }
    experts = [t for t in plan["tensors"] if t["role"] == "expert"]
    widths: dict[tuple[int, str], set[int]] = {}
    for t in experts:
        widths.setdefault((t["layer"], t["proj"]), set()).add(t["bits"])
    assert all(len(v) == 1 for v in widths.values())  # one type per GGUF expert tensor


def test_export_writes_every_planned_type_and_the_predicted_size(
    planned: Path, exported: tuple[Path, str], tools: LlamaCppTools
) -> None:
    import gguf

    out, output = exported
    plan = json.loads((planned / "plan.json").read_text())
    want = plan["provenance"]["gguf"]["types"]
    reader = gguf.GGUFReader(str(out))  # read independently of alphaq's own read-back
    stored = {t.name: t.tensor_type.name for t in reader.tensors}
    assert {n: stored[n] for n in want} == want
    assert stored["blk.0.ffn_gate_inp.weight"] == "F32"  # routers: never quantized by llama.cpp
    assert out.stat().st_size == plan["provenance"]["gguf"]["file_bytes"]  # the size predicted, to the byte
    record = json.loads((planned / "gguf_export.json").read_text())
    check = record["verification"]
    assert check["ok"] and check["problems"] == []
    assert check["file_bytes"] == check["predicted_file_bytes"] == out.stat().st_size
    assert record["llama_cpp"]["llama_cpp_python"] == tools.info.get("llama_cpp_python")
    assert "ok" in output and "MISMATCH" not in output
    assert [p.name for p in gguf_files(planned)] == ["model-f16.gguf", "tiny-alphaq.gguf"]  # no temporary file
    from alphaq.report.plan_page import render_plan

    page = render_plan(planned).read_text(encoding="utf-8")  # the record reaches the plan report
    assert "GGUF export (llama.cpp)" in page and "Whole-model GGUF plan" in page and "MISMATCH" not in page


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


@pytest.mark.parametrize(
    ("budget", "message"),
    [("1MB", "below the smallest GGUF these types can make"), ("Q9_K", "not a llama-quantize preset")],
)
def test_budgets_that_cannot_be_planned_are_refused_in_one_line(
    planned: Path, tiny: Path, tmp_path: Path, budget: str, message: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(planned, run, ignore=shutil.ignore_patterns("*.gguf", "plan.json"))
    args = ["plan", str(tiny), "--target", "gguf", "--budget", budget, "--fisher-sequences", "2"]
    code, output = run_cli([*args, "--out", str(run), "--no-html"])
    assert code == 2
    assert output.strip().count("\n") == 0 and message in output
    assert not (run / "plan.json").exists()


def test_plan_without_the_tools_names_the_build_command(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHAQ_LLAMACPP_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", "/nonexistent")
    args = ["plan", str(tiny), "--target", "gguf", "--budget", "Q3_K_M", "--fisher-sequences", "2"]
    code, output = run_cli([*args, "--out", str(tmp_path / "run"), "--no-html"])
    assert code == 2 and output.strip().count("\n") == 0
    assert "llama.cpp tools not found" in output and BUILD_COMMAND in output
    assert not (tmp_path / "run" / "plan.json").exists() and gguf_files(tmp_path) == []


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
