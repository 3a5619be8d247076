"""Fixtures of the kernel tests.

The Triton kernels run here on CPU tensors, in the Triton interpreter. No ``TRITON_INTERPRET`` is
needed: ``alphaq.kernels.launch.jit_module`` loads the kernels in interpreter mode for CPU tensors
whatever the environment was when triton was first imported (by these tests or any other in the same
pytest process), so the order in which tests run does not matter.
"""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture()
def needs_triton() -> None:
    """Skip the test when triton cannot be imported (the torch reference is still tested)."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not importable: the Triton kernels cannot run here (pip install triton)")


@pytest.fixture()
def needs_cuda(needs_triton: None) -> None:
    """Skip the test unless a CUDA device is present (compiled kernels)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the compiled kernels are tested only in the interpreter here")
