"""Pixel-splitting matrices (``reduction.azint.splitting``) agree with pyFAI's CSR engines.

The positions fed to :func:`build_matrix` are pyFAI's own centre/corner arrays, so the
comparison isolates the splitting: the matrices must equal pyFAI's ``HistoBBox1d/2d``
(splitting "no", "bbox") and ``FullSplitCSR_1d/2d`` ("full") matrices weight by weight
(pyFAI stores float32 weights: agreement is asserted to 1e-6 absolute), and ``W @ frame`` /
``W @ valid`` must reproduce ``integrate1d_ng/integrate2d_ng(method=(split, "csr", "cython"))``
``sum_signal`` / ``count``.

One pyFAI defect is excluded from the comparison: ``FullSplitCSR_2d`` starts from an
uninitialised (``numpy.empty``) float buffer, so the *first* pixel it processes gets garbage
weights; that single column is skipped for 2-D full splitting.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import pytest
import scipy.sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reduction.azint.splitting import (
    EPS32,
    Bins,
    PixelPositions,
    auto_range,
    build_matrix,
    pixel_delta,
    pyfai_range,
    upper_bound,
)
from reduction.errors import IntegrationError

pyFAI = pytest.importorskip("pyFAI")
import pyFAI.units as pfu  # noqa: E402
from pyFAI.detectors import Detector as PyFAIDetector  # noqa: E402
from pyFAI.detectors import detector_factory  # noqa: E402
from pyFAI.integrator.azimuthal import AzimuthalIntegrator  # noqa: E402

logging.getLogger("pyFAI").setLevel(logging.ERROR)

ATOL = 1e-6
SPLITS = ["no", "bbox", "full"]
UNITS = ["2th_rad", "q_nm^-1", "r_m"]          # internal units: scale 1 in pyFAI
SHAPE = (100, 120)
GEOMETRIES = {
    # beam centre on the detector: the χ = ±π discontinuity runs across it
    "centred": dict(dist=0.05, poni1=0.005, poni2=0.006),
    "tilted": dict(dist=0.05, poni1=0.004, poni2=0.007, rot1=0.3, rot2=-0.3, rot3=0.3),
    # beam centre off the detector, strong tilts
    "off": dict(dist=0.03, poni1=-0.002, poni2=0.004, rot1=-0.3, rot2=0.2, rot3=-0.3),
    # short distance, PONI inside a pixel: large pixels in angle, one spans all χ
    "close": dict(dist=0.02, poni1=0.00513, poni2=0.00607, rot3=-0.2),
    "far": dict(dist=0.1, poni1=0.02, poni2=-0.01, rot1=0.2, rot2=0.3, rot3=0.1),
}


# ---------------------------------------------------------------------------------------------
# pyFAI helpers
# ---------------------------------------------------------------------------------------------
def make_ai(geometry: str | dict, detector=None) -> AzimuthalIntegrator:
    params = GEOMETRIES[geometry] if isinstance(geometry, str) else geometry
    if detector is None:
        detector = PyFAIDetector(1e-4, 1e-4, max_shape=SHAPE)
    return AzimuthalIntegrator(detector=detector, wavelength=1e-10, **params)


def pyfai_positions(ai: AzimuthalIntegrator, unit: str) -> tuple[PixelPositions, PixelPositions]:
    """The radial and χ centre/corner arrays pyFAI's engines use (internal units)."""
    shape = ai.detector.shape
    centre = np.asarray(ai.array_from_unit(shape, "center", unit, scale=False), dtype=np.float64)
    corners = np.asarray(ai.array_from_unit(shape, "corner", unit, scale=False), dtype=np.float64)
    chi = np.asarray(ai.array_from_unit(shape, "center", "chi_rad", scale=False), dtype=np.float64)
    return (PixelPositions(centre.ravel(), corners[..., 0].reshape(-1, 4)),
            PixelPositions(chi.ravel(), corners[..., 1].reshape(-1, 4)))


@functools.cache
def cached_positions(geometry: str, unit: str):
    return pyfai_positions(make_ai(geometry), unit)


