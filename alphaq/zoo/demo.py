"""The bundled demo MoE: where its checkpoint lives inside the package."""

from __future__ import annotations

from pathlib import Path

from alphaq.errors import CheckpointError

DEMO_MODEL_NAME = "demo-moe"


def demo_model_dir() -> Path:
    """Where the bundled demo checkpoint lives inside the package (it may be missing).

    Returns:
        ``alphaq/data/demo-moe``.
    """
    return Path(__file__).resolve().parents[1] / "data" / DEMO_MODEL_NAME


def demo_model_path() -> Path:
    """The bundled, trained demo MoE checkpoint folder (Mixtral layout, bf16 safetensors).

    Returns:
        The existing checkpoint directory.

    Raises:
        CheckpointError: when the bundled checkpoint is missing from the installation.
    """
    path = demo_model_dir()
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise CheckpointError(
            f"bundled demo model not found at {path}; reinstall alphaq or rebuild it with "
            "`python -m alphaq.zoo.train_demo`"
        )
    return path


__all__ = ["DEMO_MODEL_NAME", "demo_model_dir", "demo_model_path"]
