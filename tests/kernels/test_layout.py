"""The repository's ``kernels/`` folder never shadows the ``kernels`` package that transformers imports."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# The README's Python API example, as a user runs it from the checkout: Python puts the current folder first
# on sys.path, so a top-level kernels/ package there would be imported instead of the real one.
LOAD_FROM_ROOT = """
import alphaq, kernels
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(str(alphaq.demo_model_path()))
print(kernels.__file__)
print(type(model).__name__)
"""


def test_kernels_folder_is_not_a_package() -> None:
    assert (REPO_ROOT / "kernels").is_dir()
    assert not (REPO_ROOT / "kernels" / "__init__.py").exists()
    assert (REPO_ROOT / "kernels" / "alphaq_kernels" / "__init__.py").is_file()


def test_transformers_loads_a_model_from_the_repository_root() -> None:
    # transformers 5.25 requires the real `kernels` package (huggingface/kernels); it must be installed here.
    assert importlib.metadata.version("kernels")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_FROM_ROOT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    kernels_file, model_class = result.stdout.split()[-2:]
    assert REPO_ROOT / "kernels" not in Path(kernels_file).resolve().parents
    assert model_class.endswith("ForCausalLM")