def pyfai_engine(ai, npt, unit, split, mask=None, radial_range=None, azimuth_range=None):
    """pyFAI's CSR engine as integrate1d_ng / integrate2d_ng build it (ranges in internal units)."""
    ai.reset()
    unit = pfu.to_unit(unit)
    if isinstance(npt, tuple):
        unit = (unit, pfu.CHI_DEG)        # what integrate2d_ng passes
    return ai.setup_sparse_integrator(ai.detector.shape, npt, mask=mask, pos0_range=radial_range,
                                      pos1_range=azimuth_range, unit=unit, split=split, algo="CSR",
                                      scale=False)


def pyfai_matrix(engine, npt, npix) -> scipy.sparse.csr_array:
    """pyFAI's matrix as float64, rows reordered to ours (2-D: i_azim * n_rad + i_rad)."""
    if isinstance(npt, tuple):
        n_rad, n_azim = npt
        mat = scipy.sparse.csr_array(engine.lut, shape=(n_rad * n_azim, npix)).astype(np.float64)
        # pyFAI's row is i_rad * n_azim + i_azim
        perm = (np.arange(n_rad)[None, :] * n_azim + np.arange(n_azim)[:, None]).ravel()
        return mat[perm]
    return scipy.sparse.csr_array(engine.lut, shape=(npt, npix)).astype(np.float64)


def first_pixel(mat: scipy.sparse.csr_array) -> int:
    """Lowest pixel index with an entry (the one pyFAI's 2-D full splitting processes first)."""
    assert mat.format == "csr"
    return int(mat.indices.min())


def nan_columns(mat: scipy.sparse.csr_array) -> np.ndarray:
    """Pixels pyFAI gives NaN weights (full splitting of a pixel whose clamped area is 0)."""
    return np.unique(mat.indices[~np.isfinite(mat.data)])


def max_abs_diff(a, b, skip_columns=()) -> float:
    skip_columns = np.asarray(skip_columns, dtype=np.int64)
    if skip_columns.size:
        keep = np.ones(a.shape[1])
        keep[skip_columns] = 0.0
        a = a @ scipy.sparse.diags_array(keep)
        b = b.copy()
        b.data[~np.isfinite(b.data)] = 0.0
        b = b @ scipy.sparse.diags_array(keep)
    diff = a - b
    return float(abs(diff).max()) if diff.nnz else 0.0


def random_mask(seed=0, fraction=0.05, shape=SHAPE) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < fraction).astype(np.int8)


def ours(split, radial, azimuth, valid, npt, allow_negative, radial_range=None, azimuth_range=None):
    """Our matrix with pyFAI's range rules (auto or user range, eps32 fudge)."""
    rr = pyfai_range(*radial_range) if radial_range else auto_range(split, radial, valid,
                                                                    allow_negative=allow_negative)
    if isinstance(npt, tuple):
        ar = pyfai_range(*azimuth_range) if azimuth_range else auto_range(
            split, azimuth, valid, allow_negative=True, azimuthal=True)
        rb, ab = Bins(rr[0], rr[1], npt[0]), Bins(ar[0], ar[1], npt[1])
        return build_matrix(split, radial, azimuth, valid, rb, ab), rb, ab
    rb = Bins(rr[0], rr[1], npt)
    return build_matrix(split, radial, azimuth, valid, rb, azimuth_range=azimuth_range), rb, None


def check_against_pyfai(ai, radial, azimuth, unit, split, npt, mask=None, radial_range=None,
                        azimuth_range=None):
    valid = np.ones(radial.size, bool) if mask is None else ~mask.ravel().astype(bool)
    engine = pyfai_engine(ai, npt, unit, split, mask, radial_range, azimuth_range)
    expected = pyfai_matrix(engine, npt, radial.size)
    got, rb, ab = ours(split, radial, azimuth, valid, npt, not pfu.to_unit(unit).positive,
                       radial_range, azimuth_range)
    # ranges and bin centres are pyFAI's, exactly
    assert (rb.lo, rb.hi) == (engine.pos0_min, engine.pos0_max)
    if ab is None:
        np.testing.assert_array_equal(rb.centres, engine.bin_centers)
    else:
        assert (ab.lo, ab.hi) == (engine.pos1_min, engine.pos1_max)
        np.testing.assert_array_equal(rb.centres, engine.bin_centers0)
        np.testing.assert_array_equal(ab.centres, engine.bin_centers1)
    assert got.shape == expected.shape
    garbage = [first_pixel(expected)] if (split == "full" and ab is not None and expected.nnz) else []
    degenerate = [j for j in nan_columns(expected) if j not in garbage]
    if degenerate:
        # e.g. a pixel corner exactly at the PONI: pyFAI writes NaN weights, we drop the pixel
        assert split == "full" and got.tocsc()[:, degenerate].nnz == 0
    err = max_abs_diff(got, expected, garbage + degenerate)
    assert err <= ATOL, f"{split} {unit} npt={npt}: max |W - W_pyFAI| = {err:.3g}"
    assert_well_formed(got)
    return got, expected


