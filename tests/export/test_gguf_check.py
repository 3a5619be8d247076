"""The pure side of the GGUF export: the gguf planner target's costs, verification of a read-back GGUF against a
plan, parsing llama.cpp's output, and the converter shim's tokenizer test (no llama.cpp needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphaq.errors import ConfigError, PlanError
from alphaq.export.convert_shim import is_gpt2_pretokenizer, needs_no_mtp
from alphaq.export.ggml_types import GGUF_WIDTHS, gguf_bits_per_weight, gguf_matrix_nbytes
from alphaq.export.gguf_check import last_error_line, parse_perplexity, vendored_commit, verify_gguf
from alphaq.export.llamacpp import ExportOptions, export_llamacpp
from alphaq.planning.costs import MatrixErrors
from alphaq.planning.planner import PlanConfig, make_plan

H, I, E = 256, 512, 2  # hidden, expert intermediate, experts


def details() -> pd.DataFrame:
    rows = []
    for layer in range(2):
        for expert in range(E):
            for proj, shape in (("gate", (I, H)), ("up", (I, H)), ("down", (H, I))):
                name = f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{proj}.weight"
                rows.append(
                    {
                        "name": name,
                        "tensor": name,
                        "layer": layer,
                        "expert": expert,
                        "proj": proj,
                        "role": "expert",
                        "rows": shape[0],
                        "cols": shape[1],
                        "params": shape[0] * shape[1],
                        "alpha": 3.0 + layer + 0.1 * expert,
                        "status": "success",
                    }
                )
        name = f"model.layers.{layer}.self_attn.q_proj.weight"
        rows.append(
            {
                "name": name,
                "tensor": name,
                "layer": layer,
                "expert": None,
                "proj": "q",
                "role": "attention",
                "rows": H,
                "cols": H,
                "params": H * H,
                "alpha": np.nan,
                "status": "not_fitted",
            }
        )
    frame = pd.DataFrame(rows)
    frame["layer"] = frame["layer"].astype("Int64")
    frame["expert"] = frame["expert"].astype("Int64")
    return frame


def llama_errors(frame: pd.DataFrame, widths: tuple[int, ...]) -> MatrixErrors:
    """Errors as llama.cpp would give them: halving per width step, layer 1's down projections the worst."""
    experts = frame[frame["role"] == "expert"].reset_index(drop=True)
    base = np.where(experts["proj"] == "down", 0.2, 0.1) * (1 + experts["layer"].to_numpy(dtype=float))
    error = base[:, None] * 0.5 ** np.arange(len(widths))[None, :]
    return MatrixErrors(tuple(experts["name"]), widths, error, np.ones(len(experts)), "measured")


def gguf_plan(budget: str):
    """A layer-granularity plan over the GGUF widths (what the export maps to one type per expert tensor)."""
    frame = details()
    config = PlanConfig(budget=budget, granularity="layer", widths=GGUF_WIDTHS)
    return make_plan(
        frame, None, config, provenance={"checkpoint": {"fingerprint": "f"}}, errors=llama_errors(frame, config.widths)
    )


def test_gguf_target_defaults_widths_forces_layers_and_rejects_other_widths() -> None:
    config = PlanConfig(budget="3", target="gguf")
    assert config.widths == GGUF_WIDTHS == (2, 3, 4, 5, 6, 8)
    assert config.granularity == "layer"
    assert PlanConfig(budget="3").widths == (2, 3, 4, 8)
    with pytest.raises(ConfigError, match="width.s. 1,7 have no ggml type"):
        PlanConfig(budget="3", target="gguf", widths="1,2,7")
    with pytest.raises(ConfigError, match="--target 'exl2' is unknown"):
        PlanConfig(budget="3", target="exl2")
    assert PlanConfig(budget="3", target="gguf", granularity="layer").granularity == "layer"
    with pytest.raises(ConfigError, match="--granularity expert cannot be kept; drop --granularity"):
        PlanConfig(budget="3", target="gguf", granularity="expert")  # refused, not silently replaced


def test_gguf_bytes_are_llama_cpp_block_bytes_with_its_shape_fallback() -> None:
    assert [gguf_bits_per_weight(w) for w in GGUF_WIDTHS] == [2.625, 3.4375, 4.5, 5.5, 6.5625, 8.5]
    assert gguf_matrix_nbytes(512, 256, 2) == 512 * 84  # one Q2_K super-block per row
    assert gguf_matrix_nbytes(256, 512, 8) == 256 * 16 * 34  # sixteen Q8_0 blocks per row
    assert gguf_matrix_nbytes(256, 384, 2) == 256 * 12 * 18  # 384 % 256 != 0: Q4_0, as llama-quantize stores it


