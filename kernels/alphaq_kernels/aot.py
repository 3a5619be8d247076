"""Compile a planned launch for an NVIDIA GPU without one, and summarise the machine code.

Triton compiles to PTX and, with the ``ptxas`` shipped in its wheel, to a cubin on any machine; only
running needs a GPU. This specialises the kernel exactly as a launch would (16-byte divisibility of
pointers and integer arguments, integers equal to 1 as constants), compiles it for ``sm_<arch>``, and
counts what matters for a memory-bound kernel: registers, spills, global load widths, shuffles.
Used by ``bench/kernels.py --compile-only`` and a test, so CPU-only CI checks the GPU build.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from alphaq.kernels.launch import Launch, jit_module


@dataclass(frozen=True)
class CompiledKernel:
    """What the compiler made of one launch.

    Attributes:
        kernel: kernel name.
        arch: compute capability, e.g. 90.
        registers: registers per thread (from the cubin; NaN when unknown).
        spills: bytes spilled to local memory (0 expected).
        shared_bytes: static shared memory per program.
        global_loads: counts of PTX global load instructions by width, e.g. ``{"ld.global.v4.b32": 4}``.
        shuffles: PTX warp shuffles (cross-lane reductions).
        ptx: the PTX text.
    """

    kernel: str
    arch: int
    registers: float
    spills: float
    shared_bytes: int
    global_loads: dict[str, int]
    shuffles: int
    ptx: str


def _bind(fn: Any, backend: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict, dict, dict, Any]:
    """Signature, constants and attributes of ``fn`` called with ``args`` (as ``JITFunction.run`` does)."""
    from triton.runtime.jit import create_function_from_signature

    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    return signature, constexprs, attrs, options


def compile_launch(launch: Launch, arch: int = 90) -> CompiledKernel:
    """Compile ``launch`` (planned with ``interpret=False``) for ``sm_<arch>`` without running it.

    Args:
        launch: from one of the ``plan_*`` functions of :mod:`alphaq.kernels.launch`; its tensors may
            live on the CPU (only their dtypes and alignment matter).
        arch: compute capability (90 for H100/H200).

    Returns:
        The :class:`CompiledKernel` summary.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource, make_backend

    fn = getattr(jit_module(False), launch.kernel)
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kwargs = {
        **launch.meta,
        **launch.constexprs,
        **launch.options,
        "num_warps": launch.num_warps,
        "num_stages": launch.num_stages,
    }
    signature, constexprs, attrs, options = _bind(fn, backend, launch.args, kwargs)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    ptx = compiled.asm["ptx"]
    registers, spills = _ptxas_usage(compiled)
    loads = Counter(re.findall(r"\bld\.global(?:\.[a-z0-9]+)*", ptx))
    return CompiledKernel(
        kernel=launch.kernel,
        arch=arch,
        registers=registers,
        spills=spills,
        shared_bytes=int(getattr(compiled.metadata, "shared", 0)),
        global_loads=dict(loads),
        shuffles=len(re.findall(r"\bshfl\.sync", ptx)),
        ptx=ptx,
    )


def _ptxas_usage(compiled: Any) -> tuple[float, float]:
    """Registers and spill bytes per thread read from the cubin with the bundled ``cuobjdump``."""
    import os
    import subprocess
    import tempfile

    import triton

    cubin = compiled.asm.get("cubin")
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if cubin is None or not os.path.exists(tool):
        return float("nan"), float("nan")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        out = subprocess.run(
            [tool, "--dump-resource-usage", handle.name], capture_output=True, text=True, check=False
        ).stdout
    regs = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    return (float(regs.group(1)) if regs else float("nan"), float(stack.group(1)) if stack else float("nan"))
