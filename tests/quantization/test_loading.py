"""``alphaq.quantization.loading.load_quantized``: quantized experts as QuantLinear modules, logits equal to the source
model with its expert weights replaced by the dequantized ones, greedy generation, and unsupported inputs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from alphaq.errors import AlphaQError, CheckpointError
from alphaq.load import open_checkpoint
from alphaq.load.checkpoint import MatrixRef
from alphaq.load.model import load_model
from alphaq.planning.plan_file import Plan, PlanTensor, save_plan, tensor_totals
from alphaq.planning.units import matrix_nbytes
from alphaq.quantization.loading import EXPERT_LAYOUTS, load_quantized
from alphaq.quantization.modules import QuantizedExperts, QuantLinear
from alphaq.zoo.demo import demo_model_path

qrun = pytest.importorskip(
    "alphaq.quantization.run", reason="alphaq.quantization.run (the quantized writer) is not available"
)
from alphaq.quantization.writer import read_quantization_config, read_quantized_tensors  # noqa: E402

BitsFor = Callable[[MatrixRef], int]
CYCLE = (2, 3, 4, 8, 16)


def cycling_bits(m: MatrixRef) -> int:
    """Experts cycle through 2, 3, 4, 8 and 16 bits (so some are kept dense); everything else at 16."""
    return CYCLE[(int(m.expert or 0) + int(m.layer or 0)) % len(CYCLE)] if m.role.value == "expert" else 16


def quantize(src: Path, out: Path, bits_for: BitsFor = cycling_bits, group_size: int = 32) -> Path:
    """Quantize ``src`` into ``out`` with a hand-built plan (no inspect run)."""
    ckpt = open_checkpoint(src)
    tensors = []
    for m in ckpt.matrices:
        bits = bits_for(m)
        tensors.append(
            PlanTensor(
                name=m.name,
                tensor=m.tensor,
                layer=m.layer,
                expert=m.expert,
                proj=m.proj,
                role=m.role.value,
                rows=m.shape[0],
                cols=m.shape[1],
                params=m.params,
                bits=bits,
                group_size=None if bits == 16 else group_size,
                bytes=matrix_nbytes(m.shape[0], m.shape[1], bits, group_size),
                error=0.0,
                unit=None,
            )
        )
    plan = Plan(
        provenance={
            "checkpoint": {"path": str(src), "model_type": ckpt.model_type, "fingerprint": ckpt.fingerprint},
            "created": "2025-01-01T00:00:00+00:00",
            "options": {"allocator": "test", "quant_method": "rtn", "granularity": "expert"},
            "budget": {"given": "test"},
        },
        summary=tensor_totals(tensors),
        tensors=tuple(tensors),
    )
    plan_path = out.parent / f"{out.name}-plan.json"
    save_plan(plan, plan_path)
    qrun.run_quantize(src, plan_path, out)
    return out


def dequantized_reference(src: Path, quantized: Path) -> torch.nn.Module:
    """The source model (float32) whose fused expert weights are replaced by the dequantized ones (torch)."""
    model, _ = load_model(src)
    quant = read_quantization_config(quantized)
    packed = read_quantized_tensors(quantized)
    with torch.no_grad():
        for base, entry in quant["tensors"].items():
            w_hat = packed[base].dequantize(torch.float32)  # [R, C]
            experts = model.get_submodule(f"model.layers.{entry['layer']}.mlp.experts")
            e, inter = int(entry["expert"]), experts.down_proj.shape[-1]
            if entry["proj"] == "down":
                experts.down_proj[e].copy_(w_hat)  # [H, I]
            else:
                rows = slice(0, inter) if entry["proj"] == "gate" else slice(inter, 2 * inter)
                experts.gate_up_proj[e, rows].copy_(w_hat)  # [I, H] of [2I, H]
    return model


def assert_logits_match(model: torch.nn.Module, reference: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        got = model(input_ids=ids).logits  # [B, T, V]
        want = reference(input_ids=ids).logits  # [B, T, V]
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale)
    return got


@pytest.fixture(scope="module")
def demo_quantized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize(demo_model_path(), tmp_path_factory.mktemp("loading") / "demo-q")


@pytest.fixture(scope="module")
def demo_loaded(demo_quantized: Path):
    return load_quantized(demo_quantized)


def test_demo_experts_are_quantized_modules(demo_quantized: Path, demo_loaded) -> None:
    model, _ = demo_loaded
    quant = read_quantization_config(demo_quantized)
    packed = read_quantized_tensors(demo_quantized)
    kinds = {"quant": 0, "dense": 0}
    for layer in range(model.config.num_hidden_layers):
        experts = model.model.layers[layer].mlp.experts
        assert isinstance(experts, QuantizedExperts) and experts.num_experts == 8
        for e in range(8):
            for proj, legacy in (("gate", "w1"), ("down", "w2"), ("up", "w3")):
                module = experts.experts[e][proj]
                bits = CYCLE[(e + layer) % len(CYCLE)]
                base = f"model.layers.{layer}.block_sparse_moe.experts.{e}.{legacy}"
                if bits == 16:
                    assert type(module) is torch.nn.Linear and base not in quant["tensors"]
                    assert module.weight.dtype == torch.float32
                    kinds["dense"] += 1
                    continue
                assert isinstance(module, QuantLinear)
                assert (module.bits, module.group_size) == (bits, 32)
                assert module.qweight.dtype == torch.uint8 and module.scales.dtype == torch.float16
                assert torch.equal(module.qweight, packed[base].packed)
                assert torch.equal(module.zeros, packed[base].zero)
                kinds["quant"] += 1
    assert kinds == {"quant": 78, "dense": 18}  # 6 of the 32 (layer, expert) pairs kept at 16 bits
    assert kinds["quant"] == len(quant["tensors"])
    assert not any(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
    assert not model.training


def test_demo_logits_equal_dequantized_reference(demo_quantized: Path, demo_loaded) -> None:
    model, tokenizer = demo_loaded
    reference = dequantized_reference(demo_model_path(), demo_quantized)
    text = "Once upon a time there was a little cat. The cat sat on the mat and"
    ids = torch.tensor(tokenizer(text)["input_ids"][:16]).reshape(2, 8)  # [2, 8]
    got = assert_logits_match(model, reference, ids)
    source, _ = load_model(demo_model_path())
    with torch.no_grad():
        unquantized = source(input_ids=ids).logits
    assert float((got - unquantized).abs().max()) > 1e-2  # the quantized experts are really in use


def test_demo_greedy_generation(demo_quantized: Path, demo_loaded) -> None:
    model, tokenizer = demo_loaded
    reference = dequantized_reference(demo_model_path(), demo_quantized)
    ids = tokenizer("Once upon a time", return_tensors="pt").input_ids  # [1, T]
    out = model.generate(ids, max_new_tokens=6, do_sample=False)
    want = reference.generate(ids, max_new_tokens=6, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 6)
    assert torch.equal(out, want)
    assert isinstance(tokenizer.decode(out[0]), str)


def test_demo_bfloat16(demo_quantized: Path) -> None:
    model, tokenizer = load_quantized(demo_quantized, dtype=torch.bfloat16)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.model.layers[0].mlp.experts.experts[0]["gate"].scales.dtype == torch.float16
    ids = torch.tensor([tokenizer("Once upon a time")["input_ids"]])  # [1, T]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.dtype == torch.bfloat16 and bool(torch.isfinite(logits).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (Triton dequant-matmul)")
def test_demo_cuda_matches_cpu(demo_quantized: Path, demo_loaded) -> None:
    model, tokenizer = demo_loaded
    cuda_model, _ = load_quantized(demo_quantized, device="cuda")
    ids = torch.tensor([tokenizer("Once upon a time there was a little cat")["input_ids"]])  # [1, T]
    with torch.no_grad():
        want = model(input_ids=ids).logits
        got = cuda_model(input_ids=ids.cuda()).logits.cpu()
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))


def test_quant_linear_matches_dequantized_matmul(demo_quantized: Path) -> None:
    base = "model.layers.0.block_sparse_moe.experts.1.w2"
    pt = read_quantized_tensors(demo_quantized, [base])[base]
    layer = QuantLinear(pt.packed, pt.scale, pt.zero, pt.spec.bits, pt.spec.group_size, pt.shape[1])
    x = torch.randn(3, 5, pt.shape[1], generator=torch.Generator().manual_seed(0))  # [3, 5, C]
    w_hat = pt.dequantize(torch.float32)  # [R, C]
    torch.testing.assert_close(layer(x), x @ w_hat.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.dequantized_weight(), w_hat, rtol=0, atol=0)
    assert sorted(layer.state_dict()) == ["qweight", "scales", "zeros"]
    with pytest.raises(ValueError, match="scales"):
        QuantLinear(pt.packed, pt.scale.float(), pt.zero, pt.spec.bits, pt.spec.group_size, pt.shape[1])


@pytest.mark.parametrize("model_type", ["qwen2_moe", "olmoe"])
def test_tiny_architectures(model_type: str, tiny_checkpoints, tmp_path: Path) -> None:
    src = tiny_checkpoints[model_type]
    out = quantize(src, tmp_path / "q", group_size=16)
    model, _ = load_quantized(out)
    reference = dequantized_reference(src, out)
    ids = torch.randint(3, 90, (2, 9), generator=torch.Generator().manual_seed(1))
    assert_logits_match(model, reference, ids)
    assert model.generate(ids[:1], max_new_tokens=3, do_sample=False).shape == (1, 12)


def test_fused_source_with_dense_and_copied_experts(tmp_path: Path) -> None:
    """A checkpoint stored with transformers' fused names: split tensors (quantized + dense_tensors) and a layer
    whose fused tensors are copied whole (all experts at 16 bits)."""
    import transformers
    from safetensors.torch import save_file

    from tests.fixtures.tiny_models import _BASE

    torch.manual_seed(0)
    config = transformers.MixtralConfig(**{**_BASE, "num_local_experts": 4, "num_experts_per_tok": 2})
    source_model = transformers.MixtralForCausalLM(config)
    src = tmp_path / "fused"
    src.mkdir()
    config.save_pretrained(src)
    save_file(
        {k: v.contiguous() for k, v in source_model.state_dict().items()},
        str(src / "model.safetensors"),
        metadata={"format": "pt"},
    )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(demo_model_path() / name, src / name)

    def bits_for(m: MatrixRef) -> int:
        if m.role.value != "expert" or m.layer == 1:
            return 16
        return (4, 16, 2, 8)[int(m.expert or 0)]

    out = quantize(src, tmp_path / "q", bits_for, group_size=16)
    quant = read_quantization_config(out)
    assert quant["dense_tensors"] and "model.layers.0.mlp.experts.gate_up_proj" in quant["fused_tensors"]
    model, _ = load_quantized(out)
    layer0, layer1 = model.model.layers[0].mlp.experts, model.model.layers[1].mlp.experts
    assert isinstance(layer0.experts[0]["up"], QuantLinear) and type(layer0.experts[1]["up"]) is torch.nn.Linear
    assert all(type(layer1.experts[e][p]) is torch.nn.Linear for e in range(4) for p in ("gate", "up", "down"))
    reference = dequantized_reference(src, out)
    ids = torch.randint(3, 90, (2, 9), generator=torch.Generator().manual_seed(2))
    assert_logits_match(model, reference, ids)


def test_unsupported_architecture_is_refused(
    demo_quantized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphaq.quantization import loading

    assert "granitemoe" in EXPERT_LAYOUTS and "mixtral" in EXPERT_LAYOUTS  # every type is served unless listed
    monkeypatch.setitem(loading.UNSUPPORTED_MODEL_TYPES, "mixtral", "its experts are rows, not matrices")
    assert "mixtral" not in EXPERT_LAYOUTS
    with pytest.raises(CheckpointError, match=r"cannot serve model_type 'mixtral': its experts are rows, not"):
        load_quantized(demo_quantized)


def test_checkpoint_of_another_architecture_is_refused_in_one_line(demo_quantized: Path, tmp_path: Path) -> None:
    folder = tmp_path / "other"
    shutil.copytree(demo_quantized, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "granitemoe"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        load_quantized(folder)
    assert "\n" not in str(info.value) and "config.json" in str(info.value)


def test_plain_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AlphaQError, match="no alphaq quantization_config"):
        load_quantized(demo_model_path())
    with pytest.raises(CheckpointError, match="no config.json"):
        load_quantized(tmp_path)


def test_quantized_non_expert_matrix_is_refused(demo_quantized: Path, tmp_path: Path) -> None:
    folder = tmp_path / "attn"
    shutil.copytree(demo_quantized, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"]["tensors"]["model.layers.0.self_attn.q_proj"] = {
        "bits": 4,
        "group_size": 32,
        "shape": [256, 256],
        "layer": 0,
        "expert": None,
        "proj": "q",
    }
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="is not a routed-expert gate/up/down matrix"):
        load_quantized(folder)
