"""Row-block conversion of large pass-through tensors inside llama.cpp's converter (``alphaq.export.convert_chunks``).

The unit tests check the pieces on plain arrays; the last test runs the real ``convert_hf_to_gguf.py`` (through
alphaq's shim) on a tiny Mixtral twice, with every pass-through tensor in row blocks and with none, and requires
byte-identical GGUFs for two output types.
"""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from alphaq.export.convert_chunks import (
    DEFAULT_MIN_BYTES,
    MIN_BYTES_ENV,
    large_float_tensors,
    min_bytes_from_env,
    passthrough_in_row_blocks,
    row_block_loaders,
)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    tensors = {
        "embed.weight": torch.randn(300, 64).to(torch.bfloat16),  # 76,800 float32 bytes
        "head.weight": torch.randn(200, 64).to(torch.float16),  # 51,200
        "small.weight": torch.randn(10, 64),  # 2,560
        "norm.weight": torch.randn(4096),  # 1-D: never
        "ids": torch.arange(50_000, dtype=torch.int64).reshape(500, 100),  # not a float: never
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_large_float_tensors_selects_2d_floats_by_float32_size(checkpoint: Path) -> None:
    assert set(large_float_tensors(checkpoint, 51_200)) == {"embed.weight", "head.weight"}
    assert set(large_float_tensors(checkpoint, 51_201)) == {"embed.weight"}
    assert set(large_float_tensors(checkpoint, 1)) == {"embed.weight", "head.weight", "small.weight"}
    assert large_float_tensors(checkpoint, 0) == {}


@pytest.mark.parametrize("name", ["embed.weight", "head.weight", "small.weight"])
def test_row_blocks_read_back_the_tensor_exactly(checkpoint: Path, name: str) -> None:
    from safetensors.torch import load_file

    info = large_float_tensors(checkpoint, 1)[name]
    loaders = row_block_loaders(info, block_bytes=7 * 64 * 4)  # 7 rows a block, a short last block
    blocks = [load() for load in loaders]
    assert len(blocks) == -(-info.shape[0] // 7) and {b.dtype for b in blocks} == {np.dtype(np.float32)}
    assert [b.shape[0] for b in blocks[:-1]] == [7] * (len(blocks) - 1) and all(b.shape[1] == 64 for b in blocks)
    want = load_file(str(checkpoint / "model.safetensors"))[name].float().numpy()
    np.testing.assert_array_equal(np.concatenate(blocks), want)


class _Lazy:
    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape


class _Chunked:
    def __init__(self, loaders: list, *, shape: tuple[int, ...], dtype: object) -> None:
        self.loaders, self.shape, self.dtype = loaders, shape, dtype


def test_only_a_tensor_passed_through_unchanged_becomes_row_blocks(checkpoint: Path) -> None:
    tensors = large_float_tensors(checkpoint, 1)
    data = _Lazy((300, 64))
    other = _Lazy((300, 64))

    def modify(d, name, bid):  # the converter's modify_tensors: passes "embed" through, replaces "head"
        return [("token_embd.weight", d)] if name == "embed.weight" else [("output.weight", other)]

    wrapped = passthrough_in_row_blocks(modify, tensors, _Chunked)
    ((name, out),) = list(wrapped(data, "embed.weight", None))
    assert name == "token_embd.weight" and isinstance(out, _Chunked) and out.shape == (300, 64)
    assert out.dtype is np.float32 and len(out.loaders) == 1  # 76,800 bytes: one 64 MB block
    assert list(wrapped(data, "head.weight", None)) == [("output.weight", other)]  # not the object it was given
    assert list(wrapped(data, "norm.weight", None)) == [("output.weight", other)]  # not a listed tensor
    resized = _Lazy((200, 64))  # passed through, but not the file's shape: left alone
    assert list(wrapped(resized, "embed.weight", None)) == [("token_embd.weight", resized)]


def test_threshold_from_the_environment() -> None:
    assert min_bytes_from_env({}) == DEFAULT_MIN_BYTES == 256 << 20
    assert min_bytes_from_env({MIN_BYTES_ENV: "0"}) == 0
    assert min_bytes_from_env({MIN_BYTES_ENV: " 4096 "}) == 4096
    with pytest.raises(ValueError, match="is not a byte count"):
        min_bytes_from_env({MIN_BYTES_ENV: "64MB"})


@pytest.mark.parametrize("outtype", ["auto", "q8_0"])
def test_converter_writes_the_same_bytes_in_row_blocks(
    outtype: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphaq.export.gguf_io import convert_checkpoint
    from tests.export.test_gguf import tools_or_skip
    from tests.fixtures.tiny_gguf import make_tiny_mixtral

    tools = tools_or_skip()
    model = make_tiny_mixtral(tmp_path / "mixtral")
    monkeypatch.setenv(MIN_BYTES_ENV, "0")
    whole = convert_checkpoint(tools, model, tmp_path / "whole.gguf", outtype=outtype)
    monkeypatch.setenv(MIN_BYTES_ENV, "1")  # every 2-D float tensor the architecture passes through
    blocks = tmp_path / "blocks.gguf"
    shim = [sys.executable, "-m", "alphaq.export.convert_shim", tools.converter, str(model), "--outfile", str(blocks)]
    done = subprocess.run([*shim, "--outtype", outtype], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert filecmp.cmp(whole, blocks, shallow=False)
    log = done.stderr
    assert "alphaq: token_embd.weight (model.embed_tokens.weight) is written in 1 row block(s)" in log
    assert "blk.0.attn_v.weight (model.layers.0.self_attn.v_proj.weight) is written in 1 row block(s)" in log
    chunked = [line for line in log.splitlines() if "row block" in line]
    assert not [line for line in chunked if "attn_q" in line or "attn_k" in line]  # permuted by the converter
    assert not [line for line in chunked if "_exps" in line]  # experts are stacked: not passed through


def test_llama_quantize_writes_the_same_bytes_with_a_small_buffer(tmp_path: Path) -> None:
    """``--max-buffer-size`` (alphaq passes 256 MiB) converts a tensor in slabs of rows: same file as whole tensors."""
    from alphaq.export.gguf_io import convert_checkpoint, quantize_gguf
    from tests.export.test_gguf import tools_or_skip
    from tests.fixtures.tiny_gguf import make_tiny_mixtral

    tools = tools_or_skip()
    source = convert_checkpoint(tools, make_tiny_mixtral(tmp_path / "mixtral"), tmp_path / "source.gguf")
    types = tmp_path / "types.txt"
    types.write_text("ffn_down_exps=q4_k\nffn_up_exps=q2_k\ntoken_embd=f16\n", encoding="utf-8")
    outs = []
    for mib in (8192, 1):  # llama.cpp's default (whole tensors here) and one row slab of 1 MiB
        out = tmp_path / f"q-{mib}.gguf"
        log = quantize_gguf(tools, source, out, tensor_type_file=types, threads=1, max_buffer_mib=mib)
        assert "converting to q4_K" in log
        outs.append(out)
    assert filecmp.cmp(*outs, shallow=False)
