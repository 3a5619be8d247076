"""Exports of a plan to serving formats other than alphaq's own packed checkpoint.

* :mod:`alphaq.export.llamacpp`: ``llama-quantize --tensor-type-file`` overrides and the cost of rounding a
  per-expert plan up to one type per (layer, projection).
"""