def assert_well_formed(mat):
    assert isinstance(mat, scipy.sparse.csr_array)
    assert mat.dtype == np.float64
    assert mat.has_sorted_indices
    assert np.all(np.diff(mat.indptr) >= 0)
    for row in range(0, mat.shape[0], max(1, mat.shape[0] // 50)):
        idx = mat.indices[mat.indptr[row]:mat.indptr[row + 1]]
        assert np.all(np.diff(idx) > 0)
    assert np.all(mat.data != 0)
    assert np.all(np.isfinite(mat.data))


# ---------------------------------------------------------------------------------------------
# agreement with pyFAI's matrices
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_matrix_matches_pyfai(geometry, split, unit):
    ai = make_ai(geometry)
    radial, azimuth = cached_positions(geometry, unit)
    mask = random_mask()
    check_against_pyfai(ai, radial, azimuth, unit, split, 50, mask)                       # 1-D
    check_against_pyfai(ai, radial, azimuth, unit, split, 50, mask,
                        azimuth_range=(-0.5, 1.2))                                        # 1-D sector
    check_against_pyfai(ai, radial, azimuth, unit, split, (40, 36), mask)                 # 2-D


USER_RANGES = {"2th_rad": (0.05, 0.3), "q_nm^-1": (3.0, 15.0), "r_m": (0.002, 0.009)}


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("unit", UNITS)
def test_matrix_with_user_ranges_matches_pyfai(split, unit):
    """Explicit ranges: pixels straddling them are clipped (bbox) or clamped (full) as pyFAI does."""
    ai = make_ai("centred")
    radial, azimuth = cached_positions("centred", unit)
    rr = USER_RANGES[unit]
    mask = random_mask(1)
    check_against_pyfai(ai, radial, azimuth, unit, split, 30, mask, radial_range=rr,
                        azimuth_range=(2.0, 3.0))
    check_against_pyfai(ai, radial, azimuth, unit, split, (30, 20), mask, radial_range=rr,
                        azimuth_range=(-1.0, 2.0))
    check_against_pyfai(ai, radial, azimuth, unit, split, (30, 20), None, radial_range=rr,
                        azimuth_range=(-3.0, 3.1))


def test_pilatus1m_matches_pyfai():
    det = detector_factory("Pilatus1M")
    ai = AzimuthalIntegrator(dist=0.2, poni1=0.09, poni2=0.08, rot1=0.1, rot2=-0.05, rot3=0.2,
                             detector=det, wavelength=1e-10)
    radial, azimuth = pyfai_positions(ai, "q_nm^-1")
    mask = det.mask.astype(np.int8)
    check_against_pyfai(ai, radial, azimuth, "q_nm^-1", "bbox", 500, mask)
    check_against_pyfai(ai, radial, azimuth, "q_nm^-1", "full", (200, 90), mask)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dist=st.floats(0.02, 0.2), poni1=st.floats(-0.01, 0.02), poni2=st.floats(-0.01, 0.02),
       rot1=st.floats(-0.3, 0.3), rot2=st.floats(-0.3, 0.3), rot3=st.floats(-0.3, 0.3),
       split=st.sampled_from(SPLITS), unit=st.sampled_from(UNITS),
       npt=st.one_of(st.integers(1, 300), st.tuples(st.integers(1, 80), st.integers(1, 72))),
       masked=st.booleans())
def test_random_geometries_match_pyfai(dist, poni1, poni2, rot1, rot2, rot3, split, unit, npt, masked):
    ai = make_ai(dict(dist=dist, poni1=poni1, poni2=poni2, rot1=rot1, rot2=rot2, rot3=rot3),
                 PyFAIDetector(1e-4, 1e-4, max_shape=(40, 50)))
    radial, azimuth = pyfai_positions(ai, unit)
    check_against_pyfai(ai, radial, azimuth, unit, split, npt, random_mask(3, 0.1, (40, 50)) if masked else None)


# ---------------------------------------------------------------------------------------------
# end to end: W @ frame reproduces integrate1d_ng / integrate2d_ng sums and counts
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("geometry,unit", [("tilted", "q_nm^-1"), ("centred", "2th_rad"), ("off", "r_m")])
def test_integrate_ng_sums_and_counts(geometry, unit, split):
    ai = make_ai(geometry)
    radial, azimuth = cached_positions(geometry, unit)
    mask = random_mask(2)
    valid = ~mask.ravel().astype(bool)
    frame = np.random.default_rng(4).poisson(100.0, SHAPE).astype(np.float32)
    allow_negative = not pfu.to_unit(unit).positive
    method = (split, "csr", "cython")

    # 1-D over a sector (azimuth_range in degrees for pyFAI, radians for us)
    res = ai.integrate1d_ng(frame, 60, unit=unit, method=method, mask=mask, correctSolidAngle=False,
                            azimuth_range=(-40.0, 75.0))
    mat, rb, _ = ours(split, radial, azimuth, valid, 60, allow_negative,
                      azimuth_range=(math.radians(-40.0), math.radians(75.0)))
    np.testing.assert_allclose(rb.centres, res.radial, rtol=1e-12)
    np.testing.assert_allclose(mat @ frame.ravel().astype(np.float64), res.sum_signal, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(mat @ valid.astype(np.float64), res.count, rtol=1e-5, atol=1e-5)

    # 2-D, automatic ranges
    res = ai.integrate2d_ng(frame, 40, 36, unit=unit, method=method, mask=mask, correctSolidAngle=False)
    mat, rb, ab = ours(split, radial, azimuth, valid, (40, 36), allow_negative)
    np.testing.assert_allclose(rb.centres, res.radial, rtol=1e-12)
    np.testing.assert_allclose(np.degrees(ab.centres), res.azimuthal, rtol=1e-12, atol=1e-12)
    signal = (mat @ frame.ravel().astype(np.float64)).reshape(36, 40)
    count = (mat @ valid.astype(np.float64)).reshape(36, 40)
    if split == "full":
        # pyFAI's first processed pixel carries garbage weights (uninitialised buffer): compare
        # only bins it does not touch
        engine = pyfai_engine(ai, (40, 36), unit, split, mask)
        pyfai = pyfai_matrix(engine, (40, 36), radial.size)
        j = first_pixel(pyfai)
        pyfai = pyfai.tocsc()
        touched = np.zeros(40 * 36, bool)
        touched[pyfai[:, [j]].tocoo().coords[0]] = True
        touched[mat.tocsc()[:, [j]].tocoo().coords[0]] = True
        ok = ~touched.reshape(36, 40)
    else:
        ok = np.ones((36, 40), bool)
    # bins reached by a pixel pyFAI gives NaN weights (a pixel corner exactly at the PONI)
    ok &= np.isfinite(np.asarray(res.sum_signal))
    np.testing.assert_allclose(signal[ok], np.asarray(res.sum_signal)[ok], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(count[ok], np.asarray(res.count)[ok], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the rules, one at a time
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit", UNITS)
def test_pixel_delta_is_pyfai_delta_array(unit):
    ai = make_ai("centred")
    radial, azimuth = cached_positions("centred", unit)
    np.testing.assert_array_equal(pixel_delta(radial),
                                  ai.array_from_unit(SHAPE, "delta", unit, scale=False).ravel())
    np.testing.assert_array_equal(pixel_delta(azimuth, azimuthal=True),
                                  ai.array_from_unit(SHAPE, "delta", "chi_rad", scale=False).ravel())


def test_chi_delta_folds_modulo_two_pi():
    centre = np.array([3.14])
    corners = np.array([[3.139, 3.141, -3.135, -3.137]])
    d = pixel_delta(PixelPositions(centre, corners), azimuthal=True)
    assert d[0] == pytest.approx(2 * math.pi - 3.14 - 3.135)
    assert pixel_delta(PixelPositions(centre, corners))[0] == pytest.approx(3.14 + 3.137)


def test_auto_range_rules():
    centre = np.array([-0.5, 1.0, 2.0, 9.0])
    corners = centre[:, None] + np.array([[-0.1, 0.2, 0.1, -0.05]])
    pos = PixelPositions(centre, corners)
    valid = np.array([True, True, True, False])
    assert auto_range("no", pos, valid, allow_negative=True) == (-0.5, 2.0 * EPS32)
    assert auto_range("bbox", pos, valid, allow_negative=True) == (-0.7, 2.2 * EPS32)
    assert auto_range("full", pos, valid, allow_negative=True) == (-0.6, 2.2 * EPS32)
    assert auto_range("no", pos, valid, allow_negative=False) == (0.0, 2.0 * EPS32)
    # negative maximum: the fudge still goes up
    neg = PixelPositions(np.array([-0.5, -1.0, -2.0]), np.full((3, 4), -1.0))
    assert auto_range("no", neg, np.ones(3, bool), allow_negative=True) == (-2.0, -0.5 / EPS32)
    # azimuth: clipped at ±float32(π) before the fudge
    chi = PixelPositions(np.array([-3.14, 3.14]), np.array([[-3.1, -3.15, -3.13, -3.12], [3.1, 3.15, 3.13, 3.12]]))
    pi32 = float(np.float32(math.pi))
    assert auto_range("bbox", chi, np.ones(2, bool), allow_negative=True, azimuthal=True) == (-pi32, pi32 * EPS32)
    assert upper_bound(2.0) == 2.0 * EPS32 and upper_bound(-2.0) == -2.0 / EPS32
    assert pyfai_range(3.0, 1.0) == (1.0, 3.0 * EPS32)


def test_bbox_edge_rules():
    """Truncation toward zero, clipping at 0 / n-1 with the overflow piling up in the edge bin."""
    bins = Bins(0.0, 10.0, 10)
    centre = np.array([-0.3, -1.5, 4.5, 9.9, 3.0, 12.0])
    delta = np.array([0.0, 0.2, 0.0, 0.5, 1.25, 0.1])
    corners = centre[:, None] + delta[:, None] * np.array([[1.0, -1.0, 1.0, -1.0]])
    radial = PixelPositions(centre, corners)
    azimuth = PixelPositions(np.zeros(6), np.zeros((6, 4)))
    dense = build_matrix("bbox", radial, azimuth, np.ones(6, bool), bins).toarray()
    # (-0.3 ± 0): fractional bin -0.03 truncates to bin 0
    np.testing.assert_array_equal(dense[:, 0], np.eye(10)[0])
    # (-1.5 ± 0.2): entirely below bin -1 -> dropped
    assert not dense[:, 1].any()
    np.testing.assert_array_equal(dense[:, 2], np.eye(10)[4])
    # [9.4, 10.4]: bin 9 gets everything (0.6/1 + overflow 0.4/1)
    np.testing.assert_allclose(dense[:, 3], np.eye(10)[9])
    # [1.75, 4.25]: 0.25/2.5 in bin 1, 0.4 in 2 and 3, 0.1 in 4
    np.testing.assert_allclose(dense[1:5, 4], [0.1, 0.4, 0.4, 0.1])
    assert not dense[:, 5].any()
    # "no": whole pixel to the bin of its centre (same truncation rule)
    dense_no = build_matrix("no", radial, azimuth, np.ones(6, bool), bins).toarray()
    np.testing.assert_array_equal(dense_no[:, 4], np.eye(10)[3])
    np.testing.assert_array_equal(dense_no[:, 0], np.eye(10)[0])


def test_sector_keeps_or_drops_whole_pixels():
    bins = Bins(0.0, 4.0, 4)
    radial = PixelPositions(np.full(3, 1.5), np.full((3, 4), 1.5) + [[-0.1, 0.1, 0.1, -0.1]])
    centre_chi = np.array([0.0, 1.0, 0.5])
    azimuth = PixelPositions(centre_chi, centre_chi[:, None] + [[-0.2, -0.2, 0.2, 0.2]])
    mat = build_matrix("bbox", radial, azimuth, np.ones(3, bool), bins, azimuth_range=(0.9, 2.0))
    np.testing.assert_array_equal(mat.sum(axis=0), [0.0, 1.0, 0.0])
    # χ bounding box [0.3, 0.7] misses [0.75, 2.0]; with 'no' only the centre counts
    mat = build_matrix("bbox", radial, azimuth, np.ones(3, bool), bins, azimuth_range=(0.75, 2.0))
    np.testing.assert_array_equal(mat.sum(axis=0), [0.0, 1.0, 0.0])
    mat = build_matrix("bbox", radial, azimuth, np.ones(3, bool), bins, azimuth_range=(0.65, 2.0))
    np.testing.assert_array_equal(mat.sum(axis=0), [0.0, 1.0, 1.0])
    mat = build_matrix("no", radial, azimuth, np.ones(3, bool), bins, azimuth_range=(0.65, 2.0))
    np.testing.assert_array_equal(mat.sum(axis=0), [0.0, 1.0, 0.0])


def test_full_1d_is_exact_area():
    """1-D full splitting: exact area of the quadrilateral in each radial bin."""
    bins = Bins(0.0, 4.0, 4)
    # a square rotated by 45° centred on r=2: half in bin 1, half in bin 2
    r = np.array([[2.0, 2.5, 2.0, 1.5]])
    chi = np.array([[0.0, 0.5, 1.0, 0.5]])
    mat = build_matrix("full", PixelPositions(r.mean(1), r), PixelPositions(chi.mean(1), chi),
                       np.ones(1, bool), bins)
    np.testing.assert_allclose(mat.toarray()[:, 0], [0, 0.5, 0.5, 0], atol=1e-7)
    # a trapezoid r in [1.5, 2.5]: χ height 1 at r=1.5 growing to 2 at r=2.5 -> 5/12, 7/12
    r = np.array([[1.5, 1.5, 2.5, 2.5]])
    chi = np.array([[0.0, 1.0, 2.0, 0.0]])
    mat = build_matrix("full", PixelPositions(r.mean(1), r), PixelPositions(chi.mean(1), chi),
                       np.ones(1, bool), bins)
    np.testing.assert_allclose(mat.toarray()[1:3, 0], [5 / 12, 7 / 12], atol=1e-6)


def test_full_recentres_pixels_across_the_discontinuity():
    """A pixel with corners at χ ≈ +π and ≈ -π is one small pixel, not one spanning 2π."""
    r = np.array([[1.0, 2.0, 2.0, 1.0], [1.0, 2.0, 2.0, 1.0], [1.0, 2.0, 2.0, 1.0]])
    chi = np.array([[3.1, 3.1, -3.1, -3.1],        # straddles ±π: χ 3.1 -> 3.18 (= -3.10)
                    [0.1, 0.1, 0.2, 0.2],          # ordinary pixels, same orientation
                    [0.3, 0.3, 0.4, 0.4]])
    radial = PixelPositions(r.mean(1), r)
    azimuth = PixelPositions(np.array([math.pi, 0.15, 0.35]), chi)
    valid = np.ones(3, bool)
    rb = Bins(0.0, 3.0, 3)
    ab = Bins(-math.pi, math.pi, 4)
    dense = build_matrix("full", radial, azimuth, valid, rb, ab).toarray()
    # 2-D: recentred to [3.1, 3.18], clamped at the range maximum (π): all in the last χ bin
    np.testing.assert_allclose(dense[:, 0].reshape(4, 3)[3], [0.0, 1.0, 0.0], atol=1e-6)
    # 1-D sector around π: kept whole
    dense = build_matrix("full", radial, azimuth, valid, rb, azimuth_range=(3.0, 3.2)).toarray()
    np.testing.assert_allclose(dense[:, 0], [0.0, 1.0, 0.0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# structural properties on synthetic pixels
# ---------------------------------------------------------------------------------------------
@st.composite
def pixel_sets(draw):
    n = draw(st.integers(1, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    centre_r = rng.uniform(0.0, 10.0, n)
    centre_c = rng.uniform(-3.0, 3.0, n)
    half_r = rng.uniform(0.01, 1.5, n)[:, None]
    half_c = rng.uniform(0.01, 0.3, n)[:, None]
    # parallelograms, corners in pyFAI's (negative algebraic area) order
    r = centre_r[:, None] + half_r * np.array([[-1, -1, 1, 1]]) + 0.2 * half_r * np.array([[-1, 1, 1, -1]])
    c = centre_c[:, None] + half_c * np.array([[-1, 1, 1, -1]])
    valid = rng.random(n) < 0.8
    return PixelPositions(centre_r, r), PixelPositions(centre_c, c), valid


@settings(max_examples=60, deadline=None)
@given(pixels=pixel_sets(), split=st.sampled_from(SPLITS), n_rad=st.integers(1, 40),
       n_azim=st.one_of(st.none(), st.integers(1, 20)))
def test_structure_and_normalisation(pixels, split, n_rad, n_azim):
    radial, azimuth, valid = pixels
    if not valid.any():
        with pytest.raises(IntegrationError):
            auto_range(split, radial, valid, allow_negative=False)
        return
    rb = Bins(*auto_range(split, radial, valid, allow_negative=False), n_rad)
    ab = None if n_azim is None else Bins(*auto_range(split, azimuth, valid, allow_negative=True,
                                                      azimuthal=True), n_azim)
    mat = build_matrix(split, radial, azimuth, valid, rb, ab)
    assert mat.shape == (n_rad * (1 if n_azim is None else n_azim), radial.size)
    assert_well_formed(mat)
    col = np.asarray(mat.sum(axis=0)).ravel()
    assert not col[~valid].any()
    # with automatic ranges every valid pixel is inside: each column sums to one
    np.testing.assert_allclose(col[valid], 1.0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def _tiny():
    radial = PixelPositions(np.array([1.0, 2.0]), np.array([[0.9, 0.9, 1.1, 1.1], [1.9, 1.9, 2.1, 2.1]]))
    azimuth = PixelPositions(np.zeros(2), np.array([[-0.1, 0.1, 0.1, -0.1]] * 2))
    return radial, azimuth


def test_errors():
    radial, azimuth = _tiny()
    valid = np.ones(2, bool)
    bins = Bins(0.0, 3.0, 3)
    with pytest.raises(IntegrationError, match="splitting"):
        build_matrix("pseudo-exact", radial, azimuth, valid, bins)
    with pytest.raises(IntegrationError, match="splitting"):
        auto_range("nope", radial, valid, allow_negative=False)
    for lo, hi, n in [(0.0, 1.0, 0), (0.0, 1.0, -3), (1.0, 1.0, 5), (2.0, 1.0, 5), (0.0, math.inf, 5)]:
        with pytest.raises(IntegrationError):
            Bins(lo, hi, n)
    with pytest.raises(IntegrationError):
        Bins(0.0, 1.0, 2.5)
    with pytest.raises(IntegrationError, match="corners"):
        PixelPositions(np.zeros(3), np.zeros((3, 3)))
    with pytest.raises(IntegrationError, match="1-D"):
        PixelPositions(np.zeros((3, 1)), np.zeros((3, 4)))
    with pytest.raises(IntegrationError, match="valid"):
        build_matrix("bbox", radial, azimuth, np.ones(3, bool), bins)
    short = PixelPositions(np.zeros(1), np.zeros((1, 4)))
    with pytest.raises(IntegrationError, match="pixels"):
        build_matrix("bbox", radial, short, valid, bins)
    with pytest.raises(IntegrationError, match="azimuth_range"):
        build_matrix("bbox", radial, azimuth, valid, bins, Bins(-1.0, 1.0, 4), azimuth_range=(0.0, 1.0))
    with pytest.raises(IntegrationError, match="azimuth_range"):
        build_matrix("bbox", radial, azimuth, valid, bins, azimuth_range=(0.0, math.nan))
    with pytest.raises(IntegrationError, match="no valid pixel"):
        auto_range("bbox", radial, np.zeros(2, bool), allow_negative=False)


def test_accepts_duck_typed_positions():
    """Any object with ``centre`` and ``corners`` (e.g. reduction.azint.geometry.PixelPositions) works."""
    radial, azimuth = _tiny()

    class Pos:
        def __init__(self, p):
            self.centre, self.corners = p.centre, p.corners

    bins = Bins(0.0, 3.0, 3)
    a = build_matrix("full", Pos(radial), Pos(azimuth), np.ones(2, bool), bins)
    b = build_matrix("full", radial, azimuth, np.ones(2, bool), bins)
    assert (a != b).nnz == 0
