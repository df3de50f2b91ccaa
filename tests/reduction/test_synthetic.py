"""Synthetic calibrant frames: known crystallography, rings where Bragg's law puts them, and
reproducible noise. The ring-position test builds its own flat-detector geometry with numpy, so
it checks :mod:`reduction.demo.synthetic` independently of :mod:`reduction.azint.geometry`."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks

from reduction.demo.synthetic import calibrant_d_spacings, calibrant_image
from reduction.errors import XReduceError

ANGSTROM = 1e-10


# ---------------------------------------------------------------- d-spacings


@pytest.mark.parametrize(
    ("name", "expected_angstrom"),
    [
        ("LaB6", [4.15689, 2.9394, 2.4000]),  # (100), (110), (111)
        ("CeO2", [3.1241, 2.7056, 1.9131]),  # (111), (200), (220)
        ("Si", [3.1356, 1.9201, 1.6375, 1.3578]),  # (111), (220), (311), (400): (200), (222) absent
    ],
)
def test_first_d_spacings(name: str, expected_angstrom: list[float]) -> None:
    d = calibrant_d_spacings(name, n=len(expected_angstrom))
    np.testing.assert_allclose(d / ANGSTROM, expected_angstrom, rtol=2e-4)


@pytest.mark.parametrize("name", ["LaB6", "CeO2", "Si"])
@pytest.mark.parametrize("n", [1, 30, 100])
def test_d_spacings_sorted_unique_in_metres(name: str, n: int) -> None:
    d = calibrant_d_spacings(name, n=n)
    assert d.shape == (n,) and d.dtype == np.float64
    assert np.all(np.diff(d) < 0), "largest first, duplicates (same h²+k²+l²) merged"
    assert 1e-11 < d.min() and d.max() < 1e-9


def test_lab6_merges_221_and_300() -> None:
    # (221) and (300) share h²+k²+l² = 9: one ring; 7 is not a sum of three squares: no ring
    d = calibrant_d_spacings("LaB6", n=9)
    s = np.rint((4.15689e-10 / d) ** 2).astype(int)
    np.testing.assert_array_equal(s, [1, 2, 3, 4, 5, 6, 8, 9, 10])


def test_name_is_case_insensitive() -> None:
    np.testing.assert_array_equal(calibrant_d_spacings("lab6", 5), calibrant_d_spacings("LaB6", 5))


def test_unknown_calibrant_is_named() -> None:
    with pytest.raises(XReduceError, match="'Al2O3'.*LaB6"):
        calibrant_d_spacings("Al2O3")
    with pytest.raises(XReduceError, match="n must be"):
        calibrant_d_spacings("Si", n=0)


# ---------------------------------------------------------------- images

# A flat detector normal to the beam, the PONI at its centre: r = L tan 2θ.
DIST = 0.1  # m
PIXEL = 100e-6  # m
SHAPE = (1000, 1000)
CENTRE = (499.5, 499.5)  # pixel coordinates of the beam (between the 4 central pixels)
WAVELENGTH = 0.7e-10  # m


def _flat_detector() -> tuple[np.ndarray, np.ndarray]:
    """(radius in pixels, 2θ in radians) at the pixel centres."""
    y, x = np.indices(SHAPE, dtype=np.float64)
    r_pix = np.hypot(y - CENTRE[0], x - CENTRE[1])
    return r_pix, np.arctan(r_pix * PIXEL / DIST)


def test_rings_land_at_bragg_angle_within_a_pixel() -> None:
    r_pix, tth = _flat_detector()
    d = calibrant_d_spacings("LaB6", n=10)
    image = calibrant_image(tth, WAVELENGTH, d, background=0.0, poisson=False, dtype=np.float64)

    # Radial profile in quarter-pixel bins, peaks located independently of the expected positions.
    step = 0.25
    bins = (r_pix / step).astype(int)
    profile = np.bincount(bins.ravel(), image.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    max_r = min(CENTRE) - 5  # full circles only
    peaks, _ = find_peaks(profile[: int(max_r / step)], height=500.0)
    found = (peaks + 0.5) * step

    expected = DIST * np.tan(2 * np.arcsin(WAVELENGTH / (2 * d))) / PIXEL
    expected = expected[expected < max_r]
    assert len(expected) >= 5
    assert len(found) == len(expected)
    np.testing.assert_allclose(found, expected, atol=1.0)


def test_peak_height_width_and_background() -> None:
    tth0 = 2 * np.arcsin(1e-10 / (2 * 2.9394e-10))
    width = np.deg2rad(0.2)
    tth = tth0 + np.array([-width / 2, 0.0, width / 2, 1.0])  # half maximum, top, far away
    image = calibrant_image(
        tth, 1e-10, [2.9394e-10], peak_width=width, intensity=800.0, background=0.0,
        poisson=False, dtype=np.float64,
    )
    np.testing.assert_allclose(image, [400.0, 800.0, 400.0, 0.0], atol=1e-6)

    flat = calibrant_image(np.zeros(3), 1e-10, [], background=10.0, poisson=False, dtype=np.float64)
    np.testing.assert_allclose(flat, 10.0)  # background level at 2θ = 0


def test_one_intensity_per_ring() -> None:
    d = calibrant_d_spacings("CeO2", 2)
    tth = 2 * np.arcsin(1e-10 / (2 * d))
    image = calibrant_image(tth, 1e-10, d, intensity=[100.0, 300.0], background=0.0, poisson=False,
                            dtype=np.float64)
    np.testing.assert_allclose(image, [100.0, 300.0], rtol=1e-6)
    with pytest.raises(XReduceError, match="one per d-spacing"):
        calibrant_image(tth, 1e-10, d, intensity=[1.0, 2.0, 3.0])


def test_unreachable_reflections_are_skipped() -> None:
    # λ / 2d > 1: no Bragg angle exists, only the background remains
    tth = np.linspace(0.0, np.pi / 2, 50)
    image = calibrant_image(tth, 1e-10, [0.4e-10], background=5.0, poisson=False, dtype=np.float64)
    np.testing.assert_allclose(image, 5.0 * 0.5 * (1 + np.cos(tth)))


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.uint32])
def test_integer_dtype_and_shape(dtype: type) -> None:
    _, tth = _flat_detector()
    image = calibrant_image(tth[:200, :300], WAVELENGTH, calibrant_d_spacings("Si"), rng=1, dtype=dtype)
    assert image.dtype == dtype and image.shape == (200, 300)
    assert image.min() >= 0 and image.max() > 0


def test_integer_dtype_saturates() -> None:
    image = calibrant_image(np.zeros(4), 1e-10, [], background=1e6, poisson=False, dtype=np.uint16)
    np.testing.assert_array_equal(image, np.iinfo(np.uint16).max)


def test_seed_reproducibility() -> None:
    _, tth = _flat_detector()
    tth = tth[:100, :100]
    d = calibrant_d_spacings("LaB6")
    a = calibrant_image(tth, WAVELENGTH, d, rng=42)
    b = calibrant_image(tth, WAVELENGTH, d, rng=42)
    c = calibrant_image(tth, WAVELENGTH, d, rng=np.random.default_rng(42))
    other = calibrant_image(tth, WAVELENGTH, d, rng=43)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # a seed and a generator seeded alike give the same frame
    assert not np.array_equal(a, other)


def test_poisson_noise_has_poisson_statistics() -> None:
    _, tth = _flat_detector()
    d = calibrant_d_spacings("LaB6")
    mean = calibrant_image(tth, WAVELENGTH, d, poisson=False, dtype=np.float64)
    noisy = calibrant_image(tth, WAVELENGTH, d, rng=0)
    # total counts agree within 5 sigma; normalised residuals have unit variance
    assert abs(noisy.sum() - mean.sum()) < 5 * np.sqrt(mean.sum())
    z = (noisy - mean) / np.sqrt(mean)
    assert z.std() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"wavelength": 0.0}, "wavelength"),
        ({"peak_width": -1.0}, "peak_width"),
        ({"background": -1.0}, ">= 0"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    args = {"wavelength": 1e-10, **kwargs}
    wavelength = args.pop("wavelength")
    with pytest.raises(XReduceError, match=match):
        calibrant_image(np.zeros(3), wavelength, [3e-10], **args)
