"""The OpenCL correlator (PoCL in CI) against the numpy one: the same multi-tau sums bit for bit on
integer frames (float64 sums of integers are exact), float frames within float64 rounding, two-time
tiles within 1e-6; through the step, pixels outside the q map never reach the device; and the
engine choice (opencl refuses, auto falls back)."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from reduction.azint.detectors import Detector
from reduction.azint.geometry import Geometry
from reduction.demo.bliss_writer import ScanSpec, write_dataset
from reduction.errors import EngineUnavailable
from reduction.xpcs.multitau import MultiTau, normalise
from reduction.xpcs.step import XpcsStep
from reduction.xpcs.twotime import twotime_tiles

pytestmark = pytest.mark.opencl

SUMS = ("G2", "IP", "IF", "pixels", "g2_pix", "g2_pix2", "intensity", "frame_sum", "products")


@pytest.fixture(scope="module")
def context():
    from reduction.xpcs.opencl import open_context

    return open_context("auto")  # PoCL here; a failure to find one fails the test (never a skip)


def _both(context, frames: np.ndarray, static: np.ndarray, block: int, dpl: int = 4):
    from reduction.xpcs.opencl import OpenCLMultiTau

    n, S = len(frames), int(static.max()) + 1
    ours, theirs = MultiTau(static, S, n, dpl), OpenCLMultiTau(context, static, S, n, dpl)
    for b in range(0, n, block):
        ours.add(frames[b:b + block])
        theirs.add(frames[b:b + block])
    return ours.result(), theirs.result()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int32", "int64"])
@pytest.mark.parametrize("block", [1, 7, 64, 517])
def test_integer_frames_give_the_same_bits(context, dtype: str, block: int) -> None:
    rng = np.random.default_rng(5)
    P = 203  # not a whole number of 8-pixel vectors: the padding is dropped
    frames = rng.poisson(rng.uniform(0.05, 20.0, P), (517, P)).astype(dtype)
    static = rng.integers(0, 9, P)
    ours, theirs = _both(context, frames, static, block)
    assert ours.G2.any()
    for name in SUMS:
        np.testing.assert_array_equal(getattr(theirs, name), getattr(ours, name), err_msg=name)


def test_a_long_series_many_levels_and_dpl(context) -> None:
    rng = np.random.default_rng(6)
    frames = rng.poisson(0.3, (5000, 40)).astype(np.uint16)
    static = np.arange(40) % 4
    for dpl in (2, 4, 8):
        ours, theirs = _both(context, frames, static, 300, dpl)
        assert ours.level.max() >= 8
        for name in SUMS:
            np.testing.assert_array_equal(getattr(theirs, name), getattr(ours, name), err_msg=f"{name} dpl={dpl}")


def test_float_frames_agree_within_float64_rounding(context) -> None:
    """Non-integer frames: the sums differ by the order of float64 additions only (stated: ≤ 1e-12
    relative on the sums, ≤ 1e-12 on g2)."""
    rng = np.random.default_rng(7)
    frames = rng.gamma(2.0, 0.7, (700, 64)).astype(np.float32)
    static = np.arange(64) % 8
    ours, theirs = _both(context, frames, static, 50)
    np.testing.assert_allclose(theirs.G2, ours.G2, rtol=1e-12)
    a, b = normalise(ours, np.arange(8) // 2, 4), normalise(theirs, np.arange(8) // 2, 4)
    assert np.abs(a.g2 - b.g2).max() <= 1e-12 and np.abs(a.g2_err - b.g2_err).max() <= 1e-12


@pytest.mark.parametrize("tile", [7, 64, 1000])
def test_twotime_tiles_agree(context, tile: int) -> None:
    """Products of float32 numbers are exact in float64: only the order of the sums differs."""
    rng = np.random.default_rng(8)
    x = (rng.poisson(0.5, (211, 301)) / 0.5).astype(np.float32)
    ours = {(i0, j0): c for i0, _, j0, _, c in twotime_tiles(x, tile)}
    theirs = {(i0, j0): c for i0, _, j0, _, c in twotime_tiles(x, tile, context.twotime_product(x))}
    assert ours.keys() == theirs.keys()
    for key, c in ours.items():
        np.testing.assert_array_equal(np.isnan(theirs[key]), np.isnan(c))
        assert np.nanmax(np.abs(theirs[key] - c)) <= 1e-6, key


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> dict:
    """A BLISS scan whose pixels outside the q rings hold the gap marker 65535."""
    root = tmp_path_factory.mktemp("xpcs_opencl")
    shape = (20, 20)
    geo = Geometry(dist=2.0, poni1=10 * 75e-6, poni2=10 * 75e-6, wavelength=1e-10,
                   detector=Detector("Detector", 75e-6, 75e-6, shape))
    (root / "g.poni").write_text(geo.to_poni(), encoding="utf-8")
    rng = np.random.default_rng(9)
    frames = rng.poisson(rng.uniform(0.1, 3.0, shape), (300, *shape)).astype(np.uint16)
    q = geo.radial("q_nm^-1")
    lo, hi = float(np.quantile(q, 0.1)), float(np.quantile(q, 0.8))
    frames[:, (q < lo) | (q >= hi)] = 65535
    raw = write_dataset(root / "RAW_DATA" / "s" / "s_0001" / "s_0001.h5", [ScanSpec(frames)], frames_per_file=100)
    cfg = {"kind": "xpcs", "poni": str(root / "g.poni"), "dynamic_q": {"npt": 3, "range": [lo, hi]},
           "static_per_dynamic": 2, "twotime": {"enabled": True, "q_bins": [1, 3]}}
    chunk = {"id": "c", "dataset": str(raw), "scan": "1.1", "detector": "pilatus", "start": 0, "stop": 300}
    return {"cfg": cfg, "chunk": chunk}


def _chunk(scan: dict, tmp_path, engine: str) -> dict:
    step = XpcsStep({**scan["cfg"], "engine": engine})
    out = tmp_path / f"{engine}.h5"
    step(scan["chunk"], out, config_hash="h", config_json="{}")
    with h5py.File(out, "r") as f:
        return {"engine": f.attrs["engine"], "twotime": f["twotime/C"][()],
                **{name: f[f"multitau/{name}"][()] for name in ("G2", "IP", "IF", "g2_pix", "g2_pix2", "intensity")}}


def test_the_step_on_opencl_matches_numpy(scan: dict, tmp_path) -> None:
    ours, theirs = _chunk(scan, tmp_path, "numpy"), _chunk(scan, tmp_path, "opencl")
    assert ours["engine"] == "numpy (float64)" and theirs["engine"].startswith("opencl on ")
    for name in ("G2", "IP", "IF", "g2_pix", "g2_pix2", "intensity"):
        np.testing.assert_array_equal(theirs[name], ours[name], err_msg=name)
    # the gap markers outside the rings never entered a sum (they would dominate them)
    assert ours["intensity"].max() < 65535 and ours["G2"].max() < 65535.0**2
    upper = ~np.isnan(ours["twotime"])
    np.testing.assert_array_equal(~np.isnan(theirs["twotime"]), upper)
    assert np.abs(theirs["twotime"][upper] - ours["twotime"][upper]).max() <= 1e-6


def test_engine_choice(scan: dict, caplog) -> None:
    with pytest.raises(EngineUnavailable, match="reduction.engine=opencl: no OpenCL device 9:9"):
        XpcsStep({**scan["cfg"], "engine": "opencl", "device": "9:9"})
    with caplog.at_level(logging.WARNING):
        step = XpcsStep({**scan["cfg"], "engine": "auto", "device": "9:9"})
    assert step.engine_used == "numpy (float64)" and "no OpenCL device 9:9" in caplog.text
    assert XpcsStep({**scan["cfg"], "engine": "auto"}).engine_used.startswith("opencl on ")
