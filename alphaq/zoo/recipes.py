"""Named training recipes of the zoo and where their checkpoints live.

* ``demo-moe``: the bundled Mixtral-layout model (``alphaq/data/demo-moe``, in the wheel).
* ``qwen2moe-16e``: a second layout for the GGUF study: Qwen2-MoE with a gated shared expert, 6 layers,
  16 routed experts (top-4) of width 256, shared expert 512, hidden 256. At ~48 MB of bf16 it is over the
  wheel's 30 MB limit, so it is a cached bench fixture: ``python -m alphaq.zoo.train_demo --recipe
  qwen2moe-16e`` writes it to :func:`zoo_dir` (``$ALPHAQ_ZOO_DIR`` or ``~/.cache/alphaq/zoo``). It trains with tied
  embeddings and is saved with an untied output head (a copy of the embedding, the same function): llama.cpp's
  ``qwen2moe`` loader requires an ``output.weight`` tensor, and real Qwen-MoE checkpoints are untied too.
"""

from __future__ import annotations

import os
from pathlib import Path

from alphaq.errors import CheckpointError, ConfigError

SECOND_MODEL = "qwen2moe-16e"

#: recipe name -> field overrides of :class:`alphaq.zoo.train_demo.DemoTrainConfig`.
RECIPES: dict[str, dict[str, object]] = {
    "demo-moe": {},
    SECOND_MODEL: {
        "architecture": "qwen2_moe",
        "num_layers": 6,
        "num_experts": 16,
        "top_k": 4,
        "intermediate_size": 256,
        "shared_expert_size": 512,
        "max_steps": 550,
        "max_minutes": 58.0,
        "log_file": "/tmp/alphaq-qwen2moe-16e-train.jsonl",
    },
}


def zoo_dir() -> Path:
    """Folder of the cached zoo checkpoints (``$ALPHAQ_ZOO_DIR`` or ``~/.cache/alphaq/zoo``)."""
    return Path(os.environ.get("ALPHAQ_ZOO_DIR") or Path.home() / ".cache" / "alphaq" / "zoo")


def recipe_overrides(name: str) -> dict[str, object]:
    """The config overrides of one recipe, with its default output folder.

    Raises:
        ConfigError: the recipe is unknown.
    """
    if name not in RECIPES:
        raise ConfigError(f"recipe {name!r} is unknown; pass one of {', '.join(RECIPES)}")
    overrides = {**RECIPES[name], "recipe": name}
    if name != "demo-moe":
        overrides.setdefault("out_dir", str(zoo_dir() / name))
    return overrides


def zoo_model_path(name: str = SECOND_MODEL) -> Path:
    """The trained checkpoint of a cached zoo recipe.

    Raises:
        CheckpointError: it has not been trained on this machine (names the command that trains it).
    """
    recipe_overrides(name)
    path = zoo_dir() / name
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise CheckpointError(
            f"zoo model {name} not found at {path}; train it with `python -m alphaq.zoo.train_demo --recipe {name}`"
        )
    return path


__all__ = ["RECIPES", "SECOND_MODEL", "recipe_overrides", "zoo_dir", "zoo_model_path"]
