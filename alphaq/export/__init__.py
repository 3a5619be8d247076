"""Exports of a plan to serving formats other than alphaq's own packed checkpoint.

* :mod:`alphaq.export.llamacpp`: ``llama-quantize --tensor-type-file`` overrides and the cost of rounding a
  per-expert plan up to one type per (layer, projection); the ggml type tables (and the planner's ``gguf``
  target) are :mod:`alphaq.export.ggml_types`.
* :mod:`alphaq.export.gguf_export`: a GGUF written by llama.cpp's own converter and ``llama-quantize`` and verified
  against the plan (pure check: :mod:`alphaq.export.gguf_check`; tool calls: :mod:`alphaq.export.gguf_io`;
  building/finding the tools: :mod:`alphaq.export.llamacpp_tools`; every tensor's bytes and error at every type,
  measured with llama-quantize for ``alphaq plan --target gguf``: :mod:`alphaq.export.gguf_measure`; KL
  divergence, importance matrices and preset sizes: :mod:`alphaq.export.llamacpp_runs`).
* :mod:`alphaq.export.compressed_tensors`: a Hugging Face checkpoint in compressed-tensors ``pack-quantized`` form
  (transformers, vLLM), streamed shard by shard; the pure format mapping is :mod:`alphaq.export.ct_format`.
"""
