"""The compressed-tensors ``pack-quantized`` format as a pure mapping from alphaq's group-wise quantization.

compressed-tensors (the format llm-compressor writes, read by transformers and vLLM) stores an int weight of a
module ``M`` as ``M.weight_packed`` (int32: 32 consecutive ``num_bits`` codes per ``num_bits`` words, no padding
bits), ``M.weight_scale`` ``[R, C / group_size]``, ``M.weight_shape`` (``[R, C]``, int64) and, for an asymmetric
scheme, ``M.weight_zero_point`` (the integer zero points packed the same way along the rows,
``[ceil(R * bits / 32), C / group_size]``). Codes are signed, ``k in [-2**(b-1), 2**(b-1) - 1]``, and a value
dequantizes to ``(k - zero_point) * scale``.

alphaq's codes ``q in [0, 2**b - 1]`` with ``(q - zero) * scale`` map onto it exactly with ``k = q - 2**(b-1)`` and
``zero_point = zero - 2**(b-1)`` *when the zero is an integer*. alphaq's quantizers keep float zeros (HQQ style; RTN's
``-min / scale`` is not rounded either), so :func:`integer_zero_point` rounds each group's zero to the nearest
integer in ``[0, 2**b - 1]`` and re-chooses the codes for it (the scale is kept); that is the one change the export
makes to alphaq's quantization. :func:`symmetric_quantize` is the symmetric min-max RTN (no zero point) that
vLLM's fused-MoE kernels read. Both return an alphaq :class:`~alphaq.quantization.primitives.QuantizedTensor`
with integer zeros, so :func:`alphaq.quantization.primitives.dequantize_groupwise` gives the exact values the
compressed-tensors checkpoint decompresses to (the scale is stored in float32, which holds alphaq's float16 scale
exactly). :func:`compress_matrix` packs through compressed-tensors' own ``PackedQuantizationCompressor`` and
checks that its ``decompress`` gives those values back bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alphaq.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from alphaq.quantization.layout import QuantSpec
    from alphaq.quantization.primitives import QuantizedTensor

#: The compressed-tensors format written (``quantization_config.format``).
CT_FORMAT = "pack-quantized"
#: ``--granularity`` values: per-matrix schemes (asymmetric), one symmetric scheme per MoE layer (vLLM) or one for
#: every routed expert of the model (transformers; see :mod:`alphaq.export.ct_modules`).
GRANULARITIES: tuple[str, ...] = ("expert", "layer", "model")
#: Widths vLLM's fused-MoE kernels for compressed-tensors int weights take (``WNA16_SUPPORTED_BITS`` of the
#: Marlin/Triton MoE methods: uint4b8 and uint8b128).
VLLM_MOE_BITS: tuple[int, ...] = (4, 8)
#: Projection names of a per-expert module (Mixtral's w1/w2/w3 and the gate/up/down_proj of Qwen, OLMoE...).
_EXPERT_PROJ_RE = r"(w1|w2|w3|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class CtModule:
    """One matrix of the checkpoint written as a compressed-tensors quantized module.

    Attributes:
        module: module name (the tensor name without ``.weight``).
        source: the matrix name in the plan / checkpoint.
        bits: width.
        group_size: columns per scale (and zero point).
        symmetric: no zero point (codes centred on 0).
        rows: output features R.
        cols: input features C (a multiple of ``group_size``).
        layer: decoder layer or None.
        expert: routed expert index or None.
        planned_bits: the plan's width (differs from ``bits`` when ``--granularity layer`` rounds a layer up).
    """

    module: str
    source: str
    bits: int
    group_size: int
    symmetric: bool
    rows: int
    cols: int
    layer: int | None
    expert: int | None
    planned_bits: int

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 8:
            raise ConfigError(
                f"{self.source}: {self.bits}-bit weights cannot be written as compressed-tensors "
                "pack-quantized (1..8 bits); re-plan with --widths among 1..8"
            )
        if self.symmetric and self.bits < 2:
            raise ConfigError(
                f"{self.source}: a symmetric scheme needs at least 2 bits (1 bit holds only -1 and 0); "
                "re-plan with --widths 4,8 or export with --granularity expert"
            )
        if self.group_size <= 0 or self.cols % self.group_size:
            raise ConfigError(
                f"{self.source}: {self.cols} columns are not a multiple of group size {self.group_size}, "
                "and compressed-tensors' group strategy has no partial groups; re-plan with a "
                f"--group-size that divides {self.cols} (e.g. {_dividing_group(self.cols)})"
            )

    def tensor_specs(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, safetensors dtype, shape) of each stored tensor, in the compressor's layout."""
        groups = self.cols // self.group_size
        specs = [
            (f"{self.module}.weight_packed", "I32", (self.rows, -(-self.cols * self.bits // 32))),
            (f"{self.module}.weight_scale", "F32", (self.rows, groups)),
            (f"{self.module}.weight_shape", "I64", (2,)),
        ]
        if not self.symmetric:
            specs.append((f"{self.module}.weight_zero_point", "I32", (-(-self.rows * self.bits // 32), groups)))
        return specs


def _dividing_group(cols: int) -> int:
    return next((g for g in (128, 64, 32, 16, 8) if cols % g == 0), 8)


# -- values -------------------------------------------------------------------------------------------


def integer_zero_point(w: torch.Tensor, qt: QuantizedTensor) -> QuantizedTensor:
    """Round each group's zero to an integer in ``[0, 2**b - 1]`` and re-choose the codes for it.

    :func:`alphaq.quantization.primitives.round_zero_points`: the same function ``alphaq quantize
    --zero-points integer`` applies, so that checkpoint and this export dequantize to the same values.
    """
    from alphaq.quantization.primitives import round_zero_points

    return round_zero_points(w, qt)


def symmetric_quantize(w: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    """Symmetric min-max round-to-nearest: codes ``k in [-2**(b-1), 2**(b-1) - 1]``, value ``k * scale``.

    The float16 scale is the smallest that keeps both ``min(w)`` and ``max(w)`` of the group inside the code range
    (rounded up to float16), so every value is within ``scale / 2`` of its dequantized value. Returned in alphaq's
    form: ``q = k + 2**(b-1)`` and ``zero = 2**(b-1)`` for every group.

    Args:
        w: weight [R, C], C a multiple of ``spec.group_size``.
        spec: width (>= 2) and group size.

    Returns:
        The :class:`QuantizedTensor`.
    """
    import torch

    from alphaq.quantization.primitives import QuantizedTensor, as_float_matrix, to_fp16_scale

    w32 = as_float_matrix(w)
    rows, cols = w32.shape
    gs, half = spec.group_size, 1 << (spec.bits - 1)
    block = w32.reshape(rows, cols // gs, gs)  # [R, G, gs]
    need = torch.maximum(-block.amin(dim=-1).clamp_max(0.0) / half, block.amax(dim=-1).clamp_min(0.0) / (half - 1))
    scale16 = to_fp16_scale(torch.where(need > 0, need, torch.ones_like(need)))  # [R, G]
    k = torch.round(block / scale16.to(torch.float32).unsqueeze(-1)).clamp_(-half, half - 1)
    zero = torch.full_like(scale16, float(half))
    return QuantizedTensor(
        q=(k + half).reshape(rows, cols).to(torch.uint8), scale=scale16, zero=zero, spec=spec, shape=(rows, cols)
    )


# -- compressed-tensors objects ---------------------------------------------------------------------------


def scheme(bits: int, group_size: int, symmetric: bool, targets: Sequence[str]) -> Any:
    """The ``QuantizationScheme`` of one config group: int weights, group strategy, pack-quantized."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    args = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy="group", group_size=group_size)
    return QuantizationScheme(targets=list(targets), weights=args, format=CT_FORMAT)


def compress_matrix(qt: QuantizedTensor, module: CtModule) -> dict[str, torch.Tensor]:
    """Pack one quantized matrix with compressed-tensors' ``PackedQuantizationCompressor`` and check it decodes.

    Args:
        qt: the matrix with integer zeros (:func:`integer_zero_point` / :func:`symmetric_quantize`).
        module: where and how it is written.

    Returns:
        Local name (``weight_packed``, ``weight_scale``, ``weight_shape``, ``weight_zero_point``) -> tensor.

    Raises:
        RuntimeError: the compressor's output does not decompress to ``qt``'s values (a bug).
    """
    import torch
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor

    from alphaq.quantization.primitives import dequantize_groupwise

    half = 1 << (module.bits - 1)
    w_hat = dequantize_groupwise(qt)  # [R, C] float32, the values the checkpoint must hold
    scale = qt.scale.to(torch.float32)  # float16 values, exact in float32
    zero_point = (qt.zero.to(torch.float32) - half).to(torch.int8)  # [R, G], signed
    sch = scheme(module.bits, module.group_size, module.symmetric, [module.module])
    state = PackedQuantizationCompressor.compress(
        {"weight": w_hat, "weight_scale": scale, "weight_zero_point": zero_point}, sch
    )
    check = PackedQuantizationCompressor.decompress(state, sch)["weight"]
    if not torch.equal(check.to(torch.float32), w_hat):
        diff = float((check.to(torch.float32) - w_hat).abs().max())
        raise RuntimeError(
            f"{module.source}: compressed-tensors decompresses to other values (max |diff| {diff:.3g}) "
            "(bug in alphaq, please report it)"
        )
    out = {name: state[name].contiguous() for name in ("weight_packed", "weight_scale", "weight_shape")}
    if not module.symmetric:
        out["weight_zero_point"] = state["weight_zero_point"].contiguous()
    return out


def config_groups(modules: Iterable[CtModule], *, granularity: str) -> dict[str, Any]:
    """One config group per (bits, group size, symmetric), targets naming its modules.

    ``expert`` granularity names every module; ``layer`` and ``model`` granularity target each MoE layer's experts
    with a ``re:`` pattern (``re:^model\\.layers\\.3\\.mlp\\.experts\\.\\d+\\.(w1|...|down_proj)$``) that matches the
    projection names of both naming styles, as vLLM looks up expert 0's ``gate_proj``/``up_proj``/``down_proj``.

    Returns:
        Group name (``group_0``, ...) -> ``QuantizationScheme``, ordered by (bits, group size).
    """
    from alphaq.quantization.writer import natural_key

    by_key: dict[tuple[int, int, bool], list[str]] = {}
    for m in modules:
        target = _layer_target(m.module) if granularity != "expert" and m.expert is not None else m.module
        targets = by_key.setdefault((m.bits, m.group_size, m.symmetric), [])
        if target not in targets:
            targets.append(target)
    return {
        f"group_{i}": scheme(bits, gs, sym, sorted(by_key[(bits, gs, sym)], key=natural_key))
        for i, (bits, gs, sym) in enumerate(sorted(by_key))
    }


def _layer_target(module: str) -> str:
    """``re:`` pattern of every routed expert projection of ``module``'s experts block."""
    match = re.match(r"^(.*\.experts)\.\d+\.[^.]+$", module)
    if match is None:
        raise ConfigError(
            f"{module}: not an `experts.N.proj` module, so --granularity layer cannot target its layer; "
            "export with --granularity expert"
        )
    return f"re:^{re.escape(match.group(1))}\\.\\d+\\.{_EXPERT_PROJ_RE}$"


def quantization_config(groups: Mapping[str, Any]) -> dict[str, Any]:
    """The ``quantization_config`` of config.json, as ``ModelCompressor.update_config`` writes it.

    Built as a compressed-tensors ``QuantizationConfig`` (status ``compressed``, format ``pack-quantized``) and
    validated by transformers' ``CompressedTensorsConfig`` round trip.
    """
    import compressed_tensors
    from compressed_tensors.base import (
        COMPRESSION_VERSION_NAME,
        QUANTIZATION_METHOD,
        QUANTIZATION_METHOD_NAME,
        SPARSITY_CONFIG_NAME,
        TRANSFORM_CONFIG_NAME,
    )
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus
    from transformers import CompressedTensorsConfig

    config = QuantizationConfig(
        config_groups=dict(groups), format=CT_FORMAT, quantization_status=QuantizationStatus.COMPRESSED, ignore=[]
    )
    data = {
        COMPRESSION_VERSION_NAME: compressed_tensors.__version__,
        QUANTIZATION_METHOD_NAME: QUANTIZATION_METHOD,
        SPARSITY_CONFIG_NAME: {},
        TRANSFORM_CONFIG_NAME: {},
        **config.model_dump(exclude={"quant_method"}),
    }
    reread = CompressedTensorsConfig.from_dict(dict(data)).quantization_config
    if reread is None or set(reread.config_groups) != set(groups):
        raise RuntimeError(
            "transformers does not read back the compressed-tensors config (bug in alphaq, please report it)"
        )
    return data


def engines(modules: Sequence[CtModule], *, granularity: str, blocker: str | None = None) -> dict[str, str]:
    """Which engine can serve this export, one line each (see docs/compressed-tensors.md for the sources).

    Args:
        modules: the quantized modules.
        granularity: ``expert``, ``layer`` or ``model``.
        blocker: why transformers cannot load any compressed-tensors checkpoint of this type (then its line is
            ``no: ...``), or None.

    Returns:
        Engine -> ``yes: ...`` / ``no: ...`` / ``via ...``.
    """
    experts = [m for m in modules if m.expert is not None]
    schemes = {(m.bits, m.group_size, m.symmetric) for m in experts}
    layer_ok = granularity != "expert" and all(m.bits in VLLM_MOE_BITS for m in experts)
    direct = len(schemes) <= 1 and all(m.symmetric for m in modules)
    return {
        "vllm": (
            "yes: one symmetric 4/8-bit scheme per MoE layer (vLLM's fused-MoE WNA16 kernels)"
            if layer_ok
            else "no: vLLM's fused-MoE kernels need one symmetric 4- or 8-bit scheme per layer: "
            "export with --granularity layer and --widths 4,8"
        ),
        "transformers": (
            f"no: {blocker}"
            if blocker
            else "yes: AutoModelForCausalLM.from_pretrained (one symmetric scheme for every routed expert)"
            if direct
            else "via alphaq.export.compressed_tensors.dequantize_compressed_tensors (compressed-tensors' "
            "own dequantizer, then from_pretrained): transformers 5.x decodes every fused expert "
            "with the first expert scheme and no zero point; export with --granularity model to load directly"
        ),
    }
