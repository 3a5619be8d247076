"""Eigenvalues of W^T W (Gram and SVD routes) against scipy's float64 SVD, batching, FARMS."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from alphaq.diagnostics.spectrum import eigenvalues, farms_eigenvalues


def _scipy_evals(w: torch.Tensor) -> np.ndarray:
    return np.sort(scipy.linalg.svd(w.double().numpy(), compute_uv=False) ** 2)


def _heavy(rows: int, cols: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_t(3.0, size=(rows, cols)).astype(np.float32))


@pytest.mark.parametrize("shape", [(96, 260), (260, 96), (128, 128)])
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_float64_matches_scipy_svd(shape: tuple[int, int], method: str) -> None:
    w = _heavy(*shape, seed=sum(shape))
    ref = _scipy_evals(w)
    got = eigenvalues(w, dtype=torch.float64, method=method)
    assert got.dtype == np.float64 and got.shape == (min(shape),)
    assert np.all(np.diff(got) >= 0)
    bulk = ref > 1e-7 * ref[-1]
    assert bulk.sum() >= 0.9 * ref.size
    assert np.max(np.abs(got[bulk] - ref[bulk]) / ref[bulk]) < 1e-9
    assert np.all(got >= 0)


def test_float32_is_close_to_float64() -> None:
    w = _heavy(200, 500, seed=1)
    ref = _scipy_evals(w)
    got = eigenvalues(w, dtype=torch.float32)
    bulk = ref > 1e-3 * ref[-1]
    assert np.max(np.abs(got[bulk] - ref[bulk]) / ref[bulk]) < 1e-4


def test_default_dtype_is_float32_and_bfloat16_input_works() -> None:
    w = _heavy(64, 100, seed=2)
    assert np.array_equal(eigenvalues(w), eigenvalues(w, dtype=torch.float32))
    from_bf16 = eigenvalues(w.to(torch.bfloat16), dtype=torch.float64)
    assert np.allclose(from_bf16, _scipy_evals(w.to(torch.bfloat16).float()), rtol=1e-9, atol=1e-9 * from_bf16[-1])


def test_batched_equals_one_by_one() -> None:
    stack = torch.stack([_heavy(48, 120, seed=s) for s in range(3)])  # [B, M, N]
    batched = eigenvalues(stack, dtype=torch.float64)
    assert batched.shape == (3, 48)
    for b in range(3):
        np.testing.assert_allclose(batched[b], eigenvalues(stack[b], dtype=torch.float64), rtol=1e-12, atol=1e-9)


def test_invalid_inputs_raise() -> None:
    w = torch.ones(10, 12)
    w[3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        eigenvalues(w)
    with pytest.raises(ValueError):
        eigenvalues(torch.ones(10))
    with pytest.raises(ValueError):
        eigenvalues(torch.ones(4, 4), dtype=torch.float16)
    with pytest.raises(ValueError):
        eigenvalues(torch.ones(4, 4), method="qr")  # type: ignore[arg-type]


def test_farms_is_deterministic_and_samples_blocks() -> None:
    w = _heavy(256, 384, seed=3)  # a 2 x 3 grid of 128-blocks
    first = farms_eigenvalues(w, max_blocks=4, seed=0)
    assert np.array_equal(first, farms_eigenvalues(w, max_blocks=4, seed=0))
    assert first.shape == (4 * 128,) and first.dtype == np.float64
    assert np.all(np.diff(first) >= 0)
    others = {farms_eigenvalues(w, max_blocks=4, seed=s).tobytes() for s in range(1, 6)}
    assert len(others | {first.tobytes()}) > 1  # other seeds draw other blocks

    # the pooled spectrum is exactly the blocks' squared singular values (raw, no normalisation)
    blocks = [w[r * 128 : (r + 1) * 128, c * 128 : (c + 1) * 128] for r in range(2) for c in range(3)]
    chosen = np.sort(np.random.Generator(np.random.PCG64(0)).choice(6, size=4, replace=False))
    expected = np.sort(np.concatenate([torch.linalg.svdvals(blocks[i]).square().double().numpy() for i in chosen]))
    np.testing.assert_allclose(first, expected, rtol=1e-5)


def test_farms_uses_every_block_when_few_and_falls_back_when_small() -> None:
    w = _heavy(256, 300, seed=4)  # 2 x 2 blocks, a 44-column strip dropped
    pooled = farms_eigenvalues(w, max_blocks=256)
    assert pooled.shape == (4 * 128,)
    small = _heavy(64, 200, seed=5)  # smaller than a block: whole-matrix eigenvalues
    np.testing.assert_allclose(farms_eigenvalues(small), _scipy_evals(small), rtol=1e-4)
    with pytest.raises(ValueError):
        farms_eigenvalues(w, block=0)


@pytest.mark.parametrize("method", ["gram", "svd"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_raise_for_every_route(method: str, bad: float) -> None:
    for shape in ((10, 20), (20, 10), (3, 10, 20)):
        w = torch.randn(*shape)
        w.view(-1)[7] = bad
        for dtype in (torch.float32, torch.float64):
            with pytest.raises(ValueError, match="NaN or Inf"):
                eigenvalues(w, dtype=dtype, method=method)


def test_float32_overflow_is_computed_again_in_float64() -> None:
    w = torch.full((4, 6), 1e30)  # the float32 Gram overflows; float64 holds 6e60 per entry
    assert eigenvalues(w)[-1] == pytest.approx(24 * 1e60, rel=1e-6)
    assert eigenvalues(w.numpy())[-1] == pytest.approx(24 * 1e60, rel=1e-6)
    assert eigenvalues(w, dtype=torch.float64)[-1] == pytest.approx(24 * 1e60, rel=1e-6)


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_torch_route_used_off_cpu_matches_numpy_route(method: str) -> None:
    from alphaq.diagnostics.spectrum import _torch_eigenvalues

    stack = torch.stack([_heavy(40, 90, seed=7), _heavy(40, 90, seed=8)]).double()  # [B, M, N]
    got = np.sort(_torch_eigenvalues(stack, method, wide=True), axis=-1)
    np.testing.assert_allclose(got, eigenvalues(stack, dtype=torch.float64, method=method), rtol=1e-10, atol=1e-10)
    tall = stack.mT.contiguous()  # [B, N, M]
    got_tall = np.sort(_torch_eigenvalues(tall, method, wide=False), axis=-1)
    np.testing.assert_allclose(got_tall, got, rtol=1e-10, atol=1e-10)


def test_numpy_input_equals_torch_input_and_stream_keeps_order() -> None:
    from alphaq.diagnostics.spectrum import count_nonfinite, stream_eigenvalues

    mats = [_heavy(40, 90, seed=s).numpy() for s in range(4)] + [_heavy(90, 40, seed=9).numpy()]
    for dtype in (torch.float32, torch.float64):
        for m in mats:
            np.testing.assert_array_equal(eigenvalues(m, dtype=dtype), eigenvalues(torch.from_numpy(m), dtype=dtype))
    items = [("a", mats[0]), ("skip", None), ("b", mats[4]), ("c", mats[1]), ("d", mats[2])]
    for workers in (1, 2, 3):
        out = list(stream_eigenvalues(iter(items), dtype="float64", workers=workers))
        assert [k for k, _ in out] == ["a", "skip", "b", "c", "d"] and out[1][1] is None
        for (_, m), (_, got) in zip(items, out):
            if m is not None:
                np.testing.assert_allclose(got, eigenvalues(m, dtype=torch.float64), rtol=1e-12, atol=1e-9)
    bad = mats[0].copy()
    bad[1, 2], bad[3, 4] = np.nan, np.inf
    assert count_nonfinite(mats[0]) == 0 and count_nonfinite(bad) == 2
    assert count_nonfinite(np.full((4, 4), 3e38, dtype=np.float32)) == 0  # the sum overflows, the values do not
    with pytest.raises(ValueError, match="NaN"):
        list(stream_eigenvalues([("x", bad)], workers=2))


def test_stream_goes_on_past_a_slow_matrix_and_keeps_order() -> None:
    """A large matrix at the head of the stream does not idle the other workers: the matrices behind it are
    read and computed meanwhile (more than ``workers + 1`` items pulled before its result comes back, which was
    the old bound), and the results still come back in input order with at most ``workers + 1`` in flight."""
    from alphaq.diagnostics.spectrum import stream_eigenvalues

    rng = np.random.default_rng(0)
    big = rng.standard_normal((700, 1400)).astype(np.float32)  # ~0.1 s of Gram + eigenvalues
    small = [rng.standard_normal((6, 9)).astype(np.float32) for _ in range(10)]
    pulled: list[int] = []

    def items():
        for index, matrix in enumerate([big, *small]):
            pulled.append(index)
            yield index, matrix

    stream = stream_eigenvalues(items(), dtype="float64", workers=2)
    first_key, first = next(stream)
    assert first_key == 0 and first.shape == (700,)
    assert len(pulled) > 3  # workers + 1 = 3 was the old bound
    rest = list(stream)
    assert [key for key, _ in rest] == list(range(1, 11))
    for (_, got), matrix in zip(rest, small):
        np.testing.assert_allclose(got, eigenvalues(matrix, dtype=torch.float64), rtol=1e-12, atol=1e-12)
