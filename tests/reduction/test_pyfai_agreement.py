"""The numbers agree with pyFAI, the field's reference, over many geometries and options.

For the same PONI, mask, corrections and explicit ranges: bin centres to 1e-6 relative, and
intensity and sigma to 1e-4 relative (1e-3 for full pixel splitting) in every bin whose count is
at least 10 % of the median count, against pyFAI's ``integrate1d``/``integrate2d`` with method
``(splitting, "csr", "cython")`` and the Poisson error model. Frames are pyFAI's own synthetic
calibrant images with Poisson noise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyFAI.calibrant import get_calibrant
from pyFAI.detectors import Detector as PyFAIDetector
from pyFAI.detectors import detector_factory
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from reduction import Geometry, Integrator
from reduction.azint.detectors import Detector, detector_from_name

UNITS = ["q_nm^-1", "q_A^-1", "2th_deg", "2th_rad", "r_mm"]
TOLERANCE = {"no": 1e-4, "bbox": 1e-4, "full": 1e-3}
SMALL = Detector("Detector", 172e-6, 172e-6, (160, 200))


@dataclass
class Case:
    """One comparison: a geometry, integration options and corrections."""

    detector: str | Detector = SMALL
    dist: float = 0.1
    poni1: float = 0.0137
    poni2: float = 0.0172
    rot1: float = 0.0
    rot2: float = 0.0
    rot3: float = 0.0
    wavelength: float = 1.0e-10
    unit: str = "q_nm^-1"
    splitting: str = "bbox"
    dim: int = 1
    npt: int = 100
    npt_azim: int = 36
    azimuth_range: tuple[float, float] | None = None
    sector: tuple[float, float] | None = None  # azimuth_range as quantiles of the pixels' χ
    mask: bool = False
    dark: bool = False
    flat: bool = False
    solid_angle: bool = True
    polarization_factor: float | None = None
    normalization: float | None = None
    nframes: int = 1
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def geometry(self) -> Geometry:
        det = self.detector if isinstance(self.detector, Detector) else detector_from_name(self.detector)
        return Geometry(self.dist, self.poni1, self.poni2, self.rot1, self.rot2, self.rot3, self.wavelength, det)

    def pyfai(self) -> AzimuthalIntegrator:
        if isinstance(self.detector, Detector):
            det = PyFAIDetector(pixel1=self.detector.pixel1, pixel2=self.detector.pixel2,
                                max_shape=self.detector.shape)
        else:
            det = detector_factory(self.detector)
        return AzimuthalIntegrator(dist=self.dist, poni1=self.poni1, poni2=self.poni2, rot1=self.rot1,
                                   rot2=self.rot2, rot3=self.rot3, wavelength=self.wavelength, detector=det)


def _inputs(case: Case, ai: AzimuthalIntegrator) -> dict:
    """Frames (pyFAI's fake calibrant + Poisson noise) and the correction images of a case."""
    rng = np.random.default_rng(case.seed)
    shape = ai.detector.shape
    calibrant = get_calibrant("LaB6")
    calibrant.wavelength = case.wavelength
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ideal = calibrant.fake_calibration_image(ai, Imax=500.0, shape=shape)
    frames = rng.poisson(np.clip(ideal, 0, None) + 20.0, size=(case.nframes, *shape)).astype(np.int32)
    out = {"frames": frames, "mask": None, "dark": None, "flat": None}
    if case.mask:
        mask = np.zeros(shape, dtype=np.int8)
        mask[: shape[0] // 5, : shape[1] // 3] = 1  # a beamstop-like block
        mask[rng.random(shape) < 0.02] = 1  # scattered dead pixels
        out["mask"] = mask
    if case.dark:
        out["dark"] = rng.poisson(3.0, size=shape).astype(np.float32)
    if case.flat:
        out["flat"] = rng.uniform(0.8, 1.2, size=shape).astype(np.float32)
    return out


def _radial_range(case: Case, geo: Geometry) -> tuple[float, float]:
    """An explicit range inside what the detector sees (pixel centres, unmasked)."""
    values = geo.radial(case.unit)[~geo.detector.mask]
    lo, hi = values.min(), values.max()
    return lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo)


def _compare(ours: np.ndarray, ref: np.ndarray, count: np.ndarray, rtol: float, what: str,
             skip: np.ndarray | None = None) -> None:
    populated = count > 0
    selected = count >= 0.1 * np.median(count[populated])
    if skip is not None:
        selected &= ~skip
    assert selected.sum() >= 0.3 * populated.sum(), f"too few populated bins to compare {what}"
    np.testing.assert_allclose(ours[selected], ref[selected], rtol=rtol, atol=0, err_msg=what)


def check_case(case: Case, engine: str = "numpy") -> None:
    """Integrate with xreduce (this engine) and pyFAI and compare every frame."""
    geo, ai = case.geometry(), case.pyfai()
    data = _inputs(case, ai)
    radial_range = _radial_range(case, geo)
    azimuth_range = case.azimuth_range
    if case.sector is not None:
        chi = np.degrees(geo.chi()[~geo.detector.mask])
        azimuth_range = tuple(float(v) for v in np.quantile(chi, case.sector))
    common = dict(unit=case.unit, radial_range=radial_range, azimuth_range=azimuth_range)
    monitor = None
    if case.normalization is not None:
        monitor = case.normalization * (1.0 + np.arange(case.nframes))
    corrections = dict(dark=data["dark"], flat=data["flat"], polarization_factor=case.polarization_factor)

    integ = Integrator(geo, mask=data["mask"], engine=engine, cache_dir=False)
    if case.dim == 1:
        res = integ.integrate1d(data["frames"], npt=case.npt, splitting=case.splitting, solid_angle=case.solid_angle,
                                normalization=monitor, **common, **corrections)
    else:
        res = integ.integrate2d(data["frames"], npt_rad=case.npt, npt_azim=case.npt_azim, splitting=case.splitting,
                                solid_angle=case.solid_angle, normalization=monitor, **common, **corrections)

    # a user mask replaces the detector's in pyFAI, but adds to it in xreduce: give pyFAI both
    pyfai_mask = None if data["mask"] is None else (data["mask"] != 0) | geo.detector.mask
    rtol = TOLERANCE[case.splitting]
    garbage_bins = case.dim == 2 and case.splitting == "full"
    for b in range(case.nframes):
        kwargs = dict(method=(case.splitting, "csr", "cython"), mask=pyfai_mask, correctSolidAngle=case.solid_angle,
                      error_model="poisson", normalization_factor=1.0 if monitor is None else float(monitor[b]),
                      **common, **corrections)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if case.dim == 1:
                ref = ai.integrate1d(data["frames"][b], case.npt, **kwargs)
            else:
                ref = ai.integrate2d(data["frames"][b], case.npt, case.npt_azim, **kwargs)
        np.testing.assert_allclose(res.radial, ref.radial, rtol=1e-6, err_msg="radial bin centres")
        if case.dim == 2:
            np.testing.assert_allclose(res.azimuthal, ref.azimuthal, rtol=1e-6, atol=1e-9,
                                       err_msg="azimuthal bin centres")
        count = ref.count
        skip = None
        if garbage_bins:
            # pyFAI's 2-D full-splitting engine starts from an uninitialised buffer (numpy.empty):
            # the first pixel it splits gets garbage weights -- usually 0/1 instead of its fractions,
            # but whatever the memory held (seen: 1.016 in two bins), so the size of the difference is
            # not ours to bound. Allow it in the few bins one pixel touches, and leave those out.
            diff = np.abs(res.count[b] - count)
            skip = diff > TOLERANCE["full"] * np.abs(count)
            assert skip.sum() <= 4, f"count differs in {skip.sum()} bins, beyond pyFAI's first-pixel glitch: {case}"
        _compare(res.count[b], count, count, rtol, f"count, frame {b}, {case}", skip)
        _compare(res.intensity[b], ref.intensity, count, rtol, f"intensity, frame {b}, {case}", skip)
        _compare(res.sigma[b], ref.sigma, count, rtol, f"sigma, frame {b}, {case}", skip)


# -- a fixed grid: every unit × splitting × dimension, with all corrections -------------------------
GRID = [
    Case(unit=unit, splitting=splitting, dim=dim, rot1=0.12, rot2=-0.07, rot3=0.2, mask=True, dark=True, flat=True,
         polarization_factor=0.95, normalization=2.5, nframes=2, seed=i)
    for i, (unit, splitting, dim) in enumerate(
        (u, s, d) for u in UNITS for s in ("no", "bbox", "full") for d in (1, 2))
]


@pytest.mark.parametrize("case", GRID, ids=lambda c: f"{c.unit}-{c.splitting}-{c.dim}d")
def test_grid_of_units_and_splittings(case: Case) -> None:
    check_case(case)


# -- random geometries: tilts up to ±0.3 rad, beam centre on and off the detector --------------------
@st.composite
def cases(draw) -> Case:
    """A random geometry and option set on the small detector."""
    ny, nx = SMALL.shape
    size1, size2 = ny * SMALL.pixel1, nx * SMALL.pixel2
    beam_on = draw(st.booleans())
    span = (0.1, 0.9) if beam_on else (-0.8, 1.8)
    return Case(
        dist=draw(st.floats(0.05, 0.3)),
        poni1=size1 * draw(st.floats(*span)),
        poni2=size2 * draw(st.floats(*span)),
        rot1=draw(st.floats(-0.3, 0.3)),
        rot2=draw(st.floats(-0.3, 0.3)),
        rot3=draw(st.floats(-0.3, 0.3)),
        wavelength=draw(st.floats(0.5e-10, 1.5e-10)),
        unit=draw(st.sampled_from(UNITS)),
        splitting=draw(st.sampled_from(["no", "bbox", "full"])),
        dim=draw(st.sampled_from([1, 2])),
        npt=draw(st.integers(20, 120)),
        sector=draw(st.sampled_from([None, (0.0, 0.6), (0.3, 0.9)])),
        mask=draw(st.booleans()),
        dark=draw(st.booleans()),
        flat=draw(st.booleans()),
        solid_angle=draw(st.booleans()),
        polarization_factor=draw(st.sampled_from([None, 0.0, 0.95, -0.5])),
        normalization=draw(st.sampled_from([None, 0.37, 1e4])),
        seed=draw(st.integers(0, 2**16)),
    )


@pytest.mark.slow
@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(case=cases())
def test_random_geometries(case: Case) -> None:
    check_case(case)


# -- the real detectors --------------------------------------------------------------------------
BIG = [
    Case(detector="Pilatus1M", dist=0.3, poni1=0.09, poni2=0.085, rot1=0.05, rot2=-0.1, rot3=0.3,
         splitting="full", npt=500, mask=True, dark=True, flat=True, polarization_factor=0.99, nframes=2),
    Case(detector="Pilatus1M", dist=0.25, poni1=-0.02, poni2=0.05, rot1=-0.3, rot2=0.2, rot3=0.1, unit="2th_deg",
         dim=2, npt=300, npt_azim=90, azimuth_range=(-180.0, 180.0)),
    Case(detector="Pilatus2M", dist=0.4, poni1=0.14, poni2=0.13, rot2=0.1, unit="q_A^-1", splitting="no",
         npt=800, normalization=3.0),
    Case(detector="Eiger4M", dist=0.2, poni1=0.08, poni2=0.075, rot1=0.02, rot2=0.03, splitting="bbox", npt=1000,
         polarization_factor=0.95, nframes=3, normalization=1.0),
    Case(detector="Eiger4M", dist=0.15, poni1=0.2, poni2=0.18, unit="r_mm", splitting="no", dim=2, npt=400,
         npt_azim=72, azimuth_range=(-180.0, -90.0), dark=True),
]


@pytest.mark.parametrize("case", BIG, ids=lambda c: f"{c.detector}-{c.splitting}-{c.dim}d-{c.unit}")
def test_real_detectors(case: Case) -> None:
    check_case(case)
