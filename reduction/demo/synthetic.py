"""Synthetic calibrant frames: powder rings of a known cubic crystal on any geometry.

The demo, the tests and the benchmarks need realistic detector frames whose ring positions are
known exactly, without reading beamline data and without pyFAI (production code never imports it:
pyFAI is the test oracle only). Two pure functions do it:

- :func:`calibrant_d_spacings` lists the lattice spacings of a standard cubic calibrant from its
  lattice constant and the reflection rule of its structure;
- :func:`calibrant_image` paints Gaussian Debye-Scherrer rings at 2θ = 2 asin(λ / 2d) on a
  2θ map (e.g. ``Geometry.twotheta()``), over a smooth background, with Poisson counting noise.

Example
-------
>>> import numpy as np
>>> from reduction.demo.synthetic import calibrant_d_spacings, calibrant_image
>>> d = calibrant_d_spacings("LaB6", n=3)
>>> np.round(d * 1e10, 4)                     # Å: (100), (110), (111)
array([4.1569, 2.9394, 2.4   ])
>>> tth = np.deg2rad(np.linspace(5.0, 30.0, 7)).reshape(1, 7)
>>> calibrant_image(tth, 1e-10, d, rng=0).dtype
dtype('int32')
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from reduction.errors import XReduceError

__all__ = ["CALIBRANTS", "calibrant_d_spacings", "calibrant_image"]

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
# Gaussian tails are cut at this many sigmas: beyond it a ring adds < 1.5e-8 of its height,
# and evaluating only the pixels near each ring keeps a 1-Mpixel frame at tens of milliseconds.
_CUTOFF_SIGMAS = 6.0

_Rule = Callable[[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]], NDArray[np.bool_]]


def _primitive(h: NDArray[np.int64], k: NDArray[np.int64], l: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Primitive cubic: every (hkl) reflects."""
    return np.ones(np.broadcast(h, k, l).shape, dtype=bool)


