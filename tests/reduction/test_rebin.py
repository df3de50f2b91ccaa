"""Re-binning and frame sums from the accumulators (reduction.azint.rebin) against direct reductions.

What holds exactly is stated in reduction/azint/rebin.py; these tests measure it: merged bins equal
a reduction at the coarse grid, summed frames equal a reduction of the summed raw frame.
"""

from __future__ import annotations

import numpy as np
import pytest

from reduction import Integrator
from reduction.azint.rebin import Accumulators, coarse_edges, combine_frames, merge_bins, rebin
from reduction.demo.bliss_writer import demo_geometry, demo_mask
from reduction.errors import IntegrationError


@pytest.fixture(scope="module")
def setup():
    geo = demo_geometry("Pilatus100k")
    mask = demo_mask(geo)
    rng = np.random.default_rng(7)
    frames = rng.poisson(50, size=(3, *mask.shape)).astype(np.float64) + 1  # every pixel counts >= 1
    return Integrator(geo, mask, engine="numpy", cache_dir=False), frames


def acc_of(result) -> Accumulators:
    return Accumulators(result.signal, result.variance, result.normalization, result.count)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the largest value of b."""
    return float(np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(b)))


@pytest.mark.parametrize("splitting", ["no", "bbox", "full"])
def test_merged_bins_equal_the_reduction_at_the_coarse_grid_1d(setup, splitting) -> None:
    integ, frames = setup
    fine = integ.integrate1d(frames, npt=200, splitting=splitting, radial_range=(1.0, 30.0))
    coarse = integ.integrate1d(frames, npt=50, splitting=splitting, radial_range=(1.0, 30.0))
    merged = rebin(acc_of(fine), 4)
    np.testing.assert_array_equal(coarse_edges(fine.radial_edges, 4), coarse.radial_edges)
    for name in ("signal", "normalization", "count"):
        assert rel(getattr(merged, name), getattr(coarse, name)) < 1e-12, name
    intensity, sigma = merged.intensity()
    assert rel(intensity, coarse.intensity) < 1e-12
    if splitting == "no":  # a pixel lies wholly in one bin: the c² of the variance add up too
        assert rel(sigma, coarse.sigma) < 1e-12
    else:  # split pixels add c1² + c2² <= (c1 + c2)²: the merged sigma is lower, never higher
        both = np.isfinite(coarse.sigma)
        np.testing.assert_array_equal(np.isfinite(sigma), both)
        assert np.all(sigma[both] <= coarse.sigma[both] * (1 + 1e-12))
        assert np.median(sigma[both] / coarse.sigma[both]) > 0.9


@pytest.mark.parametrize("splitting", ["no", "bbox"])
def test_merged_bins_equal_the_reduction_at_the_coarse_grid_2d(setup, splitting) -> None:
    integ, frames = setup
    kw = dict(unit="2th_deg", splitting=splitting, radial_range=(1.0, 20.0))
    fine = integ.integrate2d(frames, npt_rad=120, npt_azim=36, **kw)
    coarse = integ.integrate2d(frames, npt_rad=40, npt_azim=12, **kw)
    merged = rebin(acc_of(fine), 3, 3)
    for name in ("signal", "normalization", "count"):
        assert rel(getattr(merged, name), getattr(coarse, name)) < 1e-12, name
    assert rel(merged.intensity()[0], coarse.intensity) < 1e-12


def test_2d_full_splitting_is_close_not_exact(setup) -> None:
    """Documented: 2-D full splitting is not an exact partition of a pixel's area."""
    integ, frames = setup
    kw = dict(unit="2th_deg", splitting="full", radial_range=(1.0, 20.0))
    fine = integ.integrate2d(frames, npt_rad=120, npt_azim=36, **kw)
    coarse = integ.integrate2d(frames, npt_rad=40, npt_azim=12, **kw)
    deviation = rel(rebin(acc_of(fine), 3, 3).signal, coarse.signal)
    assert 1e-12 < deviation < 1e-3


@pytest.mark.parametrize("monitor", [False, True])
def test_summed_frames_equal_the_reduction_of_the_summed_frame(setup, monitor) -> None:
    integ, frames = setup
    n = len(frames)
    dark = np.full(frames.shape[1:], 2.0)
    flat = np.random.default_rng(1).uniform(0.9, 1.1, frames.shape[1:])
    mon = np.array([1.0, 1.3, 0.8]) if monitor else None
    kw = dict(npt=100, splitting="bbox", flat=flat, radial_range=(1.0, 30.0))
    each = integ.integrate1d(frames, dark=dark, normalization=mon, **kw)
    summed, used = combine_frames(acc_of(each), mean=False, monitor_applied=monitor)
    assert used == n
    direct = integ.integrate1d(frames.sum(axis=0), dark=n * dark, normalization=mon.sum() if monitor else None, **kw)
    for name in ("signal", "variance", "normalization"):
        assert rel(getattr(summed, name)[0], getattr(direct, name)) < 1e-12, name
    intensity, sigma = summed.intensity()
    assert rel(intensity[0], direct.intensity) < 1e-12 and rel(sigma[0], direct.sigma) < 1e-12

    mean, _ = combine_frames(acc_of(each), mean=True, monitor_applied=monitor)
    direct = integ.integrate1d(frames.mean(axis=0), dark=dark, normalization=mon.mean() if monitor else None, **kw)
    intensity, sigma = mean.intensity()
    assert rel(intensity[0], direct.intensity) < 1e-12
    # the standard error of the mean of n frames, not the error of one exposure of the mean frame
    assert rel(sigma[0], direct.sigma / np.sqrt(n)) < 1e-12


def test_missing_frames_are_left_out(setup) -> None:
    integ, frames = setup
    res = integ.integrate1d(frames, npt=100, radial_range=(1.0, 30.0))
    acc = acc_of(res)
    holed = acc.map(lambda a: np.concatenate([a[:1], np.full_like(a[:1], np.nan), a[1:]]))
    with_hole, n = combine_frames(holed, mean=True, monitor_applied=False)
    without, m = combine_frames(acc, mean=True, monitor_applied=False)
    assert (n, m) == (3, 3)
    np.testing.assert_allclose(with_hole.intensity()[0], without.intensity()[0], rtol=1e-14)


def test_a_factor_that_does_not_divide_the_bins_is_refused() -> None:
    with pytest.raises(IntegrationError, match="factor 3 does not divide the 200 bins.*factors that do: 2, 4, 5"):
        merge_bins(np.ones((2, 200)), 3, -1)
    with pytest.raises(IntegrationError, match="positive integer"):
        merge_bins(np.ones((2, 200)), 0, -1)
