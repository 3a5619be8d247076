"""User-facing errors: one line that names the problem and the fix."""

from __future__ import annotations


class AlphaQError(Exception):
    """An error caused by the user's input (path, checkpoint, plan, option).

    The CLI prints ``str(error)`` on one line and exits with status 2; no traceback.
    """


class CheckpointError(AlphaQError):
    """The checkpoint directory or one of its files cannot be read."""


class ConfigError(AlphaQError):
    """An option or configuration value is invalid."""


class PlanError(AlphaQError):
    """A plan file is invalid or does not fit the checkpoint."""