def _fcc(h: NDArray[np.int64], k: NDArray[np.int64], l: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Face-centred cubic: h, k, l all even or all odd (unmixed)."""
    return ((h % 2) == (k % 2)) & ((k % 2) == (l % 2))


def _diamond(h: NDArray[np.int64], k: NDArray[np.int64], l: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Diamond: fcc, and h + k + l not ≡ 2 (mod 4) (the second fcc sub-lattice cancels those)."""
    return _fcc(h, k, l) & ((h + k + l) % 4 != 2)


#: Cubic calibrants: name -> (lattice constant a in metres, reflection rule).
CALIBRANTS: dict[str, tuple[float, _Rule]] = {
    "LaB6": (4.15689e-10, _primitive),  # NIST SRM 660 family, primitive cubic
    "CeO2": (5.4111e-10, _fcc),  # fluorite structure: fcc rule
    "Si": (5.431e-10, _diamond),  # diamond structure
}


def calibrant_d_spacings(name: str, n: int = 30) -> NDArray[np.float64]:
    """Return the ``n`` largest lattice spacings of a cubic calibrant, in metres.

    For a cubic lattice d = a / sqrt(h² + k² + l²), so reflections sharing h² + k² + l² (e.g.
    (221) and (300)) lie on the same ring and are merged into one spacing.

    Parameters
    ----------
    name
        ``"LaB6"``, ``"CeO2"`` or ``"Si"`` (case-insensitive).
    n
        How many distinct spacings to return.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)``, float64, largest d (lowest angle ring) first.

    Raises
    ------
    XReduceError
        Unknown calibrant name or ``n < 1``.

    Example
    -------
    >>> np.round(calibrant_d_spacings("CeO2", n=2) * 1e10, 4)   # (111), (200) in Å
    array([3.1241, 2.7056])
    """
    known = {key.lower(): key for key in CALIBRANTS}
    if name.lower() not in known:
        raise XReduceError(f"unknown calibrant {name!r}: expected one of {sorted(CALIBRANTS)}")
    if n < 1:
        raise XReduceError(f"calibrant_d_spacings: n must be >= 1, got {n}")
    a, rule = CALIBRANTS[known[name.lower()]]

    # Enumerate h >= k >= l >= 0 up to hmax; every s = h²+k²+l² <= hmax² is then complete.
    # Double hmax until that complete range holds n distinct allowed values of s.
    hmax = 4
    while True:
        h, k, l = np.meshgrid(*(np.arange(hmax + 1),) * 3, indexing="ij")
        keep = (h >= k) & (k >= l) & rule(h, k, l)
        s = h[keep] ** 2 + k[keep] ** 2 + l[keep] ** 2
        s = np.unique(s[(s > 0) & (s <= hmax**2)])
        if s.size >= n:
            return a / np.sqrt(s[:n].astype(np.float64))
        hmax *= 2


def calibrant_image(
    twotheta: ArrayLike,
    wavelength: float,
    d_spacings: ArrayLike,
    *,
    peak_width: float = float(np.deg2rad(0.1)),
    intensity: float | ArrayLike = 1000.0,
    background: float = 10.0,
    rng: np.random.Generator | int | None = None,
    poisson: bool = True,
    dtype: DTypeLike = np.int32,
) -> np.ndarray:
    """Paint powder rings of the given d-spacings on a 2θ map, as a detector would count them.

    The expected count at a pixel of scattering angle 2θ is

        background · (1 + cos 2θ) / 2  +  Σ_k intensity_k · exp(-(2θ - 2θ_k)² / 2σ²)

    with 2θ_k = 2 asin(λ / 2d_k) and σ = peak_width / 2.355 (a Gaussian of that FWHM in 2θ).
    Reflections with λ / 2d > 1 cannot diffract and are skipped. The background is smooth and
    falls with angle, like air and amorphous scattering, so that integration must subtract nothing
    to find the rings. With ``poisson=True`` each pixel is drawn from a Poisson law of that mean,
    which is what photon-counting detectors (Pilatus, Eiger) record, and what the error model of
    the integrator assumes.

    Parameters
    ----------
    twotheta
        Scattering angle 2θ of each pixel, radians; any shape (``Geometry.twotheta()``).
    wavelength
        X-ray wavelength, metres.
    d_spacings
        Lattice spacings, metres (:func:`calibrant_d_spacings`).
    peak_width
        Ring FWHM in 2θ, radians (default 0.1°).
    intensity
        Peak height of the rings, counts: one value for all, or one per d-spacing.
    background
        Background level at 2θ = 0, counts.
    rng
        Random generator or seed, for reproducible noise (``numpy.random.default_rng``).
    poisson
        Draw Poisson counts (True) or return the expected value, rounded for integer dtypes.
    dtype
        Output dtype; integer types are clipped to their range (a saturated pixel).

    Returns
    -------
    numpy.ndarray
        The frame, with the shape of ``twotheta``.

    Raises
    ------
    XReduceError
        Non-positive wavelength or peak width, negative intensity/background, or an intensity
        array that does not match the d-spacings.
    """
    tth = np.asarray(twotheta, dtype=np.float64)
    d = np.atleast_1d(np.asarray(d_spacings, dtype=np.float64))
    heights = np.asarray(intensity, dtype=np.float64)
    if heights.ndim == 0:
        heights = np.full(d.shape, float(heights))
    if not wavelength > 0:
        raise XReduceError(f"calibrant_image: wavelength must be > 0 m, got {wavelength}")
    if not peak_width > 0:
        raise XReduceError(f"calibrant_image: peak_width must be > 0 rad, got {peak_width}")
    if heights.shape != d.shape:
        raise XReduceError(
            f"calibrant_image: intensity has shape {heights.shape}, d_spacings {d.shape}: "
            "give one intensity, or one per d-spacing"
        )
    if background < 0 or np.any(heights < 0):
        raise XReduceError("calibrant_image: intensity and background must be >= 0 counts")

    expected = background * 0.5 * (1.0 + np.cos(tth))
    sigma = peak_width * _FWHM_TO_SIGMA
    sin_theta = wavelength / (2.0 * d)
    flat_tth, flat_expected = tth.ravel(), expected.ravel()  # views: rings are added in place
    for s, height in zip(sin_theta, heights):
        if s > 1.0 or height == 0.0:
            continue  # no Bragg reflection possible at this wavelength
        centre = 2.0 * np.arcsin(s)
        near = np.flatnonzero(np.abs(flat_tth - centre) < _CUTOFF_SIGMAS * sigma)
        flat_expected[near] += height * np.exp(-0.5 * ((flat_tth[near] - centre) / sigma) ** 2)

    out_dtype = np.dtype(dtype)
    if poisson:
        frame = np.random.default_rng(rng).poisson(expected).astype(np.float64)
    else:
        frame = np.rint(expected) if out_dtype.kind in "iu" else expected
    if out_dtype.kind in "iu":
        info = np.iinfo(out_dtype)
        frame = np.clip(frame, info.min, info.max)
    return frame.astype(out_dtype, copy=False)
