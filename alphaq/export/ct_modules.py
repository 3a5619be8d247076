"""Which matrices a compressed-tensors export writes, at which width and scheme (pure: headers and plan widths only).

Three granularities (``alphaq export --format compressed-tensors --granularity``):

* ``expert``: every planned matrix at its planned width, asymmetric (integer zero points). What the plan says, but
  transformers 5 cannot decode it itself (zero points, several expert schemes); it loads through compressed-tensors'
  own dequantizer.
* ``layer``: one symmetric scheme per MoE layer at its widest planned width (4 or 8 bits): what vLLM's fused-MoE
  kernels take.
* ``model``: one symmetric scheme for every routed expert of the model at the widest planned expert width: what
  transformers 5's compressed-tensors integration loads with ``AutoModelForCausalLM.from_pretrained``. It fuses
  each layer's per-expert 2-D modules (``experts.N.gate_proj``...) into 3-D parameters through its conversion
  mapping and decompresses them all with the *first* config group whose ``re:`` targets mention ``experts``
  (``transformers.integrations.compressed_tensors.get_experts_scheme``), with no zero point; a second expert
  scheme would be decoded silently with the first one's width. Non-expert matrices stay ``nn.Linear`` modules that
  compressed-tensors decodes with their own (symmetric) scheme.

Every granularity needs one 2-D ``.weight`` per expert projection in the checkpoint (the layout of 49 of the 68
MoE types with expert matrices that transformers 5.25 builds); checkpoints that store a layer's experts in one fused
tensor are refused with the reason (:func:`fused_layout_reason`), and so are (``model``) the types transformers
cannot load any compressed-tensors checkpoint of (:func:`transformers_blocker`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.errors import CheckpointError, ConfigError
from alphaq.export import ct_format as ctf

if TYPE_CHECKING:
    from alphaq.load.checkpoint import Checkpoint, MatrixRef

#: ``--granularity`` values (see the module docstring).
GRANULARITIES: tuple[str, ...] = ctf.GRANULARITIES
#: Stored dtypes the export reads.
DENSE_DTYPES: tuple[str, ...] = ("BF16", "F16", "F32")


def fused_layout_reason(ref: MatrixRef, model_type: str) -> str:
    """The one-line reason a matrix stored in a fused multi-expert tensor (or transposed) cannot be exported."""
    return (
        f"{ref.tensor}: {model_type} stores all experts of a layer in one tensor (fused layout), and "
        "compressed-tensors names one 2-D module per quantized weight; transformers 5.25 loads quantized experts "
        "only from per-expert modules (experts.N.gate_proj...) that its conversion mapping fuses, so no "
        "compressed-tensors checkpoint of this layout loads; use alphaq quantize or --format gguf"
    )


def check_layout(ckpt: Checkpoint, planned: Mapping[str, tuple[int, int | None]]) -> None:
    """Refuse planned matrices the format cannot name or read.

    Raises:
        CheckpointError: a fused / transposed / split matrix, or one stored in a non-float dtype.
    """
    refs = {m.name: m for m in ckpt.matrices}
    for name in planned:
        ref = refs[name]
        if ref.fused or ref.split != "none" or ref.orientation != "out_in" or not ref.tensor.endswith(".weight"):
            raise CheckpointError(fused_layout_reason(ref, str(ckpt.model_type)))
        if ref.dtype not in DENSE_DTYPES:
            raise CheckpointError(
                f"{ref.tensor}: stored as {ref.dtype}; the export reads BF16/F16/F32 weights only "
                "(dequantize the checkpoint first)"
            )


def _is_expert(ref: MatrixRef) -> bool:
    return ref.expert is not None and ref.layer is not None


def _layer_widths(ckpt: Checkpoint, planned: Mapping[str, tuple[int, int | None]]) -> dict[int, int]:
    """``--granularity layer``: each MoE layer's widest expert width, checked against vLLM's kernels."""
    refs = {m.name: m for m in ckpt.matrices}
    layer_bits: dict[int, int] = {}
    for name, (bits, _) in planned.items():
        ref = refs[name]
        if _is_expert(ref):
            layer_bits[ref.layer] = max(layer_bits.get(ref.layer, 0), bits)  # type: ignore[index]
    for layer, bits in sorted(layer_bits.items()):
        if bits not in ctf.VLLM_MOE_BITS:
            raise ConfigError(
                f"--granularity layer: layer {layer}'s widest expert width is {bits} bits, but "
                "vLLM's fused-MoE kernels take 4 or 8; re-plan with --widths 4,8 (or export with "
                "--granularity expert for transformers)"
            )
    return layer_bits


def model_width(ckpt: Checkpoint, widths: Mapping[str, tuple[int, int | None]]) -> int | None:
    """``--granularity model``: the one width every routed expert is written at (the widest planned), or None when
    the plan quantizes no routed expert.

    Raises:
        ConfigError: the plan keeps some routed experts at 16 bits while quantizing others, or its expert group
            sizes differ (transformers decodes every fused expert with one scheme).
    """
    refs = {m.name: m for m in ckpt.matrices}
    experts = {name: wg for name, wg in widths.items() if _is_expert(refs[name])}
    quantized = {name: wg for name, wg in experts.items() if wg[0] < 16}
    if not quantized:
        return None
    kept = sorted(name for name, (bits, _) in experts.items() if bits >= 16)
    if kept:
        raise ConfigError(
            f"--granularity model: the plan keeps {len(kept)} routed expert matrices (e.g. {kept[0]}) at 16 bits and "
            "quantizes the others, but transformers decodes every expert of the model with one scheme; re-plan "
            "with --widths without 16 for experts, or export with --granularity expert"
        )
    groups = sorted({int(g or 0) for _, g in quantized.values()})
    if len(groups) > 1:
        raise ConfigError(
            f"--granularity model: the plan's experts use group sizes {', '.join(map(str, groups))}, but "
            "transformers decodes every expert with one scheme; re-plan with one --group-size"
        )
    return max(bits for bits, _ in quantized.values())


def plan_modules(
    ckpt: Checkpoint, widths: Mapping[str, tuple[int, int | None]], granularity: str
) -> dict[str, ctf.CtModule]:
    """The quantized modules of the export (pure: checkpoint headers and plan widths only).

    Args:
        ckpt: the checkpoint the plan was made for.
        widths: plan matrix name -> (bits, group size), as :func:`alphaq.quantization.run.plan_widths` gives.
        granularity: one of :data:`GRANULARITIES`.

    Returns:
        Plan matrix name -> :class:`~alphaq.export.ct_format.CtModule`, for every matrix below 16 bits.

    Raises:
        CheckpointError: fused 3-D experts or a non-float stored matrix.
        ConfigError: an unknown granularity, a group size that does not divide a matrix, (``layer``) a layer whose
            widest width is not one vLLM's fused-MoE kernels take, (``model``) a plan transformers cannot decode
            with one expert scheme, or a width the scheme cannot hold.
    """
    if granularity not in GRANULARITIES:
        raise ConfigError(f"unknown --granularity {granularity!r}; use {', '.join(GRANULARITIES)}")
    refs = {m.name: m for m in ckpt.matrices}
    planned = {name: wg for name, wg in widths.items() if wg[0] < 16}
    check_layout(ckpt, planned)
    layer_bits = _layer_widths(ckpt, planned) if granularity == "layer" else {}
    every_expert = model_width(ckpt, widths) if granularity == "model" else None
    modules: dict[str, ctf.CtModule] = {}
    for name, (bits, group) in planned.items():
        ref = refs[name]
        is_expert = _is_expert(ref)
        written = bits
        if is_expert and granularity == "layer":
            written = layer_bits[ref.layer]  # type: ignore[index]
        elif is_expert and granularity == "model":
            written = int(every_expert)  # type: ignore[arg-type]
        modules[name] = ctf.CtModule(
            module=ref.tensor[: -len(".weight")],
            source=name,
            bits=written,
            group_size=int(group or 0),
            symmetric=granularity != "expert",
            rows=ref.shape[0],
            cols=ref.shape[1],
            layer=ref.layer,
            expert=ref.expert if is_expert else None,
            planned_bits=bits,
        )
    return modules


def model_conversions(folder: str | Path, model_type: str) -> list[Any]:
    """transformers' weight conversions for the checkpoint's causal-LM class, as ``from_pretrained`` collects them
    (``get_model_conversion_mapping`` on the model built on the meta device: mappings registered by class name
    included), else those registered for ``model_type``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping, get_model_conversion_mapping
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # config warnings of the skeleton are not the export's business
    try:
        config = AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return list(get_model_conversion_mapping(model))
    except (ValueError, KeyError, TypeError, AttributeError, ImportError, OSError, RuntimeError):
        return list(get_checkpoint_conversion_mapping(model_type) or [])
    finally:
        hf_logging.set_verbosity(verbosity)


