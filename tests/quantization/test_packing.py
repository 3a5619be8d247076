from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaq.errors import ConfigError
from alphaq.quantization import packing
from alphaq.quantization.layout import packed_row_bytes
from alphaq.quantization.packing import pack, unpack


def reference_pack(row: list[int], bits: int) -> list[int]:
    """Bit-by-bit reference of the documented layout (one row)."""
    padded = row + [0] * (-len(row) % 8)
    stream = [(value >> k) & 1 for value in padded for k in range(bits)]  # LSB first, value by value
    return [sum(stream[8 * j + k] << k for k in range(8)) for j in range(len(stream) // 8)]


def _row(values: list[int]) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.uint8)


def test_pack_3_bits_by_hand() -> None:
    # docs/quantization-format.md worked example.
    packed = pack(_row([5, 3, 7, 0, 1, 6, 2, 4, 7, 1]), 3)
    assert packed.tolist() == [[0xDD, 0x11, 0x8B, 0x0F, 0x00, 0x00]]
    assert pack(_row(list(range(8))), 3).tolist() == [[0x88, 0xC6, 0xFA]]


def test_pack_4_bits_is_low_nibble_first() -> None:
    assert pack(_row([1, 2, 3, 4, 5, 6, 7, 8]), 4).tolist() == [[0x21, 0x43, 0x65, 0x87]]
    # 12 values: padded to 16, so 8 bytes (not 6); the padding is 0.
    assert pack(_row([15] * 12), 4).tolist() == [[0xFF] * 6 + [0x00, 0x00]]


def test_pack_2_1_and_8_bits_by_hand() -> None:
    assert pack(_row([0, 1, 2, 3, 3, 2, 1, 0]), 2).tolist() == [[0xE4, 0x1B]]
    assert pack(_row([1, 0, 1, 1, 0, 0, 0, 1]), 1).tolist() == [[0x8D]]
    assert pack(_row([0, 255, 7, 128, 1]), 8).tolist() == [[0, 255, 7, 128, 1, 0, 0, 0]]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_widths_dividing_8_are_plain_shift_layouts(bits: int) -> None:
    per_byte = 8 // bits
    q = torch.randint(0, 2**bits, (5, 40), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    expected = sum(q[:, m::per_byte].to(torch.int32) << (bits * m) for m in range(per_byte))
    assert torch.equal(pack(q, bits), expected.to(torch.uint8))


@settings(max_examples=150, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(0, 4), cols=st.integers(0, 45), seed=st.integers(0, 2**16))
def test_pack_matches_bitwise_reference_and_round_trips(bits: int, rows: int, cols: int, seed: int) -> None:
    q = torch.randint(0, 2**bits, (rows, cols), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    packed = pack(q, bits)
    assert packed.dtype == torch.uint8
    assert tuple(packed.shape) == (rows, packed_row_bytes(cols, bits))
    assert packed.tolist() == [reference_pack(row, bits) for row in q.tolist()]
    assert torch.equal(unpack(packed, bits, cols), q)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (3, 7), (7, 13), (2, 129), (5, 1000)])
def test_round_trip_every_width_odd_shapes(bits: int, rows: int, cols: int) -> None:
    gen = torch.Generator().manual_seed(rows * 1000 + cols + bits)
    q = torch.randint(0, 2**bits, (rows, cols), generator=gen, dtype=torch.uint8)
    q[0, 0] = 2**bits - 1  # the largest code is always present
    assert torch.equal(unpack(pack(q, bits), bits, cols), q)


def test_round_trip_across_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packing, "_CHUNK_VALUES", 24)  # forces several rows per chunk and 1-row chunks
    for cols in (5, 16, 40):
        q = torch.randint(0, 8, (11, cols), generator=torch.Generator().manual_seed(cols), dtype=torch.uint8)
        packed = pack(q, 3)
        assert packed.tolist() == [reference_pack(row, 3) for row in q.tolist()]
        assert torch.equal(unpack(packed, 3, cols), q)


def test_non_contiguous_input_and_no_aliasing() -> None:
    q = torch.randint(0, 16, (16, 9), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).t()
    assert torch.equal(unpack(pack(q, 4), 4, 16), q)
    q8 = torch.arange(16, dtype=torch.uint8).reshape(2, 8)
    packed = pack(q8, 8)
    packed[0, 0] = 99
    assert q8[0, 0] == 0
    unpacked = unpack(packed, 8, 8)
    unpacked[0, 1] = 99
    assert packed[0, 1] == 1


def test_pack_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="does not fit in 3 bits"):
        pack(_row([8]), 3)
    with pytest.raises(ValueError, match="uint8"):
        pack(torch.zeros(2, 8, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="2-D"):
        pack(torch.zeros(8, dtype=torch.uint8), 4)
    with pytest.raises(ConfigError):
        pack(_row([0]), 0)
    with pytest.raises(ConfigError):
        pack(_row([0]), 9)


def test_unpack_rejects_wrong_byte_count() -> None:
    packed = pack(_row([1] * 10), 3)
    with pytest.raises(ValueError, match="pass the original column count"):
        unpack(packed, 3, 17)
    with pytest.raises(ValueError, match="uint8"):
        unpack(packed.to(torch.int16), 3, 10)
    with pytest.raises(ConfigError):
        unpack(packed, 9, 10)
