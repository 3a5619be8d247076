"""The ``alphaq`` command line: one module per command group, options declared once (:mod:`alphaq.cli.common`).

* :mod:`alphaq.cli.app` builds the Typer application and registers every group;
* :mod:`alphaq.cli.stages`: ``inspect``, ``plan``, ``quantize``, ``run``;
* :mod:`alphaq.cli.evaluate`: ``eval``, ``compare``; :mod:`alphaq.cli.lmeval`: ``lmeval``;
* :mod:`alphaq.cli.export`: ``export``; :mod:`alphaq.cli.reports`: ``report``, ``gallery``;
* :mod:`alphaq.cli.reference`: the generated ``docs/cli.md``.
"""

from __future__ import annotations

from alphaq.cli.app import app

__all__ = ["app"]
