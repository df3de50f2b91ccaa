"""Integrator behaviour that does not need the oracle: physics invariants, batching, dtypes,
invalid pixel values, the matrix cache and clear errors on bad input."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from reduction import Geometry, IntegrationError, Integrator
from reduction.azint.detectors import Detector

DET = Detector("Detector", 172e-6, 172e-6, (120, 150))
GEO = Geometry(dist=0.08, poni1=0.011, poni2=0.012, rot1=0.1, rot2=-0.05, rot3=0.2, wavelength=1e-10, detector=DET)


def _frames(n: int = 4, seed: int = 1, dtype=np.int32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.poisson(100.0, size=(n, *DET.shape)).astype(dtype)


@pytest.mark.parametrize("splitting", ["no", "bbox", "full"])
@pytest.mark.parametrize("dim", [1, 2])
def test_flat_image_integrates_to_one(splitting: str, dim: int) -> None:
    integ = Integrator(GEO, cache_dir=False)
    flat = np.full(DET.shape, 7.0)
    kw = dict(splitting=splitting, solid_angle=False, normalization=7.0, error_model=None)
    res = integ.integrate1d(flat, npt=50, **kw) if dim == 1 else integ.integrate2d(flat, 50, 24, **kw)
    populated = res.count > 1e-9
    assert populated.sum() > 0.3 * populated.size
    np.testing.assert_allclose(res.intensity[populated], 1.0, rtol=1e-12)
    assert np.isnan(res.intensity[~populated]).all() and res.sigma is None


def test_count_adds_up_to_unmasked_pixels() -> None:
    mask = np.zeros(DET.shape, bool)
    mask[:30, :40] = True
    integ = Integrator(GEO, mask=mask, cache_dir=False)
    for splitting in ("no", "bbox", "full"):
        res = integ.integrate1d(np.ones(DET.shape), npt=80, unit="2th_deg", splitting=splitting,
                                radial_range=(0.0, 60.0))
        assert res.count.sum() == pytest.approx((~mask).sum(), rel=1e-9)


@pytest.mark.parametrize("dim", [1, 2])
def test_stack_equals_frame_by_frame_and_accumulators_are_consistent(dim: int) -> None:
    integ = Integrator(GEO, cache_dir=False)
    frames = _frames(5)
    monitor = np.array([1.0, 2.0, 0.5, 3.0, 1.5])
    dark = np.full(DET.shape, 2.0)
    run = (lambda f, m: integ.integrate1d(f, npt=60, dark=dark, normalization=m, polarization_factor=0.9)) \
        if dim == 1 else (lambda f, m: integ.integrate2d(f, 40, 18, dark=dark, normalization=m))
    stack = run(frames, monitor)
    for b in range(len(frames)):
        one = run(frames[b], monitor[b])
        assert one.intensity.shape == stack.intensity.shape[1:]
        for name in ("intensity", "sigma", "signal", "variance", "normalization", "count"):
            np.testing.assert_allclose(getattr(stack, name)[b], getattr(one, name), rtol=1e-6, equal_nan=True)
    ok = stack.normalization > 0
    np.testing.assert_allclose(stack.intensity[ok], stack.signal[ok] / stack.normalization[ok], rtol=1e-12)
    np.testing.assert_allclose(stack.sigma[ok], np.sqrt(stack.variance[ok]) / stack.normalization[ok], rtol=1e-12)


def test_block_boundaries_do_not_matter(monkeypatch) -> None:
    frames = _frames(7)
    whole = Integrator(GEO, cache_dir=False).integrate1d(frames, npt=50)
    monkeypatch.setattr("reduction.azint.integrator.BLOCK_FRAMES", 3)
    blocks = Integrator(GEO, cache_dir=False).integrate1d(frames, npt=50)
    np.testing.assert_allclose(blocks.intensity, whole.intensity, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.int64, np.float32, np.float64])
def test_any_frame_dtype_gives_the_same_numbers(dtype) -> None:
    integ = Integrator(GEO, cache_dir=False)
    ref = integ.integrate1d(_frames(3).astype(np.float64), npt=50)
    res = integ.integrate1d(_frames(3).astype(dtype), npt=50)
    np.testing.assert_allclose(res.intensity, ref.intensity, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(res.sigma, ref.sigma, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize(("dtype", "marker"), [(np.int32, -1), (np.int32, -2), (np.uint32, 2**32 - 1),
                                               (np.uint16, 2**16 - 1), (np.float32, np.nan)])
def test_gap_and_bad_pixel_values_are_masked_in_their_frame_only(dtype, marker) -> None:
    frames = _frames(3, dtype=np.float64)
    bad = np.zeros(DET.shape, bool)
    bad[50:53, 60:70] = True  # in the middle of the rings, frame 1 only
    dark = np.full(DET.shape, 1.0)
    marked = frames.astype(dtype)
    marked[1][bad] = marker
    integ = Integrator(GEO, cache_dir=False)
    res = integ.integrate1d(marked, npt=50, splitting="bbox", dark=dark)
    clean = integ.integrate1d(frames, npt=50, splitting="bbox", dark=dark)
    for b in (0, 2):
        np.testing.assert_allclose(res.intensity[b], clean.intensity[b], rtol=1e-6, equal_nan=True)
    expected = Integrator(GEO, mask=bad, cache_dir=False).integrate1d(frames[1], npt=50, splitting="bbox", dark=dark)
    for name in ("intensity", "sigma", "count", "normalization"):
        np.testing.assert_allclose(getattr(res, name)[1], getattr(expected, name), rtol=1e-6, atol=1e-9,
                                   equal_nan=True, err_msg=name)
    assert not np.array_equal(res.count[1], res.count[0])


def test_detector_gaps_are_masked_automatically() -> None:
    geo = Geometry(dist=0.3, poni1=0.09, poni2=0.08, wavelength=1e-10, detector="Pilatus1M")
    frame = np.ones(geo.shape, dtype=np.int32)
    frame[geo.detector.mask] = 10**6  # garbage in the gaps must not show
    res = Integrator(geo, cache_dir=False).integrate1d(frame, npt=200, splitting="no", solid_angle=False)
    assert res.count.sum() == (~geo.detector.mask).sum()
    np.testing.assert_allclose(res.intensity[res.count > 0], 1.0)


def test_matrix_cache_is_reused_and_damage_is_rebuilt(tmp_path, caplog) -> None:
    frames = _frames(2)
    first = Integrator(GEO, cache_dir=tmp_path).integrate1d(frames, npt=64, splitting="full")
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    start = time.perf_counter()
    again = Integrator(GEO, cache_dir=tmp_path).integrate1d(frames, npt=64, splitting="full")
    assert time.perf_counter() - start < 5  # loaded, not rebuilt (a rebuild is not timed here)
    assert files[0].stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.intensity, first.intensity, rtol=1e-12)

    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip bits in the middle of the arrays
    files[0].write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="reduction.azint.cache"):
        rebuilt = Integrator(GEO, cache_dir=tmp_path).integrate1d(frames, npt=64, splitting="full")
    assert "unusable matrix cache file" in caplog.text
    np.testing.assert_allclose(rebuilt.intensity, first.intensity, rtol=1e-12)
    files[0].write_bytes(b"not a zip file at all")
    with caplog.at_level(logging.WARNING, logger="reduction.azint.cache"):
        Integrator(GEO, cache_dir=tmp_path).integrate1d(frames, npt=64, splitting="full")
    np.testing.assert_allclose(rebuilt.intensity, first.intensity, rtol=1e-12)


def test_changed_parameters_get_their_own_matrix(tmp_path) -> None:
    Integrator(GEO, cache_dir=tmp_path).integrate1d(_frames(1), npt=64)
    Integrator(GEO, cache_dir=tmp_path).integrate1d(_frames(1), npt=65)
    mask = np.zeros(DET.shape, bool)
    mask[0, 0] = True
    Integrator(GEO, mask=mask, cache_dir=tmp_path).integrate1d(_frames(1), npt=64)
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XREDUCE_CACHE_DIR", str(tmp_path / "c"))
    Integrator(GEO).integrate1d(_frames(1), npt=33)
    assert len(list((tmp_path / "c").glob("*.npz"))) == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda i, f: i.integrate1d(f, npt=0), "npt must be a positive integer"),
        (lambda i, f: i.integrate1d(f, npt=2.5), "npt must be a positive integer"),
        (lambda i, f: i.integrate2d(f, npt_rad=10, npt_azim=-1), "npt_azim must be a positive integer"),
        (lambda i, f: i.integrate1d(f, unit="q_fm^-1"), "unknown unit 'q_fm\\^-1'"),
        (lambda i, f: i.integrate1d(f, splitting="pseudo"), "unknown splitting 'pseudo'"),
        (lambda i, f: i.integrate1d(f, error_model="azimuthal"), "unknown error_model"),
        (lambda i, f: i.integrate1d(f[..., :-1]), r"frames of shape \(2, 120, 149\) do not match"),
        (lambda i, f: i.integrate1d(f[0, 0]), r"frames of shape \(150,\) do not match"),
        (lambda i, f: i.integrate1d(f.astype(str)), "integer or float"),
        (lambda i, f: i.integrate1d(f, unit="2th_deg", radial_range=(170, 179)), "contain no pixel"),
        (lambda i, f: i.integrate1d(f, radial_range=(5, 1)), "min < max"),
        (lambda i, f: i.integrate1d(f, normalization=[1.0, 0.0]), "frame 1 has 0.0"),
        (lambda i, f: i.integrate1d(f, normalization=[1.0, 2.0, 3.0]), "one value per frame"),
        (lambda i, f: i.integrate1d(f, dark=np.zeros((3, 3))), r"dark shape \(3, 3\) does not match"),
        (lambda i, f: i.integrate1d(f, flat=np.full(DET.shape, np.nan)), "flat has non-finite values"),
        (lambda i, f: i.integrate1d(f, polarization_factor=2.0), r"polarization_factor = 2.0 must lie in"),
    ],
)
def test_bad_input_raises_clear_errors(call, message) -> None:
    integ = Integrator(GEO, cache_dir=False)
    with pytest.raises(Exception, match=message) as info:
        call(integ, _frames(2))
    assert isinstance(info.value, IntegrationError) or type(info.value).__name__ == "GeometryError"


def test_bad_mask_and_geometry() -> None:
    with pytest.raises(IntegrationError, match=r"mask shape \(10, 10\) does not match detector Detector"):
        Integrator(GEO, mask=np.zeros((10, 10)))
    with pytest.raises(IntegrationError, match="every pixel is masked"):
        Integrator(GEO, mask=np.ones(DET.shape), cache_dir=False).integrate1d(_frames(1), npt=10)
    with pytest.raises(IntegrationError, match="unknown engine 'cuda'"):
        Integrator(GEO, engine="cuda")
    no_wavelength = Geometry(dist=0.1, poni1=0.0, poni2=0.0, detector=DET)
    with pytest.raises(IntegrationError, match="needs a wavelength"):
        Integrator(no_wavelength, cache_dir=False).integrate1d(_frames(1), unit="q_nm^-1")
    res = Integrator(no_wavelength, cache_dir=False).integrate1d(_frames(1), npt=20, unit="2th_deg")
    assert res.radial.shape == (20,)
