"""Evaluation: standard-protocol perplexity, simulated (fake) quantization of a plan, allocator comparison."""

from __future__ import annotations

__all__ = ["perplexity", "PerplexityResult", "apply_plan", "SimulationResult", "run_compare"]


def __getattr__(name: str):  # lazy: keep `alphaq --help` fast
    if name in ("perplexity", "PerplexityResult", "model_context"):
        from alphaq.evaluation import perplexity as _p

        return getattr(_p, name)
    if name in ("apply_plan", "SimulationResult"):
        from alphaq.evaluation import simulate as _s

        return getattr(_s, name)
    if name == "run_compare":
        from alphaq.evaluation.compare import run_compare

        return run_compare
    raise AttributeError(name)
