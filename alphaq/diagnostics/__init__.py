"""Pure spectral diagnostics: eigenvalues, power-law fits and weightwatcher-style ESD metrics.

Submodules (import them directly; this package imports nothing heavy):

* :mod:`alphaq.diagnostics.spectrum`: ``eigenvalues``, ``farms_eigenvalues``;
* :mod:`alphaq.diagnostics.powerlaw_fit`: ``PowerLawFit``, ``fit_ww``, ``fit_hill``, ``fit_power_law``;
* :mod:`alphaq.diagnostics.esd_metrics`: ``ESDMetrics``, ``esd_metrics``;
* :mod:`alphaq.diagnostics.tail_compare`: ``TailComparison``, ``compare_power_law``.
"""

from __future__ import annotations
