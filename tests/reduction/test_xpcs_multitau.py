"""The streaming multi-tau correlator against a direct float64 implementation, the delay convention,
the memory bound, and the known answer of a synthetic speckle series (tests/xpcs_speckle.py)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from xpcs_speckle import direct_g2, fit_g2, g2_model, speckle_frames

from reduction.xpcs.multitau import MultiTau, delays, normalise, state_bytes


def test_delays_follow_boost_corr_convention() -> None:
    d, lv = delays(1000)
    assert d[:8].tolist() == list(range(1, 9)) and (lv[:8] == 0).all()
    rest = d[8:]
    for level in range(1, lv.max() + 1):
        at = rest[lv[8:] == level]
        assert at.tolist() == [x * 2**level for x in range(5, 9)][:len(at)]
    # a delay is kept while it is below the frames filling whole bins of its level
    assert d[-1] == 768 and (d < (1000 // 2**lv) * 2**lv).all()
    assert delays(1000, dpl=2)[0].tolist()[:8] == [1, 2, 3, 4, 6, 8, 12, 16]
    assert delays(9)[0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("block", [1, 7, 64, 517])
def test_streaming_matches_the_direct_computation(block: int) -> None:
    rng = np.random.default_rng(3)
    N, P = 517, 40
    frames = rng.poisson(rng.uniform(0.1, 5.0, P), (N, P)).astype(np.uint16)
    static = np.repeat(np.arange(8), 5)
    static_to_dynamic = np.repeat(np.arange(4), 2)
    mt = MultiTau(static, 8, N)
    for b in range(0, N, block):
        mt.add(frames[b:b + block])
    sums = mt.result()
    got = normalise(sums, static_to_dynamic, 4)
    g2, err = direct_g2(frames, static, static_to_dynamic, 4)
    np.testing.assert_array_equal(got.delay, delays(N)[0])
    assert np.abs(got.g2 - g2).max() <= 1e-6
    assert np.abs(got.g2_err - err).max() <= 1e-6
    np.testing.assert_array_equal(sums.intensity, [np.bincount(static, f, 8) for f in frames.astype(float)])
    np.testing.assert_array_equal(sums.frame_sum, frames.sum(axis=0))


def test_sums_of_two_halves_of_a_partition_add_up() -> None:
    """The sums are additive over pixels: static bins split between two correlators merge exactly."""
    rng = np.random.default_rng(4)
    frames = rng.poisson(2.0, (200, 12)).astype(np.int32)
    static = np.repeat(np.arange(4), 3)
    whole = MultiTau(static, 4, 200)
    whole.add(frames)
    a, b = MultiTau(static[:6], 4, 200), MultiTau(static[6:], 4, 200)
    a.add(frames[:, :6])
    b.add(frames[:, 6:])
    w, ra, rb = whole.result(), a.result(), b.result()
    for name in ("G2", "IP", "IF", "pixels", "g2_pix", "g2_pix2"):
        np.testing.assert_allclose(getattr(ra, name) + getattr(rb, name), getattr(w, name), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "bool"])
def test_integer_frames_give_the_sums_of_their_float64_copy(dtype: str) -> None:
    """Integer frames are summed per static bin as integers (pixels grouped by bin, an empty bin, bins
    in no order): every sum, g2 and error equals that of the same frames given as float64."""
    rng = np.random.default_rng(5)
    static = rng.permutation(np.repeat([3, 0, 2, 4], [7, 40, 13, 21]))  # bin 1 empty, bins mixed
    frames = rng.poisson(0.7 if dtype == "bool" else 3.0, (300, len(static))).clip(0, 1 if dtype == "bool" else None)
    results = []
    for series in (frames.astype(dtype), frames.astype(np.float64)):
        mt = MultiTau(static, 5, len(series))
        for b in range(0, len(series), 37):
            mt.add(series[b:b + 37])
        results.append(mt.result())
    for name in ("G2", "IP", "IF", "g2_pix", "g2_pix2", "intensity", "frame_sum"):
        np.testing.assert_array_equal(getattr(results[0], name), getattr(results[1], name), err_msg=name)
    assert results[0].intensity[:, 1].sum() == 0 and results[0].intensity.sum() == frames.sum()


def test_memory_does_not_grow_with_the_number_of_frames() -> None:
    P, block = 4096, 64
    static = np.arange(P) % 16
    peaks = {}
    for N in (1024, 8192):
        frames = np.ones((block, P), dtype=np.uint16)
        tracemalloc.start()
        mt = MultiTau(static, 16, N)
        for _ in range(N // block):
            mt.add(frames)
        mt.result()
        peaks[N] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        trace = 8 * N * 16 * 2  # the intensity trace (an output, N·S) and its concatenation
        assert peaks[N] <= state_bytes(P, N, block=block) + trace + (1 << 20), (N, peaks[N])
    # 8× the frames: the state grows by the delays of three more levels, far from 8×
    assert peaks[8192] < 1.6 * peaks[1024]
    assert peaks[8192] < 0.1 * 8192 * P * 8


def _speckle_partition(ny: int = 48, nx: int = 48, n_dynamic: int = 4, per_dynamic: int = 3):
    yy, xx = np.mgrid[:ny, :nx]
    r = np.hypot(yy - ny / 2 + 0.5, xx - nx / 2 + 0.5)
    edges = np.linspace(4, min(ny, nx) / 2, n_dynamic + 1)
    dyn = np.digitize(r, edges) - 1
    dyn[(r < edges[0]) | (r >= edges[-1])] = -1
    width = edges[1] - edges[0]
    sub = np.clip(((r - edges[np.clip(dyn, 0, n_dynamic - 1)]) / width * per_dynamic).astype(int), 0, per_dynamic - 1)
    static = np.where(dyn >= 0, dyn * per_dynamic + sub, -1)
    return dyn, static, (edges[:-1] + edges[1:]) / 2


def test_known_answer_of_a_speckle_series() -> None:
    """g2 = 1 + β·exp(−2τ/τc)·F_L with τc = τ0/q² per ring, β = 1/M: fitted within the issue's bounds."""
    n_dynamic, per, modes, N = 4, 3, 2, 4000
    dyn, static, q = _speckle_partition(n_dynamic=n_dynamic, per_dynamic=per)
    tau_q = 4.0 * (q[0] / q) ** 2 * 10
    means = np.linspace(0.05, 1.0, n_dynamic * per)  # photons/pixel/frame per static sub-ring
    frames = speckle_frames(np.where(static >= 0, means[static], 0.1),
                            np.where(dyn >= 0, tau_q[np.clip(dyn, 0, None)], 10.0), N, modes, seed=1)
    inside = static.ravel() >= 0
    mt = MultiTau(static.ravel()[inside], n_dynamic * per, N)
    series = frames.reshape(N, -1)[:, inside]
    for b in range(0, N, 100):
        mt.add(series[b:b + 100])
    sums = mt.result()
    g = normalise(sums, np.repeat(np.arange(n_dynamic), per), n_dynamic)
    for d in range(n_dynamic):
        baseline, beta, tau_c = fit_g2(sums.delay, sums.level, g.g2[:, d], g.g2_err[:, d], tau_q[d])
        assert abs(tau_c / tau_q[d] - 1) <= 0.05, (d, tau_c, tau_q[d])
        assert abs(beta - 1 / modes) <= 0.01, (d, beta)
        assert abs(baseline - 1) <= 1e-3, (d, baseline)
        truth = g2_model(sums.delay, sums.level, 1.0, 1 / modes, tau_q[d])
        enough = sums.products >= 16
        z = np.abs(g.g2[enough, d] - truth[enough]) / g.g2_err[enough, d]
        assert (z <= 5).all(), (d, z.max())
