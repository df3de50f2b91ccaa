"""Two-time correlation by tiles against the direct formula, and its known answer on speckle."""

from __future__ import annotations

import numpy as np
import pytest
from xpcs_speckle import speckle_frames

from reduction.xpcs.twotime import normalise_frames, twotime_tiles


def _assemble(x: np.ndarray, tile: int) -> np.ndarray:
    n = len(x)
    c = np.full((n, n), np.nan, dtype=np.float64)
    for i0, i1, j0, j1, block in twotime_tiles(x, tile):
        c[i0:i1, j0:j1] = block
    return c


def _direct(frames: np.ndarray, static: np.ndarray) -> np.ndarray:
    """boost-corr's formula, float64, the whole matrix at once."""
    x = frames.astype(np.float64)
    for s in np.unique(static):
        mean = x[:, static == s].mean(axis=1)
        mean[mean <= 0] = 1
        x[:, static == s] /= mean[:, None]
    norm = x.sum(axis=1)
    norm[norm <= 0] = 1
    return (x @ x.T) * x.shape[1] / np.outer(norm, norm)


@pytest.mark.parametrize("tile", [7, 64, 1000])
def test_tiles_match_the_direct_formula_on_the_upper_triangle(tile: int) -> None:
    rng = np.random.default_rng(2)
    frames = rng.poisson(rng.uniform(0.05, 2.0, 30), (150, 30)).astype(np.uint16)
    static = np.repeat(np.arange(3), 10)
    sums = np.stack([np.bincount(static, f, 3) for f in frames.astype(float)])
    x = normalise_frames(frames, static, sums, np.bincount(static).astype(float))
    c = _assemble(x, tile)
    ref = _direct(frames, static)
    upper = np.triu(np.ones_like(ref, dtype=bool))
    assert np.abs(c[upper] - ref[upper]).max() <= 1e-4
    assert np.isnan(c[~upper]).all()


def test_known_answer_of_a_speckle_series() -> None:
    """Off the diagonal, C averages to 1 + β·exp(−2τ/τc); far from it, to the baseline 1."""
    n, npix, tau_c, modes = 1500, 900, 8.0, 2
    frames = speckle_frames(np.full((npix,), 0.5), np.full((npix,), tau_c), n, modes, seed=5).reshape(n, npix)
    static = np.repeat(np.arange(3), npix // 3)
    sums = np.stack([np.bincount(static, f, 3) for f in frames.astype(float)])
    x = normalise_frames(frames, static, sums, np.bincount(static).astype(float))
    c = _assemble(x, 512)
    for lag in (1, 4, 8):
        mean = np.nanmean(np.diagonal(c, lag))
        assert abs(mean - (1 + np.exp(-2 * lag / tau_c) / modes)) <= 0.02, (lag, mean)
    far = np.concatenate([np.diagonal(c, lag) for lag in range(200, 600)])
    assert abs(far.mean() - 1) <= 2e-3
