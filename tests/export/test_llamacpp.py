"""alphaq export --format llama.cpp: GGUF names, width -> ggml type, rounding cost by hand, the CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from alphaq.cli.export import DEFAULT_OVERRIDES_NAME, export
from alphaq.errors import ConfigError
from alphaq.export.llamacpp import (
    GGML_TYPES,
    WIDTH_TO_GGML,
    ExportOptions,
    export_llamacpp,
    format_report,
    ggml_nbytes,
    gguf_names,
    mla_head_dims,
    split_rows,
    width_to_ggml,
)
from alphaq.planning.plan_file import Plan, PlanTensor, plan_from_dict, save_plan
from alphaq.planning.units import matrix_nbytes

H, I = 256, 512  # hidden and expert intermediate size: every k-quant block divides both
# (gate, up, down) widths of experts 0..3, per layer. Layer 0: gate 2/3/4/2 -> 4, up all 2, down all 3.
# Layer 1: gate 8/7/1/1 -> 8, up 5/1/1/1 -> 5, down all 6.
WIDTHS = {0: [(2, 2, 3), (3, 2, 3), (4, 2, 3), (2, 2, 3)], 1: [(8, 5, 6), (7, 1, 6), (1, 1, 6), (1, 1, 6)]}
# Every expert matrix (512x256 gate/up, 256x512 down, group 128) stores 16384*b payload bytes + 4096 bytes of
# fp16 scales and zeros. Widest minus planned width, summed over matrices: L0 gate 2+1+0+2 = 5, L1 gate 0+1+7+7
# = 15, L1 up 0+4+4+4 = 12, all others 0 -> 32 widths * 16384 bytes.
ROUNDING_BYTES = 32 * 16384
PLAN_EXPERT_BYTES = 16384 * (11 + 8 + 12 + 17 + 8 + 24) + 24 * 4096
# GGUF: each expert tensor holds 4 x 131072 = 524288 weights = 65536 * bits-per-weight bytes.
GGUF_EXPERT_BYTES = 65536 * (4.5 + 2.625 + 3.4375 + 8.5 + 5.5 + 6.5625)

EXPECTED_LINES = [
    r"^blk\.0\.attn_k\.weight$=bf16",
    r"^blk\.0\.attn_output\.weight$=bf16",
    r"^blk\.0\.attn_q\.weight$=bf16",
    r"^blk\.0\.attn_v\.weight$=bf16",
    r"^blk\.0\.ffn_down_exps\.weight$=q3_k",
    r"^blk\.0\.ffn_gate_exps\.weight$=q4_k",
    r"^blk\.0\.ffn_gate_shexp\.weight$=q8_0",
    r"^blk\.0\.ffn_up_exps\.weight$=q2_k",
    r"^blk\.1\.attn_k\.weight$=bf16",
    r"^blk\.1\.attn_output\.weight$=bf16",
    r"^blk\.1\.attn_q\.weight$=bf16",
    r"^blk\.1\.attn_v\.weight$=bf16",
    r"^blk\.1\.ffn_down_exps\.weight$=q6_k",
    r"^blk\.1\.ffn_gate_exps\.weight$=q8_0",
    r"^blk\.1\.ffn_up_exps\.weight$=q5_k",
]


def _t(
    name: str,
    role: str,
    proj: str | None,
    rows: int,
    cols: int,
    bits: int,
    layer: int | None = None,
    expert: int | None = None,
) -> PlanTensor:
    group = None if bits == 16 else 128
    return PlanTensor(
        name=name,
        tensor=name,
        layer=layer,
        expert=expert,
        proj=proj,
        role=role,
        rows=rows,
        cols=cols,
        params=rows * cols,
        bits=bits,
        group_size=group,
        bytes=matrix_nbytes(rows, cols, bits, group or 8),
        error=0.0 if bits == 16 else 0.1,
        unit=f"L{layer}.E{expert}" if role == "expert" else None,
    )


def make_plan(layer_granularity: bool = False) -> Plan:
    """2 layers x 4 experts, attention and routers in bf16, a shared expert at 8 bits and an unknown matrix."""
    tensors = [
        _t("model.embed_tokens.weight", "embedding", "embed", 1000, H, 16),
        _t("lm_head.weight", "lm_head", "lm_head", 1000, H, 16),
    ]
    for layer, experts in WIDTHS.items():
        widest = [max(w[i] for w in experts) for i in range(3)]
        for e, widths in enumerate(experts):
            gate, up, down = widest if layer_granularity else widths
            base = f"model.layers.{layer}.mlp.experts.{e}."
            tensors += [
                _t(base + "gate_proj.weight", "expert", "gate", I, H, gate, layer, e),
                _t(base + "up_proj.weight", "expert", "up", I, H, up, layer, e),
                _t(base + "down_proj.weight", "expert", "down", H, I, down, layer, e),
            ]
        for proj, rows in (("q", H), ("k", 128), ("v", 128), ("o", H)):
            tensors.append(
                _t(f"model.layers.{layer}.self_attn.{proj}_proj.weight", "attention", proj, rows, H, 16, layer)
            )
        tensors.append(_t(f"model.layers.{layer}.mlp.gate.weight", "router", "router", 4, H, 16, layer))
    tensors.append(_t("model.layers.0.mlp.shared_expert.gate_proj.weight", "shared_expert", "gate", I, H, 8, 0))
    tensors.append(_t("model.layers.0.mystery.weight", "other", "weight", 64, H, 16, 0))
    granularity = "layer" if layer_granularity else "expert"
    plan = Plan(provenance={"options": {"granularity": granularity}}, summary={}, tensors=tuple(tensors))
    return plan_from_dict(plan.to_dict())  # validated like a file: byte formula, widths, fingerprint


def test_width_table_is_the_nearest_kquant_at_or_above():
    assert WIDTH_TO_GGML == {1: "Q2_K", 2: "Q2_K", 3: "Q3_K", 4: "Q4_K", 5: "Q5_K", 6: "Q6_K", 7: "Q8_0", 8: "Q8_0"}
    bpw = {name: GGML_TYPES[name].bits_per_weight for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0")}
    assert bpw == {"Q2_K": 2.625, "Q3_K": 3.4375, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625, "Q8_0": 8.5}
    assert all(bpw[t] >= w for w, t in WIDTH_TO_GGML.items())
    assert width_to_ggml(16, "bf16") == "BF16" and width_to_ggml(16, "q8_0") == "Q8_0"
    with pytest.raises(ConfigError, match="width 9"):
        width_to_ggml(9)


def test_ggml_bytes_and_shape_fallbacks():
    assert ggml_nbytes("Q4_K", 10, 512) == (10 * 2 * 144, "Q4_K")
    assert ggml_nbytes("Q4_K", 10, 384) == (10 * 12 * 22, "Q5_0")  # 384 % 256 != 0 -> Q5_0 (block 32)
    assert ggml_nbytes("Q3_K", 10, 384) == (10 * 12 * 18, "Q4_0")
    assert ggml_nbytes("Q6_K", 10, 96) == (10 * 3 * 34, "Q8_0")
    assert ggml_nbytes("Q4_K", 10, 100) == (10 * 100 * 2, "F16")  # not even a multiple of 32
    assert ggml_nbytes("BF16", 3, 7) == (42, "BF16")


def test_gguf_names():
    def names(role, proj, layer=5, rows=8, **kw):
        mapped = gguf_names(_t("m", role, proj, rows, 256, 16, layer), **kw)
        return None if mapped is None else [(list(n), r) for n, r in mapped]

    assert names("expert", "down") == [(["blk.5.ffn_down_exps"], 8)]
    assert names("expert", "up", fused_gate_up=True) == [(["blk.5.ffn_gate_up_exps"], 8)]
    assert names("shared_expert", "gate") == [(["blk.5.ffn_gate_shexp"], 8)]
    assert names("shared_expert", "gate_up") == [(["blk.5.ffn_gate_shexp"], 4), (["blk.5.ffn_up_shexp"], 4)]
    assert names("dense_mlp", "up") == [(["blk.5.ffn_up"], 8)]
    assert names("attention", "o") == [(["blk.5.attn_output"], 8)]
    assert names("attention", "kv_b_proj") == [(["blk.5.attn_k_b", "blk.5.attn_kv_b"], 4), (["blk.5.attn_v_b"], 4)]
    # GLM-4.7-Flash: qk_nope 192, v 256 per head; 2 heads -> 384 rows to attn_k_b, 512 to attn_v_b
    glm = names("attention", "kv_b_proj", rows=2 * 448, mla_head_dims=(192, 256))
    assert glm == [(["blk.5.attn_k_b", "blk.5.attn_kv_b"], 384), (["blk.5.attn_v_b"], 512)]
    assert mla_head_dims({"qk_nope_head_dim": 192, "v_head_dim": 256, "kv_lora_rank": 512}) == (192, 256)
    assert mla_head_dims({"hidden_size": 64}) is None
    assert names("router", "router") == [(["blk.5.ffn_gate_inp"], 8)]
    assert names("router", "shared_gate") == [(["blk.5.ffn_gate_inp_shexp"], 8)]
    assert names("embedding", "embed", layer=None) == [(["token_embd"], 8)]
    assert names("lm_head", "lm_head", layer=None) == [(["output"], 8)]
    assert names("other", "weight") is None
    assert names("expert", "down", layer=None) is None
    assert names("attention", "mystery") is None
    assert names("attention", "linear_gate") == [(["blk.5.attn_gate"], 8)]  # HY_V4's gated MLA output


def test_gguf_names_of_hy_v4_hyper_connections():
    def names(tensor, layer):
        mapped = gguf_names(dataclasses.replace(_t("m", "other", "weight", 8, 1024, 16, layer), tensor=tensor))
        return None if mapped is None else [(list(n), r) for n, r in mapped]

    assert names("model.layers.3.hc_attn_layer.hc_pre.hc_fn", 3) == [(["blk.3.hc_attn_fn"], 8)]
    assert names("model.layers.3.hc_mlp_layer.hc_pre.hc_fn", 3) == [(["blk.3.hc_ffn_fn"], 8)]
    assert names("model.hc_head.hc_head_fn", None) == [(["output_hc_fn"], 8)]
    assert names("model.layers.3.hc_attn_layer.hc_pre.hc_base", 3) is None


def test_gguf_names_of_linear_attention_mamba_and_hyper_connection_families():
    def names(tensor, role, proj, rows=8, layer=3, **kw):
        mapped = gguf_names(_t(tensor, role, proj, rows, 256, 16, layer), **kw)
        return None if mapped is None else [(list(n), r) for n, r in mapped]

    # Qwen3-Next: in_proj_qkvz regrouped into attn_qkv and attn_gate (z: linear_num_value_heads * value dim)
    qkvz = "model.layers.3.linear_attn.in_proj_qkvz.weight"
    cfg = {"linear_num_value_heads": 4, "linear_value_head_dim": 64, "linear_num_key_heads": 2}
    assert split_rows(cfg) == {"in_proj_qkvz": 256}
    assert names(qkvz, "attention", "in_proj_qkvz", 768, split_rows=split_rows(cfg)) == [
        (["blk.3.attn_qkv"], 512),
        (["blk.3.attn_gate"], 256),
    ]
    assert names(qkvz, "attention", "in_proj_qkvz", 256) == [(["blk.3.attn_qkv"], 192), (["blk.3.attn_gate"], 64)]
    assert names("model.layers.3.linear_attn.in_proj_ba.weight", "attention", "in_proj_ba") == [(["blk.3.ssm_ba"], 8)]
    assert names("model.layers.3.linear_attn.out_proj.weight", "attention", "o") == [(["blk.3.ssm_out"], 8)]
    assert names("model.layers.3.self_attn.o_proj.weight", "attention", "o") == [(["blk.3.attn_output"], 8)]
    # Qwen3.5: already split
    assert names("model.layers.3.linear_attn.in_proj_z.weight", "attention", "in_proj_z") == [(["blk.3.attn_gate"], 8)]
    assert names("model.layers.3.linear_attn.in_proj_a.weight", "attention", "in_proj_a") == [(["blk.3.ssm_alpha"], 8)]
    # Kimi Linear's KDA gates
    assert names("model.layers.3.self_attn.f_b_proj.weight", "attention", "f_b_proj") == [(["blk.3.ssm_f_b"], 8)]
    assert names("model.layers.3.self_attn.b_proj.weight", "attention", "b_proj") == [(["blk.3.ssm_beta"], 8)]
    # Mamba mixers (role other): Nemotron-H mixer.*, Jamba / Granite-hybrid mamba.*
    assert names("backbone.layers.3.mixer.in_proj.weight", "other", "weight") == [(["blk.3.ssm_in"], 8)]
    assert names("model.layers.3.mamba.x_proj.weight", "other", "weight") == [(["blk.3.ssm_x"], 8)]
    assert names("model.layers.3.mamba.dt_proj.weight", "other", "weight") == [(["blk.3.ssm_dt"], 8)]
    # Qwen4-Exp: hyper-connections, the QSA indexer's fused q|k projection, per-layer n-gram embeddings
    hc = "model.layers.3.mlp_hyper_connection.block_inject_weight.weight"
    assert names(hc, "other", "weight") == [(["blk.3.hc_ffn_inject"], 8)]
    mixer = "model.hyper_connection_mixer.input_mix_weight_up.weight"
    assert names(mixer, "other", "weight", layer=None) == [(["output_hc_up"], 8)]
    qk = "model.layers.3.self_attn.indexer.index_qk_proj.weight"
    cfg = {"text_config": {"indexer_n_heads": 4, "indexer_kv_heads": 1, "indexer_head_dim": 64}}
    assert split_rows(cfg) == {"index_qk_proj": 64}
    assert names(qk, "other", "weight", 320, split_rows=split_rows(cfg)) == [
        (["blk.3.indexer.q_proj"], 256),
        (["blk.3.indexer.k_proj"], 64),
    ]
    shard = "model.layers.0.ple.ple_embedding.ngram_embedding.shard_7.weight"
    assert names(shard, "other", "weight") == [(["per_layer_token_embd"], 8)]
    assert names("model.layers.3.ple.value_proj.weight", "other", "weight") == [(["blk.3.ple_value"], 8)]


def test_per_expert_plan_overrides_and_rounding_cost_by_hand():
    result = export_llamacpp(make_plan())
    assert result.tensor_type_lines() == EXPECTED_LINES
    assert result.tensor_type_file_text() == "\n".join(EXPECTED_LINES) + "\n"
    assert result.flags() == ["--token-embedding-type", "bf16", "--output-tensor-type", "bf16"]
    cost = result.cost
    assert cost.expert_params == 24 * 131072
    assert cost.expert_plan_bytes == PLAN_EXPERT_BYTES == 1409024
    assert cost.rounding_bytes == ROUNDING_BYTES == 524288
    assert cost.expert_rounded_bytes == PLAN_EXPERT_BYTES + ROUNDING_BYTES
    assert cost.expert_gguf_bytes == GGUF_EXPERT_BYTES == 2039808
    by_name = {t.name: t for t in result.tensors}
    gate0 = by_name["blk.0.ffn_gate_exps"]
    assert (gate0.ggml_type, gate0.bits, gate0.planned_bits, gate0.matrices) == ("Q4_K", 4, (2, 3, 4), 4)
    router = by_name["blk.0.ffn_gate_inp"]
    assert router.via == "unquantized" and router.gguf_bytes == 4 * H * 4  # F32
    # kept: attention + routers + shared expert + embedding + lm_head; GGUF: routers F32, shared Q8_0
    attn = 2 * (H + 128 + 128 + H) * H
    assert cost.kept_params == attn + 2 * 4 * H + I * H + 2 * 1000 * H
    assert cost.kept_gguf_bytes == 2 * attn + 2 * 4 * H * 4 + I * H * 34 // 32 + 2 * 2 * 1000 * H
    assert any("skipped 1 matrix" in n and "mystery" in n for n in result.notes)
    assert any("rounded up" in n and "blk.0.ffn_gate_exps 2/3/4 -> 4" in n for n in result.notes)
    assert any("never quantized" in n for n in result.notes)
    assert not any("falls back" in n for n in result.notes)


def test_rounding_matches_the_planner_comparison():
    from alphaq.planning.run import rounded_up_bytes

    plan = make_plan()
    assert export_llamacpp(plan).cost.expert_rounded_bytes == rounded_up_bytes(plan)


def test_layer_plan_maps_exactly_without_rounding_cost():
    result = export_llamacpp(make_plan(layer_granularity=True))
    assert result.tensor_type_lines() == EXPECTED_LINES
    assert result.cost.rounding_bytes == 0
    assert result.cost.expert_plan_bytes == PLAN_EXPERT_BYTES + ROUNDING_BYTES
    assert result.cost.expert_gguf_bytes == GGUF_EXPERT_BYTES
    assert not any("rounded up" in n for n in result.notes)
    assert result.granularity == "layer"


def test_fused_gate_up_rounds_gate_and_up_together():
    result = export_llamacpp(make_plan(), ExportOptions(fused_gate_up=True))
    lines = [line for line in result.tensor_type_lines() if "exps" in line]
    assert lines == [
        r"^blk\.0\.ffn_down_exps\.weight$=q3_k",
        r"^blk\.0\.ffn_gate_up_exps\.weight$=q4_k",
        r"^blk\.1\.ffn_down_exps\.weight$=q6_k",
        r"^blk\.1\.ffn_gate_up_exps\.weight$=q8_0",
    ]
    # L0 gate+up to 4: 5 + 4*2 = 13 widths; L1 gate+up to 8: 15 + (3 + 7 + 7 + 7) = 39 widths
    assert result.cost.rounding_bytes == (13 + 39) * 16384


def test_keep_type_base_writes_no_override_for_kept_matrices():
    result = export_llamacpp(make_plan(), ExportOptions(base_type="q4_k_m", keep_type="base"))
    assert result.options.base_type == "Q4_K_M"
    assert [line for line in result.tensor_type_lines() if "attn" in line] == []
    assert result.flags() == []
    assert r"^blk\.0\.ffn_gate_shexp\.weight$=q8_0" in result.tensor_type_lines()
    by_name = {t.name: t for t in result.tensors}
    assert (by_name["blk.1.attn_q"].via, by_name["blk.1.attn_q"].ggml_type) == ("base", "Q4_K")
    assert by_name["output"].ggml_type == "Q6_K"  # llama.cpp's mixture: output.weight Q6_K unless the base is Q8_0
    assert "Q4_K_M" in result.command("t.txt").split()[-1]


def test_tensors_llama_quantize_never_quantizes_get_no_override_and_are_not_verified():
    qk = _t("model.layers.1.self_attn.indexer.index_qk_proj.weight", "other", "weight", 320, H, 16, 1)
    plan = make_plan()
    plan = plan_from_dict(Plan(provenance=plan.provenance, summary={}, tensors=(*plan.tensors, qk)).to_dict())
    result = export_llamacpp(plan, ExportOptions(keep_type="f16", split_rows={"index_qk_proj": 64}))
    by_name = {t.name: t for t in result.tensors}
    assert [(by_name[n].via, by_name[n].ggml_type) for n in ("blk.1.indexer.q_proj", "blk.1.indexer.k_proj")] == [
        ("source", "BF16"),
        ("source", "BF16"),
    ]
    assert not any("indexer" in line for line in result.tensor_type_lines())
    assert any("never quantized by llama-quantize" in n for n in result.notes)


def test_keep_q8_0_and_command():
    result = export_llamacpp(make_plan(), ExportOptions(keep_type="q8_0"))
    assert r"^blk\.1\.attn_v\.weight$=q8_0" in result.tensor_type_lines()
    assert result.command("run dir/types.txt", "in.gguf", "out.gguf") == (
        "llama-quantize --tensor-type-file 'run dir/types.txt' --token-embedding-type q8_0 "
        "--output-tensor-type q8_0 in.gguf out.gguf Q8_0"
    )


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"base_type": "F16"}, "base type 'F16'"),
        ({"base_type": "IQ2_XXS"}, "base type"),
        ({"keep_type": "fp8"}, "keep type 'fp8'"),
    ],
)
def test_bad_options(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        ExportOptions(**kwargs)


def test_shape_fallback_is_reported():
    plan = make_plan()
    tensors = tuple(
        dataclasses.replace(t, cols=384, params=t.rows * 384, bytes=matrix_nbytes(t.rows, 384, t.bits, 128))
        if t.role == "expert" and t.proj != "down"
        else t
        for t in plan.tensors
    )
    result = export_llamacpp(Plan(provenance={}, summary={}, tensors=tensors))
    gate1 = {t.name: t for t in result.tensors}["blk.1.ffn_gate_exps"]
    assert (gate1.ggml_type, gate1.stored_type) == ("Q8_0", "Q8_0")  # 384 % 32 == 0
    gate0 = {t.name: t for t in result.tensors}["blk.0.ffn_gate_exps"]
    assert (gate0.stored_type, gate0.gguf_bytes) == ("Q5_0", 4 * I * 12 * 22)
    assert any("falls back" in n and "Q4_K -> Q5_0" in n for n in result.notes)
    assert result.granularity is None


def test_report_lines():
    text = "\n".join(format_report(export_llamacpp(make_plan())))
    assert "rounding costs" in text and "+524,288 bytes" in text and "(+37.2%)" in text
    assert "2,039,808 bytes" in text and "plan granularity: expert" in text
    assert "expert types: Q2_K x1, Q3_K x1, Q4_K x1, Q5_K x1, Q6_K x1, Q8_0 x1" in text


# --- CLI -----------------------------------------------------------------------------------------------

runner = CliRunner()
cli = typer.Typer()
cli.command()(export)


@cli.callback()
def _root() -> None:
    """Test app with the export command registered like the main app does."""


def _saved_plan(tmp_path: Path) -> Path:
    return save_plan(make_plan(), tmp_path / "run" / "plan.json")


def test_cli_writes_overrides_and_prints_command_and_cost(tmp_path):
    plan = _saved_plan(tmp_path)
    result = runner.invoke(cli, ["export", str(plan), "--gguf", str(tmp_path / "m-BF16.gguf")])
    assert result.exit_code == 0, result.output
    written = plan.parent / DEFAULT_OVERRIDES_NAME
    assert written.read_text(encoding="utf-8").splitlines() == EXPECTED_LINES
    assert (
        f"llama-quantize --tensor-type-file {written} --token-embedding-type bf16 --output-tensor-type bf16 "
        f"{tmp_path / 'm-BF16.gguf'} {tmp_path / 'm-BF16-alphaq.gguf'} Q8_0"
    ) in result.output
    assert "+524,288 bytes" in result.output and "note: skipped 1 matrix" in result.output
    assert sorted(p.name for p in plan.parent.iterdir()) == sorted([DEFAULT_OVERRIDES_NAME, "plan.json"])


def test_cli_overwrites_out_atomically(tmp_path):
    plan = _saved_plan(tmp_path)
    out = tmp_path / "elsewhere" / "types.txt"
    out.parent.mkdir()
    out.write_text("old\n")
    result = runner.invoke(cli, ["export", str(plan), "--out", str(out), "--keep-type", "base", "-f", "llama.cpp"])
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == [line for line in EXPECTED_LINES if "attn" not in line]
    assert [p.name for p in out.parent.iterdir()] == ["types.txt"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--format", "vllm"], "unknown export format 'vllm'"),
        (["--base-type", "bf16"], "base type 'bf16'"),
        (["--keep-type", "int4"], "keep type 'int4'"),
    ],
)
def test_cli_bad_options_one_line_no_file(tmp_path, args, needle):
    plan = _saved_plan(tmp_path)
    result = runner.invoke(cli, ["export", str(plan), *args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output
    assert not (plan.parent / DEFAULT_OVERRIDES_NAME).exists()


@pytest.mark.parametrize("content, needle", [("{not json", "not valid JSON"), (None, "cannot read plan")])
def test_cli_bad_plan_file(tmp_path, content, needle):
    plan = tmp_path / "plan.json"
    if content is not None:
        plan.write_text(content)
    result = runner.invoke(cli, ["export", str(plan)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and needle in lines[0], result.output
    assert not (tmp_path / DEFAULT_OVERRIDES_NAME).exists()


def test_patterns_match_only_their_own_weight():
    """llama-quantize uses std::regex_search (re.search here): each pattern hits exactly one GGUF tensor."""
    import re

    result = export_llamacpp(make_plan())
    names = [
        f"blk.{b}.{kind}.weight"
        for b in (0, 1, 10, 11)
        for kind in (
            "attn_q",
            "attn_q_norm",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate_exps",
            "ffn_up_exps",
            "ffn_down_exps",
            "ffn_gate_inp",
            "ffn_gate_shexp",
            "ffn_gate_inp_shexp",
        )
    ] + ["token_embd.weight", "output.weight"]
    for line in result.tensor_type_lines():
        pattern = line.rsplit("=", 1)[0]
        assert pattern == pattern.lower()  # llama-quantize lower-cases the pattern
        assert len([n for n in names if re.search(pattern, n)]) == 1, pattern
