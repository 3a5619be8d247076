"""scipy's one-stage and LAPACK's two-stage symmetric eigenvalue drivers, and the fast (float32 Gram) route's
alphas against float64."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from alphaq.diagnostics.esd_metrics import esd_metrics
from alphaq.diagnostics.lapack import eigvalsh, two_stage_available
from alphaq.diagnostics.spectrum import stream_eigenvalues


def _heavy(rows: int, cols: int, dof: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_t(dof, size=(rows, cols)) / np.sqrt(cols)).astype(np.float32)


def test_two_stage_driver_is_found_and_matches_scipy_in_float64() -> None:
    assert two_stage_available()  # numpy's wheels bundle OpenBLAS with LAPACK 3.9+
    w = _heavy(300, 700, 3.0, seed=0).astype(np.float64)
    gram = w @ w.T  # [300, 300]
    ref = scipy.linalg.eigh(gram, eigvals_only=True, driver="evd")
    got = eigvalsh(gram, two_stage=True)
    assert got.dtype == np.float64 and np.all(np.diff(got) >= 0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * ref[-1])
    np.testing.assert_array_equal(eigvalsh(gram, two_stage=False), ref)  # the one-stage path is scipy's evd
    np.testing.assert_array_equal(
        eigvalsh(gram.astype(np.float32), two_stage=False),
        scipy.linalg.eigh(gram.astype(np.float32).astype(np.float64), eigvals_only=True, driver="evd"),
    )  # float32 is computed in float64
    np.testing.assert_allclose(ref, np.linalg.eigvalsh(gram), rtol=0, atol=1e-12 * ref[-1])


@pytest.mark.parametrize("two_stage", [False, True])
def test_nan_is_a_value_error_on_both_paths(two_stage: bool) -> None:
    gram = np.eye(4)
    gram[1, 1] = np.nan
    with pytest.raises(ValueError):
        eigvalsh(gram, two_stage=two_stage)
    assert np.isnan(gram[1, 1]) and gram[0, 0] == 1.0  # the input is never modified


@pytest.mark.parametrize("two_stage", [False, True])
def test_fast_route_alphas_match_float64_svd_within_1e4(monkeypatch, two_stage: bool) -> None:
    """float32 Gram + LAPACK (one- or two-stage) gives weightwatcher-fit alphas within 1e-4 relative of the
    float64 SVD route's (weightwatcher's) on heavy-tailed matrices of different tail exponents."""
    from alphaq.diagnostics import lapack

    monkeypatch.setattr(lapack, "TWO_STAGE_MIN", 1 if two_stage else 10**9)
    mats = [_heavy(256, 704, dof, seed=i) for i, dof in enumerate((2.5, 3.0, 3.5, 4.0))] + [_heavy(704, 200, 3.0, 7)]
    fast = dict(stream_eigenvalues(enumerate(mats), dtype="float32", workers=2))
    for i, w in enumerate(mats):
        ref = np.sort(scipy.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2)
        a_ref = esd_metrics(ref, method="ww", max_dim=max(w.shape)).alpha
        a_fast = esd_metrics(fast[i], method="ww", max_dim=max(w.shape)).alpha
        assert np.isfinite(a_ref) and 1.0 < a_ref < 20.0
        assert abs(a_fast - a_ref) / a_ref < 1e-4, (i, a_fast, a_ref)
