"""Checkpoint reading: safetensors headers, the architecture pattern table, lazy per-matrix reads."""

from alphaq.load.architectures import ARCHITECTURES, ArchSpec, Role, TensorRule, spec_for
from alphaq.load.checkpoint import Checkpoint, MatrixRef, SkippedTensor, open_checkpoint

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "Checkpoint",
    "MatrixRef",
    "Role",
    "SkippedTensor",
    "TensorRule",
    "open_checkpoint",
    "spec_for",
]
