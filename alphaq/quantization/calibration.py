"""GPTQ calibration: the Hessian ``H = 2 X^T X / N`` of every planned matrix's inputs on calibration text.

The original model is loaded with transformers, the text is tokenized whole and cut into non-overlapping windows of
the model's context (the evaluation protocol's windows, :func:`alphaq.evaluation.perplexity.model_context`); the
first :data:`DEFAULT_WINDOWS` (128, GPTQ's standard count) are run through the model once, and forward hooks add up
each matrix's inputs:

* routed experts (transformers 5 fuses them into one module per layer, ``gate_up_proj`` [E, 2I, H] and
  ``down_proj`` [E, H, I], called with the router's top-k indices): a pre-hook on the experts module reproduces the
  routing, so ``w1`` and ``w3`` of expert ``e`` share the hidden states routed to ``e`` and ``w2`` gets
  ``act(w1 x) * (w3 x)`` of those tokens;
* other planned ``nn.Linear`` matrices (attention at a fixed width): the module's input.

All Hessians come from the original (unquantized) model in one pass, not layer by layer on the partly quantized
model as in the paper's sequential variant. Memory: one float32 [C, C] per distinct input, for Mixtral-style experts
``4 * (H^2 + I^2)`` bytes per expert.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from alphaq.load.checkpoint import MatrixRef

#: GPTQ's standard number of calibration windows.
DEFAULT_WINDOWS = 128
#: Windows per forward pass.
BATCH_WINDOWS = 8
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass
class HessianSums:
    """Running ``X^T X`` sums and token counts, keyed by ``(layer, expert, "in" | "down")`` or a module name."""

    sums: dict[Any, torch.Tensor] = field(default_factory=dict)
    counts: dict[Any, int] = field(default_factory=dict)

    def add(self, key: Any, x: torch.Tensor) -> None:
        """Add the inputs ``x`` [n, C] (float32) of ``key``."""
        xtx = x.T @ x  # [C, C]
        if key in self.sums:
            self.sums[key] += xtx
        else:
            self.sums[key] = xtx
        self.counts[key] = self.counts.get(key, 0) + int(x.shape[0])

    def hessian(self, key: Any) -> torch.Tensor | None:
        """``2 X^T X / N`` [C, C] of ``key``; None when it saw no token."""
        n = self.counts.get(key, 0)
        return None if n == 0 else self.sums[key] * (2.0 / n)


def expert_key(ref: MatrixRef) -> tuple[int, int, str]:
    """The input key of a routed-expert matrix: ``w1``/``w3`` share ``"in"``, ``w2`` has ``"down"``."""
    return (int(ref.layer or 0), int(ref.expert or 0), "down" if ref.proj == "down" else "in")


def _expert_modules(model: Any) -> list[tuple[int, Any]]:
    """(layer, module) of every fused routed-experts module (3-D ``gate_up_proj`` and ``down_proj``)."""
    found = []
    for name, module in model.named_modules():
        up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
        layer = _LAYER.search(name + ".")
        if layer and getattr(up, "dim", lambda: 0)() == 3 and getattr(down, "dim", lambda: 0)() == 3:
            found.append((int(layer.group(1)), module))
    return found


def capture_hessians(
    model: Any, windows: torch.Tensor, *, linear_names: Iterable[str] = (), batch_windows: int = BATCH_WINDOWS
) -> HessianSums:
    """Run ``windows`` through ``model`` and add up the inputs of its routed experts and of ``linear_names``.

    Args:
        model: a transformers causal LM with fused routed experts (Mixtral layout of transformers 5).
        windows: token ids [N, L].
        linear_names: module names of ``nn.Linear`` layers whose inputs to capture (e.g. attention projections).
        batch_windows: windows per forward pass.

    Returns:
        The :class:`HessianSums`: expert keys ``(layer, expert, "in" | "down")`` and the given module names.

    Raises:
        ConfigError: the model holds no fused routed-experts module.
    """
    import torch

    sums = HessianSums()
    experts = _expert_modules(model)
    if not experts:
        raise ConfigError(
            f"--method gptq: {type(model).__name__} holds no fused routed-experts module "
            "(gate_up_proj [E, 2I, H], down_proj [E, H, I]); use a data-free --method"
        )

    def expert_hook(layer: int) -> Any:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            values = list(args) + [kwargs.get(k) for k in ("hidden_states", "top_k_index")[len(args) :]]
            hidden, top_k = values[0], values[1]
            x_all = hidden.reshape(-1, hidden.shape[-1]).to(torch.float32)  # [T, H]
            top_k = top_k.reshape(x_all.shape[0], -1)  # [T, k]
            for e in range(module.gate_up_proj.shape[0]):
                routed = (top_k == e).any(dim=1)  # [T]
                if not bool(routed.any()):
                    continue
                x = x_all[routed]  # [n, H]
                sums.add((layer, e, "in"), x)
                gate, up = (x @ module.gate_up_proj[e].to(torch.float32).T).chunk(2, dim=-1)  # [n, I] x2
                sums.add((layer, e, "down"), module.act_fn(gate) * up)

        return hook

    def linear_hook(name: str) -> Any:
        def hook(module: Any, args: tuple[Any, ...]) -> None:
            sums.add(name, args[0].reshape(-1, args[0].shape[-1]).to(torch.float32))

        return hook

    handles = [module.register_forward_pre_hook(expert_hook(layer), with_kwargs=True) for layer, module in experts]
    modules = dict(model.named_modules())
    handles += [modules[name].register_forward_pre_hook(linear_hook(name)) for name in linear_names]
    try:
        with torch.no_grad():
            for start in range(0, windows.shape[0], batch_windows):
                model(input_ids=windows[start : start + batch_windows], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return sums


@dataclass(frozen=True)
class Calibration:
    """The Hessians of the planned matrices and how they were measured.

    Attributes:
        sums: the captured :class:`HessianSums`.
        linear: checkpoint tensor name -> module name, for the non-expert matrices captured.
        record: ``{"text": {path, sha256}, "windows", "windows_available", "context", "tokens"}``.
        warnings: e.g. fewer windows than asked, experts no calibration token reached (quantized with rtn).
    """

    sums: HessianSums
    linear: dict[str, str]
    record: dict[str, Any]
    warnings: tuple[str, ...] = ()

    def hessian(self, ref: MatrixRef) -> torch.Tensor | None:
        """``2 X^T X / N`` of ``ref``'s inputs; None when none was captured (GPTQ is then round-to-nearest)."""
        if ref.role.value == "expert":
            return self.sums.hessian(expert_key(ref))
        module = self.linear.get(ref.tensor)
        return None if module is None else self.sums.hessian(module)


