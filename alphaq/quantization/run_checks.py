"""What ``alphaq quantize`` checks before it writes anything: its options, and that a plan fits the checkpoint and
the quantizer (:func:`plan_widths`, also used by ``alphaq export --format compressed-tensors``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alphaq.errors import ConfigError, PlanError
from alphaq.quantization import writer as fmt
from alphaq.quantization.methods import QUANTIZE_METHODS

if TYPE_CHECKING:
    from alphaq.load.checkpoint import Checkpoint
    from alphaq.planning.plan_file import Plan

#: How zero points are stored: the quantizer's own (float) or rounded to integers (what compressed-tensors holds).
ZERO_POINTS: tuple[str, ...] = ("float", "integer")
DEVICES: tuple[str, ...] = ("cpu", "cuda")
#: Widths each method can write (the torch reference handles 1..8 for all three).
METHOD_BITS: dict[str, tuple[int, ...]] = {method: tuple(range(1, 9)) for method in QUANTIZE_METHODS}


def check_options(method: str, device: str, max_shard_bytes: int) -> bool:
    """Validate the options; return whether the Triton quantize-pack kernel is used (rtn on CUDA).

    Args:
        method: the quantizer (one of :data:`alphaq.quantization.methods.QUANTIZE_METHODS`).
        device: ``cpu`` or ``cuda``.
        max_shard_bytes: largest output shard (a positive integer).

    Returns:
        True where ``rtn`` runs on CUDA with Triton available.

    Raises:
        ConfigError: unknown method or device, a bad shard size, CUDA asked for and unavailable.
    """
    if method not in QUANTIZE_METHODS:
        raise ConfigError(f"unknown quantization method {method!r}; use one of {', '.join(QUANTIZE_METHODS)}")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda")
    if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes <= 0:
        raise ConfigError(f"max_shard_bytes={max_shard_bytes!r} must be a positive integer")
    if device == "cpu":
        return False
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available to torch; use --device cpu")
    if method != "rtn":
        return False
    try:
        from alphaq.kernels import triton_available
    except ImportError:
        return False
    return bool(triton_available())


def plan_widths(
    plan: Plan, ckpt: Checkpoint, method: str, *, source: str = "plan"
) -> tuple[dict[str, tuple[int, int | None]], list[str]]:
    """Check that ``plan`` fits ``ckpt`` and ``method``; return matrix name -> (bits, group_size) and warnings.

    Args:
        plan: the loaded plan.
        ckpt: the opened source checkpoint.
        method: the quantizer that will write the widths.
        source: how errors name the plan (its path).

    Returns:
        ``({matrix name: (bits, group_size)}, warnings)``.

    Raises:
        PlanError: another checkpoint's plan, planned matrices missing or of other shapes, experts not planned.
        ConfigError: a width ``method`` cannot write.
    """
    from alphaq.load import Role

    refs = {m.name: m for m in ckpt.matrices}
    recorded = (plan.provenance.get("checkpoint") or {}).get("fingerprint")
    warnings: list[str] = []
    if recorded and recorded != ckpt.fingerprint:
        raise PlanError(
            f"{source} was made for another checkpoint (fingerprint {recorded}, {ckpt.path} has "
            f"{ckpt.fingerprint}); run `alphaq plan` on this checkpoint"
        )
    if not recorded:
        warnings.append("the plan records no checkpoint fingerprint: it was matched by tensor names and shapes only")
    missing = [t.name for t in plan.tensors if t.name not in refs]
    if missing:
        raise PlanError(
            f"{source} names {len(missing)} matrix(es) not in the checkpoint (first: {missing[0]}); the "
            "plan was made for another checkpoint: run `alphaq plan` on this one"
        )
    for t in plan.tensors:
        if (t.rows, t.cols) != refs[t.name].shape:
            raise PlanError(
                f"{source}: {t.name} is {t.rows}x{t.cols} in the plan but {refs[t.name].shape[0]}x"
                f"{refs[t.name].shape[1]} in the checkpoint; run `alphaq plan` on this checkpoint"
            )
    planned = {t.name for t in plan.tensors}
    unplanned = [m for m in ckpt.matrices if m.name not in planned]
    experts = [m.name for m in unplanned if m.role is Role.EXPERT]
    if experts:
        raise PlanError(
            f"{len(experts)} routed-expert matrix(es) of the checkpoint are not in {source} (first: "
            f"{experts[0]}); re-create the plan with `alphaq plan` on this checkpoint"
        )
    if unplanned:
        warnings.append(
            f"{len(unplanned)} non-expert matrix(es) not in the plan are copied unchanged (first: {unplanned[0].name})"
        )
    for t in plan.tensors:
        if t.bits != fmt.KEEP_BITS and t.bits not in METHOD_BITS[method]:
            widths = ", ".join(str(b) for b in METHOD_BITS[method])
            raise ConfigError(
                f"--method {method} cannot write {t.bits}-bit weights ({t.name}); it supports widths "
                f"{widths}: choose another --method or re-plan with --widths among them"
            )
    return {t.name: (t.bits, t.group_size) for t in plan.tensors}, warnings


__all__ = ["DEVICES", "METHOD_BITS", "ZERO_POINTS", "check_options", "plan_widths"]
