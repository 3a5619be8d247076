"""Pure tensor transforms applied when reading weights: FP8 block dequantization, MXFP4 decoding and
splitting one expert's slice of a fused 3-D expert tensor into 2-D [out, in] matrices."""

from __future__ import annotations

from typing import Any

from alphaq.errors import CheckpointError

#: FP4 (E2M1) code -> value, used by MXFP4 (OCP microscaling; GPT-OSS experts).
FP4_E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def dequantize_fp8_blocks(weight: Any, scale_inv: Any, block: tuple[int, int] = (128, 128)) -> Any:
    """DeepSeek-V3 FP8: ``W = fp8.float() * scale_inv`` with one scale per ``block`` tile.

    Args:
        weight: float8 tensor [out, in].
        scale_inv: float32 [ceil(out / block_r), ceil(in / block_c)].
        block: tile shape.

    Returns:
        float32 tensor [out, in].
    """
    import torch

    out_dim, in_dim = weight.shape
    br, bc = block
    expected = (-(-out_dim // br), -(-in_dim // bc))
    if tuple(scale_inv.shape) != expected:
        raise CheckpointError(
            f"FP8 scale shape {tuple(scale_inv.shape)} does not tile weight {tuple(weight.shape)} "
            f"in {block} blocks (expected {expected}); check quantization_config.weight_block_size"
        )
    scale = scale_inv.to(torch.float32).repeat_interleave(br, 0).repeat_interleave(bc, 1)[:out_dim, :in_dim]
    return weight.to(torch.float32) * scale  # [out, in]


def dequantize_mxfp4(blocks: Any, scales: Any) -> Any:
    """MXFP4: blocks uint8 [..., G, 16] (two FP4 codes per byte, low nibble first), scales uint8 [..., G]
    holding E8M0 exponents (value 2^(s - 127)); returns float32 [..., G * 32]."""
    import torch

    lut = torch.tensor(FP4_E2M1_VALUES, dtype=torch.float32)
    low = (blocks & 0x0F).long()
    high = (blocks >> 4).long()
    codes = torch.stack((low, high), dim=-1).flatten(-2)  # [..., G, 32]
    values = lut[codes] * torch.exp2(scales.to(torch.float32) - 127.0).unsqueeze(-1)
    return values.flatten(-2)  # [..., G * 32]


def dequantize_tensor(name: str, tensor: Any, scale: Any, block: tuple[int, int]) -> Any:
    """Return a float tensor for any stored weight: plain floats pass through, FP8 and MXFP4 are decoded."""
    import torch

    if name.endswith("_blocks"):
        if scale is None:
            raise CheckpointError(f"{name}: MXFP4 blocks without their *_scales tensor; re-download the checkpoint")
        return dequantize_mxfp4(tensor, scale)
    if tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        if scale is None:
            return tensor.to(torch.float32)
        if scale.numel() == 1:
            return tensor.to(torch.float32) * scale.to(torch.float32)
        return dequantize_fp8_blocks(tensor, scale, block)
    if tensor.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        kind = "float" if tensor.is_floating_point() else "integer"
        raise CheckpointError(
            f"{name}: {kind} tensor of dtype {tensor.dtype} is not a float weight alphaq reads "
            "(F32, F64, F16, BF16, F8_E4M3, F8_E5M2, MXFP4 blocks); dequantize the checkpoint first "
            "or exclude it with a pattern file"
        )
    return tensor


def fused_expert_slice(expert_weight: Any, part: str, split: str, orientation: str) -> Any:
    """One expert's 2-D matrix from its slice of a fused tensor.

    Args:
        expert_weight: [out, in] (``out_in``) or [in, out] (``in_out``) slice for one expert.
        part: ``"gate"``, ``"up"`` or ``""`` (the whole slice, e.g. down_proj).
        split: ``"halves"`` (gate rows then up rows) or ``"interleaved"`` (gate, up alternating).
        orientation: storage orientation of the slice.

    Returns:
        The [out, in] matrix.
    """
    matrix = expert_weight if orientation == "out_in" else expert_weight.transpose(0, 1)  # [out, in]
    if not part:
        return matrix.contiguous()
    index = 0 if part == "gate" else 1
    if split == "interleaved":
        return matrix[index::2].contiguous()
    half = matrix.shape[0] // 2
    return matrix[index * half : (index + 1) * half].contiguous()