def calibrate(
    checkpoint: str | Path,
    refs: Iterable[MatrixRef],
    text_path: str | Path,
    *,
    windows: int = DEFAULT_WINDOWS,
    device: str = "cpu",
) -> Calibration:
    """Load the original model, run the calibration windows and capture the Hessians of ``refs``.

    Args:
        checkpoint: the source checkpoint folder.
        refs: the matrices to be quantized with GPTQ.
        text_path: calibration text file.
        windows: windows of the model's context to use (fewer when the text is shorter: a warning says so).
        device: where the model runs.

    Returns:
        The :class:`Calibration`.

    Raises:
        ConfigError: a bad window count, a text shorter than one window.
        AlphaQError: the text or the model cannot be read.
    """
    import torch

    from alphaq.evaluation.datasets import read_text
    from alphaq.evaluation.perplexity import model_context, window_starts
    from alphaq.load.model import load_model, tokenize_text
    from alphaq.provenance import text_record

    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        raise ConfigError(f"--calibration-windows {windows!r} must be a positive integer (GPTQ's standard is 128)")
    text = read_text(text_path)
    model, tokenizer = load_model(checkpoint, device=device)
    ids = torch.tensor(tokenize_text(tokenizer, text), dtype=torch.long)
    context = model_context(model)
    starts = window_starts(int(ids.numel()), context, context)
    if not starts:
        raise ConfigError(
            f"{text_path}: {ids.numel()} tokens, shorter than one window of {context}; pass a longer --calibration-text"
        )
    used = starts[:windows]
    batch = torch.stack([ids[s : s + context] for s in used]).to(device)  # [N, L]
    refs = list(refs)
    modules = {name for name, _ in model.named_modules()}
    linear = {
        r.tensor: r.tensor.removesuffix(".weight")
        for r in refs
        if r.role.value != "expert" and r.tensor.removesuffix(".weight") in modules
    }
    sums = capture_hessians(model, batch, linear_names=sorted(set(linear.values())))
    del model
    warnings = []
    if len(used) < windows:
        warnings.append(
            f"the calibration text holds {len(starts)} window(s) of {context} tokens, fewer than the "
            f"{windows} asked: GPTQ was calibrated on {len(used)}"
        )
    calib = Calibration(
        sums,
        linear,
        {
            "text": text_record(text_path),
            "windows": len(used),
            "windows_asked": windows,
            "context": context,
            "tokens": len(used) * context,
        },
    )
    blind = [r.name for r in refs if calib.hessian(r) is None]
    if blind:
        warnings.append(
            f"{len(blind)} matrix(es) received no calibration input (first: {blind[0]}) and were "
            "quantized with plain round-to-nearest"
        )
    return Calibration(sums, linear, calib.record, tuple(warnings))


__all__ = ["DEFAULT_WINDOWS", "Calibration", "HessianSums", "calibrate", "capture_hessians", "expert_key"]
