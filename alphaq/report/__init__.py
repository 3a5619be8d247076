"""HTML reports: one self-contained page per stage, rendered from a run folder's saved artifacts.

Submodules are imported lazily (matplotlib, seaborn and jinja2 load only when a page is rendered):

- :mod:`alphaq.report.page` — shared layout: :func:`render_page`, :class:`Section`, :func:`table_html`,
  :func:`figure_html`.
- :mod:`alphaq.report.figures` — the matplotlib/seaborn figures.
- :mod:`alphaq.report.inspect_page` — :func:`render_inspect`, :func:`load_inspect_run`.
- :mod:`alphaq.report.plan_page` — :func:`render_plan`, :func:`load_plan_run`.
- :func:`render_run` — every page whose artifacts a run folder holds.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Section": ("alphaq.report.page", "Section"),
    "render_page": ("alphaq.report.page", "render_page"),
    "write_page": ("alphaq.report.page", "write_page"),
    "table_html": ("alphaq.report.page", "table_html"),
    "figure_html": ("alphaq.report.page", "figure_html"),
    "provenance_from_manifest": ("alphaq.report.page", "provenance_from_manifest"),
    "InspectRun": ("alphaq.audit.artifacts", "InspectRun"),
    "Spectrum": ("alphaq.report.inspect_page", "Spectrum"),
    "load_inspect_run": ("alphaq.audit.artifacts", "load_inspect_run"),
    "render_inspect": ("alphaq.report.inspect_page", "render_inspect"),
    "PlanArtifacts": ("alphaq.report.plan_page", "PlanArtifacts"),
    "load_plan_run": ("alphaq.report.plan_page", "load_plan_run"),
    "render_plan": ("alphaq.report.plan_page", "render_plan"),
    "render_run": ("alphaq.report.run", "render_run"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'alphaq.report' has no attribute {name!r}")