def transformers_blocker(
    model_type: str, conversions: Iterable[Any], tensors: Iterable[str], quantized: Iterable[str]
) -> str | None:
    """Why ``from_pretrained`` fails on any compressed-tensors checkpoint of ``model_type``, or None.

    transformers 5.25's compressed-tensors quantizer puts its dequantizer in front of every ``WeightConverter`` of
    the model's conversion mapping whose sources are ``.weight`` tensors
    (``HfQuantizer.update_weight_conversions``); the dequantizer keeps only ``weight_packed`` tensors, so a merge of
    unquantized weights (Kimi-Linear's and Bailing-hybrid's ``q/k/v_conv1d`` -> ``conv1d``) receives nothing and
    the load stops with a conversion error.

    Args:
        model_type: the checkpoint's ``model_type``.
        conversions: the model's weight conversions (:func:`model_conversions`).
        tensors: every tensor name of the checkpoint.
        quantized: the tensor names the export quantizes.

    Returns:
        A one-line reason, or None when no such merge touches the checkpoint.
    """
    from transformers.core_model_loading import WeightConverter

    names, done = list(tensors), set(quantized)
    for converter in conversions:
        sources = list(getattr(converter, "_original_source_patterns", []) or [])
        if not isinstance(converter, WeightConverter) or not sources or any("experts" in s for s in sources):
            continue
        if not all(s.endswith(".weight") for s in sources):
            continue
        patterns = [re.compile(s.replace("*", r"[^.]+")) for s in sources]
        hit = [n for n in names if n not in done and any(p.search(n) for p in patterns)]
        if hit:
            targets = list(getattr(converter, "_original_target_patterns", []) or [])
            return (
                f"{model_type}: transformers' compressed-tensors loader runs its expert dequantizer on the "
                f"{' + '.join(sources)} -> {', '.join(targets)} merge, which drops unquantized weights such as "
                f"{hit[0]}, so from_pretrained fails on every compressed-tensors checkpoint of this type; export with "
                "--granularity expert and load through alphaq.export.compressed_tensors.dequantize_compressed_tensors"
            )
    return None


def widened(modules: Mapping[str, ctf.CtModule]) -> str | None:
    """A one-line warning when the export writes matrices wider than planned (``layer`` / ``model``), else None."""
    wider = [m for m in modules.values() if m.bits != m.planned_bits]
    if not wider:
        return None
    planned = sorted({m.planned_bits for m in wider})
    return (
        f"{len(wider)} of {len(modules)} quantized matrices are written wider than planned "
        f"(planned {', '.join(map(str, planned))} bits -> {max(m.bits for m in wider)}): one scheme per "
        "layer/model; plan with a single --widths value to export the plan's widths exactly"
    )
