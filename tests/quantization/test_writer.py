"""The on-disk format: output names, the shard layout, streamed safetensors shards and the reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save

from alphaq.errors import AlphaQError
from alphaq.load import Role
from alphaq.load.checkpoint import MatrixRef
from alphaq.load.safetensors_files import TensorInfo
from alphaq.quantization import shards
from alphaq.quantization.writer import (
    OutputTensor,
    base_name,
    build_layout,
    index_json,
    layout_fingerprint,
    quantized_config,
    read_quantized_tensors,
    shard_file_name,
)


def _ref(
    name: str,
    tensor: str,
    shape=(8, 16),
    *,
    expert=None,
    proj="gate",
    fused=False,
    part="",
    role=Role.EXPERT,
    split="none",
    orientation="out_in",
) -> MatrixRef:
    return MatrixRef(
        name=name,
        tensor=tensor,
        layer=0,
        expert=expert,
        proj=proj,
        role=role,
        shape=shape,
        dtype="BF16",
        fused=fused,
        fused_part=part,
        split=split,
        orientation=orientation,
    )


def _info(name: str, dtype: str, shape: tuple[int, ...], file: str = "model-1.safetensors") -> TensorInfo:
    sizes = {"BF16": 2, "F32": 4, "F16": 2, "U8": 1, "F8_E4M3": 1}
    numel = 1
    for d in shape:
        numel *= d
    return TensorInfo(name=name, dtype=dtype, shape=shape, file=Path("/src") / file, nbytes=numel * sizes[dtype])


# -- names -------------------------------------------------------------------------------------------


def test_base_names_of_plain_and_fused_matrices() -> None:
    plain = _ref("model.layers.0.mlp.experts.3.gate_proj.weight", "model.layers.0.mlp.experts.3.gate_proj.weight")
    assert base_name(plain) == "model.layers.0.mlp.experts.3.gate_proj"
    gate = _ref(
        "model.layers.0.mlp.experts.gate_up_proj[3].gate",
        "model.layers.0.mlp.experts.gate_up_proj",
        expert=3,
        fused=True,
        part="gate",
    )
    up = _ref(
        "model.layers.0.mlp.experts.gate_up_proj[3].up",
        "model.layers.0.mlp.experts.gate_up_proj",
        expert=3,
        proj="up",
        fused=True,
        part="up",
    )
    down = _ref(
        "model.layers.0.mlp.experts.down_proj[3]",
        "model.layers.0.mlp.experts.down_proj",
        expert=3,
        proj="down",
        fused=True,
    )
    assert base_name(gate) == "model.layers.0.mlp.experts.3.gate_proj"
    assert base_name(up) == "model.layers.0.mlp.experts.3.up_proj"
    assert base_name(down) == "model.layers.0.mlp.experts.3.down_proj"
    fused = "m.layers.0.block_sparse_moe.input_linear.weight"
    granite = _ref(f"{fused}[1].up", fused, expert=1, proj="up", fused=True, part="up")
    assert base_name(granite) == "m.layers.0.block_sparse_moe.input_linear.1.up_proj"
    no_suffix = _ref("lm_head", "lm_head", role=Role.LM_HEAD)
    assert base_name(no_suffix) == "lm_head"


# -- layout ------------------------------------------------------------------------------------------


def test_layout_quantizes_copies_and_cuts_shards() -> None:
    tensors = {
        "a.weight": _info("a.weight", "BF16", (8, 16)),  # planned at 4 bits
        "b.weight": _info("b.weight", "BF16", (8, 16)),  # planned at 16: copied
        "norm.weight": _info("norm.weight", "F32", (16,)),
        "c.weight": _info("c.weight", "BF16", (8, 16), "model-2.safetensors"),
    }
    refs = [_ref("a.weight", "a.weight"), _ref("b.weight", "b.weight"), _ref("c.weight", "c.weight")]
    widths = {"a.weight": (4, 8), "b.weight": (16, None), "c.weight": (2, 16)}
    layout = build_layout(tensors, refs, widths, set())
    assert [s.name for s in layout] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    first, second = layout
    assert [u.key for u in first.units] == ["a", "b.weight", "norm.weight"]
    assert [t.name for t in first.tensors] == ["a.qweight", "a.scales", "a.zeros", "b.weight", "norm.weight"]
    qweight, scales, zeros = first.units[0].outputs
    assert (qweight.dtype, qweight.shape, qweight.nbytes) == ("U8", (8, 8), 64)  # 16 cols -> 2 units x 4 bytes
    assert (scales.dtype, scales.shape, scales.nbytes) == ("F16", (8, 2), 32)  # 2 groups of 8
    assert first.units[0].source_bytes == 8 * 16 * 2
    assert second.units[0].outputs[0].shape == (8, 4) and second.units[0].bits == 2
    # the same layout cut at 150 bytes: a's three tensors (128 B) stay together, b (256 B) alone, then norm
    small = build_layout(tensors, refs, widths, set(), max_shard_bytes=150)
    assert [[u.key for u in s.units] for s in small] == [["a"], ["b.weight"], ["norm.weight"], ["c"]]
    assert small[0].name == "model-00001-of-00004.safetensors" and small[3].source_file == "model-2.safetensors"
    assert layout_fingerprint(small) != layout_fingerprint(layout)
    assert layout_fingerprint(build_layout(tensors, refs, widths, set())) == layout_fingerprint(layout)
    assert shard_file_name(0, 1) == "model.safetensors"


def test_layout_drops_fp8_scales_of_quantized_matrices_only() -> None:
    tensors = {
        "q.weight": _info("q.weight", "F8_E4M3", (8, 16)),
        "q.weight_scale_inv": _info("q.weight_scale_inv", "F32", (1, 1)),
        "k.weight": _info("k.weight", "F8_E4M3", (8, 16)),
        "k.weight_scale_inv": _info("k.weight_scale_inv", "F32", (1, 1)),
    }
    refs = [_ref("q.weight", "q.weight"), _ref("k.weight", "k.weight")]
    layout = build_layout(
        tensors, refs, {"q.weight": (8, 16), "k.weight": (16, None)}, {"q.weight_scale_inv", "k.weight_scale_inv"}
    )
    names = [t.name for t in layout[0].tensors]
    assert names == ["k.weight", "k.weight_scale_inv", "q.qweight", "q.scales", "q.zeros"]
    assert layout[0].units[2].source_bytes == 128 + 4  # the FP8 weight and its scale


def test_fused_tensor_with_mixed_widths_is_split_per_expert() -> None:
    tensor = "m.layers.0.mlp.experts.gate_up_proj"
    tensors = {tensor: _info(tensor, "BF16", (2, 16, 16))}  # [E, 2I, H]
    refs = [
        _ref(f"{tensor}[{e}].{p}", tensor, expert=e, proj=p, fused=True, part=p, split="halves")
        for e in range(2)
        for p in ("gate", "up")
    ]
    widths = {r.name: ((3, 8) if r.expert == 0 else (16, None)) for r in refs}
    units = build_layout(tensors, refs, widths, set())[0].units
    assert [(u.kind, u.key) for u in units] == [
        ("quantize", "m.layers.0.mlp.experts.0.gate_proj"),
        ("quantize", "m.layers.0.mlp.experts.0.up_proj"),
        ("dense", "m.layers.0.mlp.experts.1.gate_proj"),
        ("dense", "m.layers.0.mlp.experts.1.up_proj"),
    ]
    assert units[2].outputs[0] == OutputTensor("m.layers.0.mlp.experts.1.gate_proj.weight", "BF16", (8, 16), 256)
    assert sum(u.source_bytes for u in units) == 2 * 16 * 16 * 2
    config = quantized_config(
        {"model_type": "x"},
        build_layout(tensors, refs, widths, set()),
        {r.name: r for r in refs},
        method="rtn",
        plan_fingerprint="p",
        checkpoint_fingerprint="c",
    )
    quant = config["quantization_config"]
    assert quant["tensors"]["m.layers.0.mlp.experts.0.up_proj"] == {
        "bits": 3,
        "group_size": 8,
        "shape": [8, 16],
        "source": f"{tensor}[0].up",
        "tensor": tensor,
        "layer": 0,
        "expert": 0,
        "proj": "up",
    }
    assert quant["dense_tensors"]["m.layers.0.mlp.experts.1.gate_proj"]["dtype"] == "BF16"
    assert quant["fused_tensors"][tensor] == {
        "split": "halves",
        "orientation": "out_in",
        "parts": ["gate", "up"],
        "num_experts": 2,
    }
    # all at 16 bits: the fused tensor is copied whole
    copied = build_layout(tensors, refs, {r.name: (16, None) for r in refs}, set())[0].units
    assert [(u.kind, u.key) for u in copied] == [("copy", tensor)]


def test_output_name_clash_is_an_error() -> None:
    tensors = {"a.weight": _info("a.weight", "BF16", (8, 16)), "a.qweight": _info("a.qweight", "U8", (8, 8))}
    with pytest.raises(AlphaQError, match="would be written for both"):
        build_layout(tensors, [_ref("a.weight", "a.weight")], {"a.weight": (4, 8)}, set())


# -- streamed shards ---------------------------------------------------------------------------------


def _sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "z.qweight": torch.randint(0, 256, (3, 5), dtype=torch.uint8, generator=g),  # odd size
        "a.scales": torch.randn(3, 2, generator=g).half(),
        "m.weight": torch.randn(4, 3, generator=g).bfloat16(),
        "n.weight": torch.randn(7, generator=g),
        "scalar": torch.tensor(2.5),
        "flags": torch.tensor([True, False, True]),
        "ids": torch.arange(3, dtype=torch.int64),
    }


def test_streamed_shard_is_byte_identical_to_safetensors_save(tmp_path: Path) -> None:
    tensors = _sample_tensors()
    entries = [OutputTensor(n, _dtype(t), tuple(t.shape), t.numel() * t.element_size()) for n, t in tensors.items()]

    def fill(writer: shards.ShardWriter) -> None:
        for name in reversed(list(tensors)):  # any order
            writer.write(name, shards.tensor_bytes(tensors[name]))

    digest, size = shards.write_shard(tmp_path / "x.safetensors", entries, fill)
    data = (tmp_path / "x.safetensors").read_bytes()
    assert data == save(tensors, metadata={"format": "pt"})
    assert size == len(data) and digest == shards.sha256_file(tmp_path / "x.safetensors")
    loaded = load_file(tmp_path / "x.safetensors")
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


@pytest.mark.parametrize("mistake", ["missing", "wrong_size", "twice", "unknown"])
def test_shard_writer_mistakes_leave_no_file(tmp_path: Path, mistake: str) -> None:
    entries = [OutputTensor("a", "U8", (4,), 4), OutputTensor("b", "U8", (2,), 2)]

    def fill(writer: shards.ShardWriter) -> None:
        writer.write("a", b"\x01\x02\x03\x04" if mistake != "wrong_size" else b"\x01")
        if mistake == "twice":
            writer.write("a", b"\x01\x02\x03\x04")
        if mistake == "unknown":
            writer.write("c", b"\x00")

    with pytest.raises(ValueError):
        shards.write_shard(tmp_path / "x.safetensors", entries, fill)
    assert list(tmp_path.iterdir()) == []


def test_reader_rejects_a_folder_that_is_not_alphaq(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mixtral"}))
    with pytest.raises(AlphaQError, match="no alphaq quantization_config"):
        read_quantized_tensors(tmp_path)
    with pytest.raises(AlphaQError, match="cannot read"):
        read_quantized_tensors(tmp_path / "missing")


def test_index_totals() -> None:
    tensors = {"a.weight": _info("a.weight", "BF16", (8, 16)), "b": _info("b", "F32", (3,))}
    layout = build_layout(tensors, [_ref("a.weight", "a.weight")], {"a.weight": (8, 16)}, set())
    index = index_json(layout)
    assert index["metadata"]["total_size"] == 8 * 16 + 2 * 8 * 1 * 2 + 12
    assert index["weight_map"] == {
        "a.qweight": "model.safetensors",
        "a.scales": "model.safetensors",
        "a.zeros": "model.safetensors",
        "b": "model.safetensors",
    }


def _dtype(t: torch.Tensor) -> str:
    return {
        torch.uint8: "U8",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.float32: "F32",
        torch.bool: "BOOL",
        torch.int64: "I64",
    }[t.dtype]


def test_copy_from_writes_a_file_range_in_chunks_and_refuses_a_short_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(shards, "COPY_CHUNK_BYTES", 3)  # 10 bytes in 4 chunks
    source = tmp_path / "src.bin"
    source.write_bytes(b"HEADER" + bytes(range(10)) + b"TAIL")
    entries = [OutputTensor("a", "U8", (10,), 10), OutputTensor("b", "U8", (2,), 2)]

    def fill(writer: shards.ShardWriter) -> None:
        locked = shards.LockedWriter(writer)
        locked.copy_from("a", source, 6, 10)
        locked.write("b", b"\x07\x08")

    shards.write_shard(tmp_path / "x.safetensors", entries, fill)
    loaded = load_file(tmp_path / "x.safetensors")
    assert loaded["a"].tolist() == list(range(10)) and loaded["b"].tolist() == [7, 8]
    with pytest.raises(ValueError, match="ends before tensor 'a'"):
        shards.write_shard(tmp_path / "y.safetensors", entries[:1], lambda w: w.copy_from("a", source, 12, 10))
    assert not (tmp_path / "y.safetensors").exists()
