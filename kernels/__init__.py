"""Triton kernels of alphaq, installed as ``alphaq.kernels``.

The source folder is the top-level ``kernels/`` of the repository; ``pyproject.toml`` maps it to the
``alphaq.kernels`` package so nothing named ``kernels`` is installed at the top level of site-packages.
Importing this package never imports Triton: each kernel module imports it lazily.
"""
