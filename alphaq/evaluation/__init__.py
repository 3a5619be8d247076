"""Evaluation: standard-protocol perplexity, simulated (fake) quantization of a plan, plan verification, allocator
comparison.

Import the functions from their modules (:mod:`alphaq.evaluation.perplexity`, :mod:`~alphaq.evaluation.simulate`,
:mod:`~alphaq.evaluation.eval_run`, :mod:`~alphaq.evaluation.compare`); the names below are lazy shortcuts (the
function ``perplexity`` is not one: the submodule of that name would shadow it).
"""

from __future__ import annotations

_LAZY = {
    "PerplexityResult": "alphaq.evaluation.perplexity",
    "model_context": "alphaq.evaluation.perplexity",
    "apply_plan": "alphaq.evaluation.simulate",
    "SimulationResult": "alphaq.evaluation.simulate",
    "run_eval": "alphaq.evaluation.eval_run",
    "EvalOptions": "alphaq.evaluation.options",
    "run_compare": "alphaq.evaluation.compare",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:  # lazy: keep `alphaq --help` fast
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
