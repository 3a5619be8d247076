"""Bench scripts run with ``bench/`` first on ``sys.path``: none may be named like a package they import."""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
#: Top-level packages alphaq or its dependencies import (transformers imports ``kernels``).
SHADOWED = {"kernels", "torch", "transformers", "triton", "numpy", "pandas", "gguf", "alphaq", "ray", "scipy"}


def test_no_bench_script_shadows_an_imported_package() -> None:
    names = {p.stem for p in BENCH.glob("*.py")} | {p.name for p in BENCH.iterdir() if p.is_dir()}
    assert not names & SHADOWED, f"bench/ shadows {sorted(names & SHADOWED)}: rename the script"
