"""Geometry, PONI files and detectors agree with pyFAI (the oracle), and bad input is named."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pyFAI.detectors import detector_factory
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from reduction import Geometry, GeometryError
from reduction.azint.detectors import KNOWN_DETECTORS, detector_from_name

PARAMS = [
    dict(dist=0.2, poni1=0.05, poni2=0.11, rot1=0.2, rot2=-0.25, rot3=0.3, wavelength=1.1e-10),
    dict(dist=0.5, poni1=-0.05, poni2=0.3, rot1=-0.3, rot2=0.3, rot3=-0.3, wavelength=0.7e-10),
    dict(dist=0.1, poni1=0.09, poni2=0.08, rot1=0.0, rot2=0.0, rot3=0.0, wavelength=1.5e-10),
]


def _pyfai(params: dict, name: str, orientation: int = 3) -> AzimuthalIntegrator:
    return AzimuthalIntegrator(detector=detector_factory(name, {"orientation": orientation}), **params)


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("orientation", [3, 1, 2, 4])
def test_pixel_arrays_match_pyfai(params: dict, orientation: int) -> None:
    ai = _pyfai(params, "Pilatus100k", orientation)
    geo = Geometry(detector=detector_from_name("Pilatus100k", {"orientation": orientation}), **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tth = ai.center_array(unit="2th_rad", scale=False)
        chi = ai.center_array(unit="chi_rad", scale=False)
        q = ai.center_array(unit="q_nm^-1", scale=False)
        r = ai.center_array(unit="r_mm", scale=False)
        corners = ai.array_from_unit(unit="q_nm^-1", typ="corner", scale=False)
    np.testing.assert_allclose(geo.twotheta(), tth, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(geo.chi(), chi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(geo.radial("q_nm^-1"), q, rtol=1e-12)
    np.testing.assert_allclose(geo.radial("r_mm"), r * 1000, rtol=1e-12)
    np.testing.assert_allclose(geo.radial("2th_deg"), np.degrees(tth), rtol=1e-12)
    np.testing.assert_allclose(geo.radial("q_A^-1"), q / 10, rtol=1e-12)
    # corners are float32 in pyFAI, and so are ours (rounded the same way)
    np.testing.assert_array_equal(geo.radial_positions("q_nm^-1").corners, corners[..., 0].reshape(-1, 4))
    np.testing.assert_allclose(geo.azimuth_positions().corners, corners[..., 1].reshape(-1, 4), atol=1e-6)
    np.testing.assert_allclose(geo.solid_angle(), ai.solidAngleArray(), rtol=1e-6)
    for factor in (0.0, 0.95, -0.5):
        np.testing.assert_allclose(geo.polarization(factor), ai.polarization(factor=factor), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(KNOWN_DETECTORS))
def test_detector_models_match_pyfai(name: str) -> None:
    ours = detector_from_name(name)
    theirs = detector_factory(name)
    assert ours.shape == tuple(theirs.shape)
    assert (ours.pixel1, ours.pixel2) == (theirs.pixel1, theirs.pixel2)
    np.testing.assert_array_equal(ours.mask, theirs.mask.astype(bool))


def test_poni_roundtrip_with_pyfai(tmp_path) -> None:
    ai = _pyfai(PARAMS[0], "Eiger4M")
    ai.write(str(tmp_path / "pyfai.poni"))
    geo = Geometry.from_poni(tmp_path / "pyfai.poni")
    assert geo.detector.name == "Eiger4M" and geo.shape == (2167, 2070)
    for key, value in PARAMS[0].items():
        assert getattr(geo, key) == pytest.approx(value, rel=1e-12)
    (tmp_path / "ours.poni").write_text(geo.to_poni())
    back = AzimuthalIntegrator()
    back.load(str(tmp_path / "ours.poni"))
    assert back.detector.name == "Eiger 4M"
    assert back.dist == pytest.approx(geo.dist) and back.rot3 == pytest.approx(geo.rot3)
    assert Geometry.from_poni(tmp_path / "ours.poni") == geo


def test_poni_version1_and_generic_detector(tmp_path) -> None:
    (tmp_path / "v1.poni").write_text(
        "# old style\nPixelSize1: 0.0001\nPixelSize2: 0.00012\nDistance: 0.25\nPoni1: 0.01\nPoni2: 0.02\n"
        "Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: 1e-10\n")
    with pytest.raises(GeometryError, match="max_shape"):
        Geometry.from_poni(tmp_path / "v1.poni")
    (tmp_path / "v2.poni").write_text(
        'poni_version: 2\nDetector: Detector\nDetector_config: {"pixel1": 1e-4, "pixel2": 1.2e-4, '
        '"max_shape": [100, 120]}\nDistance: 0.25\nPoni1: 0.01\nPoni2: 0.02\nRot1: 0\nRot2: 0\nRot3: 0\n')
    geo = Geometry.from_poni(tmp_path / "v2.poni")
    assert geo.shape == (100, 120) and geo.detector.pixel2 == 1.2e-4 and geo.wavelength is None
    assert not geo.detector.mask.any()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Detector: Pilatus1M\nDistance: 0.1\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\n", "missing key 'Rot3'"),
        ("Detector: Pilatus1M\nDistance: 0.1x\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\nRot3: 0\n",
         r"Distance = '0.1x' is not a number"),
        ("Detector: Pilatus7M\nDistance: 0.1\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\nRot3: 0\n",
         "unknown detector 'Pilatus7M'"),
        ("Detector: Pilatus1M\nDistance: -0.1\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\nRot3: 0\n",
         "must be positive"),
        ("poni_version: 2\nDetector: Pilatus1M\nDetector_config: {oops\nDistance: 0.1\nPoni1: 0\nPoni2: 0\n"
         "Rot1: 0\nRot2: 0\nRot3: 0\n", "not valid JSON"),
        ("Detector: Pilatus1M\nthis line has no colon\n", "line 2"),
        ("Detector: Pilatus1M\nDistance: 0.1\nPoni1: 0\nPoni2: 0\nRot1: 0\nRot2: 0\nRot3: nan\n", "not finite"),
    ],
)
def test_bad_poni_files_are_named(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.poni"
    path.write_text(text)
    with pytest.raises(GeometryError, match=message) as info:
        Geometry.from_poni(path)
    assert str(path) in str(info.value)


def test_missing_poni_file_is_named(tmp_path) -> None:
    with pytest.raises(GeometryError, match="cannot read PONI file .*nothere.poni"):
        Geometry.from_poni(tmp_path / "nothere.poni")


def test_bad_geometry_parameters() -> None:
    with pytest.raises(GeometryError, match="dist"):
        Geometry(dist=0, poni1=0, poni2=0, detector="Pilatus1M")
    with pytest.raises(GeometryError, match="rot2"):
        Geometry(dist=0.1, poni1=0, poni2=0, rot2="x", detector="Pilatus1M")  # type: ignore[arg-type]
    with pytest.raises(GeometryError, match="wavelength"):
        Geometry(dist=0.1, poni1=0, poni2=0, wavelength=-1, detector="Pilatus1M")
    with pytest.raises(GeometryError, match="pixel size"):
        detector_from_name("Pilatus1M", {"pixel1": 1e-4, "pixel2": 1e-4})


def test_geometry_key_is_stable_and_discriminating() -> None:
    a = Geometry(dist=0.1, poni1=0.01, poni2=0.02, detector="Pilatus1M", wavelength=1e-10)
    b = Geometry(dist=0.1, poni1=0.01, poni2=0.02, detector="Pilatus1M", wavelength=1e-10)
    c = Geometry(dist=0.1, poni1=0.01, poni2=0.0200001, detector="Pilatus1M", wavelength=1e-10)
    assert a.key() == b.key() != c.key()