def test_gguf_plans_are_not_made_by_the_expert_planner() -> None:
    with pytest.raises(PlanError, match="plans the whole GGUF file with llama.cpp"):
        make_plan(details(), lambda name: None, PlanConfig(budget="3", target="gguf"), provenance={})


def test_verify_accepts_the_planned_file_and_names_each_mismatch() -> None:
    plan = gguf_plan("3.5")
    export = export_llamacpp(plan, ExportOptions(keep_type="f16"))
    found = {f"{t.name}.weight": (t.stored_type, t.gguf_bytes) for t in export.tensors}
    found["blk.0.attn_norm.weight"] = ("F32", 1024)
    ok = verify_gguf(
        export,
        found,
        file_bytes=sum(b for _, b in found.values()) + 5000,
        plan_expert_bytes=plan.summary["expert_bytes"],
    )
    assert ok.ok and ok.problems() == []
    assert ok.expert_bytes == ok.predicted_expert_bytes  # ggml bytes (the plan counts alphaq's layout)
    assert ok.to_dict()["metadata_bytes"] == 5000
    assert ok.other == {"blk.0.attn_norm.weight": "F32"}
    first = next(t for t in export.tensors if t.role == "expert")
    wrong = "Q8_0" if first.stored_type != "Q8_0" else "Q6_K"
    found[f"{first.name}.weight"] = (wrong, first.gguf_bytes)
    del found["blk.1.attn_q.weight"]
    bad = verify_gguf(export, found, file_bytes=1, plan_expert_bytes=plan.summary["expert_bytes"])
    assert not bad.ok
    problems = bad.problems()
    assert f"{first.name}.weight: expected {first.stored_type}" in problems[0] and f"file has {wrong}" in problems[0]
    assert any("blk.1.attn_q.weight" in p and "no such tensor" in p for p in problems)


def test_parse_perplexity_and_tool_output() -> None:
    out = (
        "perplexity: calculating perplexity over 12 chunks, n_ctx=256, batch_size=2048, n_seq=8\n"
        "[1]90.1,[2]95.3\nFinal estimate: PPL = 99.4532 +/- 5.32053\n"
    )
    result = parse_perplexity(out)
    assert (result.ppl, result.stderr, result.chunks, result.n_ctx) == (99.4532, 5.32053, 12, 256)
    with pytest.raises(ValueError, match="no 'Final estimate"):
        parse_perplexity("perplexity: tokenizing the input ..\n")
    assert (
        last_error_line("loading\nmain: error: failed to quantize model\nbye\n")
        == "main: error: failed to quantize model"
    )
    changelog = (
        "## [Unreleased]\n\n## [0.3.36]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@0c1e57098\n\n"
        "## [0.3.35]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@4df29be4f\n"
    )
    assert vendored_commit(changelog, "0.3.36") == "0c1e57098"
    assert vendored_commit(changelog, "0.3.35") == "4df29be4f"
    assert vendored_commit(changelog, "0.1.0") is None


def test_shim_names_only_gpt2_style_pretokenizers() -> None:
    gpt2 = {
        "model": {"type": "BPE"},
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    }
    assert is_gpt2_pretokenizer(gpt2)
    assert not is_gpt2_pretokenizer({**gpt2, "pre_tokenizer": {**gpt2["pre_tokenizer"], "add_prefix_space": True}})
    assert not is_gpt2_pretokenizer({**gpt2, "pre_tokenizer": {"type": "Sequence", "pretokenizers": []}})
    assert not is_gpt2_pretokenizer({**gpt2, "model": {"type": "Unigram"}})
    assert not is_gpt2_pretokenizer({**gpt2, "normalizer": {"type": "NFC"}})


def test_shim_converts_mtp_architectures_without_mtp_tensors_with_no_mtp(tmp_path) -> None:
    import torch
    from safetensors.torch import save_file

    def folder(name: str, tensors: list[str]) -> Path:
        d = tmp_path / name
        d.mkdir()
        save_file({t: torch.zeros(2, 2) for t in tensors}, str(d / "model.safetensors"))
        return d

    saved = folder("saved", ["model.layers.0.mlp.gate.weight"])  # transformers' save_pretrained: no mtp.*
    hub = folder("hub", ["model.layers.0.mlp.gate.weight", "mtp.fc.weight"])
    assert needs_no_mtp({"architectures": ["Qwen3NextForCausalLM"]}, saved)
    assert needs_no_mtp({"architectures": ["Qwen3_5MoeForConditionalGeneration"]}, saved)
    assert not needs_no_mtp({"architectures": ["Qwen3NextForCausalLM"]}, hub)
    assert not needs_no_mtp({"architectures": ["Qwen3MoeForCausalLM"]}, saved)  # no MTP export: no --no-mtp
