"""The q partition's less common paths: an APS-style qmap file (good, of the wrong shape, with a static
bin across two dynamic bins) and φ sectors (bins split by azimuth), against known answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from campaign_helpers import plugin_env
from xpcs_speckle import direct_g2, fit_g2, speckle_frames

from reduction.azint.detectors import Detector
from reduction.azint.geometry import Geometry
from reduction.demo.bliss_writer import ScanSpec, write_dataset
from reduction.errors import RawDataError
from reduction.xpcs.chunkfile import read_partition, read_sums
from reduction.xpcs.multitau import MultiTau, normalise
from reduction.xpcs.partition import partition_from_geometry, partition_from_qmap
from reduction.xpcs.step import XpcsStep

SHAPE = (24, 24)
PIXEL = 75e-6


def _geometry(shape: tuple[int, int] = SHAPE) -> Geometry:
    """The beam at the detector's centre, no tilt: χ = atan2(row offset, column offset)."""
    return Geometry(dist=2.0, poni1=shape[0] / 2 * PIXEL, poni2=shape[1] / 2 * PIXEL, wavelength=1e-10,
                    detector=Detector("Detector", PIXEL, PIXEL, shape))


def _offsets(shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) offsets of the pixel centres from the beam, in pixels."""
    return np.meshgrid(np.arange(shape[0]) + 0.5 - shape[0] / 2, np.arange(shape[1]) + 0.5 - shape[1] / 2,
                       indexing="ij")


def _aps_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 dynamic rings of 2 static sub-rings each (APS numbering: 1-based, 0 = unused), and a mask
    (1 = used) taking out one column: a q map as APS's tools write it."""
    y, x = _offsets()
    r = np.hypot(y, x)
    sub = np.floor((r - 3) / 1.5).astype(int)  # 6 sub-rings of 1.5 px from r = 3 px
    inside = (sub >= 0) & (sub < 6)
    static = np.where(inside, sub + 1, 0)
    dynamic = np.where(inside, sub // 2 + 1, 0)
    mask = np.ones(SHAPE, dtype=np.uint8)
    mask[:, 5] = 0
    return dynamic, static, mask


def _write_qmap(path: Path, dynamic: np.ndarray, static: np.ndarray, mask: np.ndarray | None) -> Path:
    with h5py.File(path, "w") as f:
        f["qmap/dynamic_roi_map"] = dynamic.astype(np.uint32)
        f["qmap/static_roi_map"] = static.astype(np.uint32)
        if mask is not None:
            f["qmap/mask"] = mask
    return path


def test_a_qmap_file_defines_the_bins(tmp_path) -> None:
    dynamic, static, mask = _aps_maps()
    geo = _geometry()
    part = partition_from_qmap(str(_write_qmap(tmp_path / "qmap.h5", dynamic, static, mask)), geo)
    used = (static > 0) & (mask != 0)
    np.testing.assert_array_equal(part.static_map, np.where(used, static, 0))
    np.testing.assert_array_equal(part.dynamic_map, np.where(used, dynamic, 0))
    assert (part.n_dynamic, part.n_static) == (3, 6)
    np.testing.assert_array_equal(part.static_to_dynamic, [0, 0, 1, 1, 2, 2])
    assert not np.isin(np.flatnonzero(~used.ravel()), part.pixels).any()  # /qmap/mask = 0: never read
    q = geo.radial("q_nm^-1")
    for b in range(3):
        assert part.dynamic_q[b] == pytest.approx(q[used & (dynamic == b + 1)].mean(), rel=1e-12)
    for s in range(6):
        assert part.static_q[s] == pytest.approx(q[used & (static == s + 1)].mean(), rel=1e-12)
    assert (np.diff(part.dynamic_q) > 0).all()
    # a user mask takes out more pixels
    user = np.zeros(SHAPE, dtype=np.uint8)
    user[0:12, 0:12] = 1
    fewer = partition_from_qmap(str(tmp_path / "qmap.h5"), geo, mask=user)
    np.testing.assert_array_equal(fewer.static_map, np.where(used & (user == 0), static, 0))


def test_a_static_bin_across_two_dynamic_bins_is_refused(tmp_path) -> None:
    dynamic, static, mask = _aps_maps()
    static = static.copy()
    static[static == 3] = 2  # static bin 2 now has pixels of dynamic bins 1 and 2
    path = _write_qmap(tmp_path / "bad.h5", dynamic, static, mask)
    with pytest.raises(RawDataError) as info:
        partition_from_qmap(str(path), _geometry())
    message = str(info.value)
    assert str(path) in message and "static bin 2" in message and "dynamic bins 1, 2" in message


@pytest.mark.parametrize("name", ["dynamic_roi_map", "static_roi_map", "mask"])
def test_a_qmap_of_the_wrong_shape_is_refused(tmp_path, name: str) -> None:
    maps = dict(zip(("dynamic_roi_map", "static_roi_map", "mask"), _aps_maps()))
    maps[name] = maps[name][:20]
    path = _write_qmap(tmp_path / "short.h5", maps["dynamic_roi_map"], maps["static_roi_map"], maps["mask"])
    with pytest.raises(RawDataError) as info:
        partition_from_qmap(str(path), _geometry())
    assert str(path) in str(info.value) and f"/qmap/{name} has shape (20, 24)" in str(info.value)
    assert "(24, 24)" in str(info.value)


def test_a_qmap_without_its_maps_is_refused(tmp_path) -> None:
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["qmap/dynamic_roi_map"] = np.ones(SHAPE, dtype=np.uint32)
    with pytest.raises(RawDataError, match=r"empty\.h5 has no /qmap/static_roi_map"):
        partition_from_qmap(str(tmp_path / "empty.h5"), _geometry())
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(RawDataError, match=r"cannot read qmap file .*text\.h5"):
        partition_from_qmap(str(tmp_path / "text.h5"), _geometry())


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> dict:
    """One BLISS scan of Poisson frames (bitshuffle-LZ4) with its PONI."""
    root = tmp_path_factory.mktemp("qmap")
    poni = root / "geometry.poni"
    poni.write_text(_geometry().to_poni(), encoding="utf-8")
    rng = np.random.default_rng(11)
    frames = rng.poisson(rng.uniform(0.05, 3.0, SHAPE), (300, *SHAPE)).astype(np.uint16)
    raw = write_dataset(root / "RAW_DATA" / "s" / "s_0001" / "s_0001.h5", [ScanSpec(frames)], frames_per_file=100)
    return {"root": root, "poni": poni, "frames": frames, "raw": raw}


def test_a_qmap_file_through_the_step(scan: dict, tmp_path) -> None:
    """The step correlates exactly the qmap's bins: g2 equal to the direct computation on them."""
    dynamic, static, mask = _aps_maps()
    qmap = _write_qmap(tmp_path / "qmap.h5", dynamic, static, mask)
    step = XpcsStep({"kind": "xpcs", "poni": str(scan["poni"]), "qmap": str(qmap)})
    out = tmp_path / "chunk.h5"
    chunk = {"id": "c", "dataset": str(scan["raw"]), "scan": "1.1", "detector": "pilatus", "start": 0, "stop": 300}
    assert step(chunk, out, config_hash="h", config_json="{}") == 300
    with h5py.File(out, "r") as f:
        sums, part, frame_sum = read_sums(f), read_partition(f), f["frame_sum"][()]
    used = (static > 0) & (mask != 0)
    np.testing.assert_array_equal(part.static_map, np.where(used, static, 0))
    got = normalise(sums, part.static_to_dynamic, part.n_dynamic)
    flat = used.ravel()
    g2, err = direct_g2(scan["frames"].reshape(300, -1)[:, flat].astype(np.int64), static.ravel()[flat] - 1,
                        np.array([0, 0, 1, 1, 2, 2]), 3)
    assert np.abs(got.g2 - g2).max() <= 1e-6 and np.abs(got.g2_err - err).max() <= 1e-6
    assert np.isnan(frame_sum[~used]).all()  # pixels outside the q map are never read
    np.testing.assert_array_equal(frame_sum[used], scan["frames"].sum(axis=0)[used])


def test_a_qmap_of_the_wrong_shape_exits_2_through_the_cli(scan: dict, tmp_path) -> None:
    dynamic, static, mask = (m[:, :20] for m in _aps_maps())
    qmap = _write_qmap(tmp_path / "narrow.h5", dynamic, static, mask)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "hpc.cli", "run", "campaign=demo",
                           f"campaign.raw_data={scan['root'] / 'RAW_DATA'}", "campaign.monitor=null", "reduction=xpcs",
                           f"reduction.poni={scan['poni']}", f"reduction.qmap={qmap}", f"campaign.output={out}",
                           "backend=local"], capture_output=True, text=True, timeout=300, env=plugin_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"qmap file {qmap}: /qmap/dynamic_roi_map has shape (24, 20), the detector is (24, 24)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(out.glob("chunks/*.h5")) and not list(out.glob("*.nxs"))  # nothing ran


def test_phi_sectors_split_the_rings_by_azimuth() -> None:
    """Known answer: with the beam at the centre, χ = atan2(row offset, column offset); 4 sectors of
    90° from −180° are the four quadrants, each ring's static sub-rings follow its sectors."""
    geo = _geometry()
    y, x = _offsets()
    q = geo.radial("q_nm^-1")
    r = np.hypot(y, x)
    lo, hi = float(q[r < 3].max()), float(q[r < 11].max())  # rings between 3 and 11 px
    part = partition_from_geometry(geo, npt=2, q_range=(lo, hi), unit="q_nm^-1", static_per_dynamic=2, phi_npt=4)
    chi = np.degrees(np.arctan2(y, x))
    sector = np.floor((chi + 180) / 90).astype(int).clip(0, 3)
    fine = np.floor((q - lo) / (hi - lo) * 4).astype(int)
    inside = (q >= lo) & (q < hi)
    np.testing.assert_array_equal(part.dynamic_map, np.where(inside, (fine // 2) * 4 + sector + 1, 0))
    np.testing.assert_array_equal(part.static_map, np.where(inside, fine * 4 + sector + 1, 0))
    np.testing.assert_allclose(part.dynamic_phi, [-135, -45, 45, 135] * 2, atol=1e-6)
    np.testing.assert_allclose(part.dynamic_q, np.repeat([lo + (hi - lo) / 4, lo + 3 * (hi - lo) / 4], 4))
    # each static bin lies in one dynamic bin: its ring and its sector
    np.testing.assert_array_equal(part.static_to_dynamic, [(s // 4 // 2) * 4 + s % 4 for s in range(16)])
    quadrant = {0: (y < 0) & (x < 0), 1: (y < 0) & (x > 0), 2: (y > 0) & (x > 0), 3: (y > 0) & (x < 0)}
    for a, where in quadrant.items():
        assert ((part.dynamic_map - 1) % 4 == a)[inside & where].all()
    # a φ range keeps only the pixels inside it: two sectors of 45° in [0°, 90°)
    half = partition_from_geometry(geo, npt=1, q_range=(lo, hi), unit="q_nm^-1", static_per_dynamic=1, phi_npt=2,
                                   phi_range=(0.0, 90.0))
    np.testing.assert_array_equal(half.dynamic_map > 0, inside & (chi >= 0) & (chi < 90))
    np.testing.assert_array_equal(half.dynamic_map[half.dynamic_map > 0],
                                  np.where(chi < 45, 1, 2)[half.dynamic_map > 0])
    np.testing.assert_allclose(half.dynamic_phi, [22.5, 67.5])


def test_phi_sectors_see_anisotropic_dynamics() -> None:
    """Known answer on speckle whose correlation time depends on the azimuth (as under flow): each
    sector's fitted τc is its own, within 5 %."""
    shape, modes, N = (40, 40), 2, 3000
    geo = _geometry(shape)
    y, x = _offsets(shape)
    q = geo.radial("q_nm^-1")
    r = np.hypot(y, x)
    lo, hi = float(q[r < 4].max()), float(q[r < 19].max())
    part = partition_from_geometry(geo, npt=1, q_range=(lo, hi), unit="q_nm^-1", static_per_dynamic=3, phi_npt=4)
    tau_sector = np.array([5.0, 10.0, 20.0, 40.0])
    used = part.dynamic_map > 0
    tau = np.where(used, tau_sector[(part.dynamic_map - 1).clip(0)], 5.0)
    frames = speckle_frames(np.full(shape, 0.5), tau, N, modes, seed=3)
    mt = MultiTau(part.static_index, part.n_static, N)
    series = frames.reshape(N, -1)[:, part.pixels]
    for b in range(0, N, 256):
        mt.add(series[b:b + 256])
    sums = mt.result()
    g = normalise(sums, part.static_to_dynamic, part.n_dynamic)
    for a in range(4):
        _, beta, tau_c = fit_g2(sums.delay, sums.level, g.g2[:, a], g.g2_err[:, a], tau_sector[a])
        assert abs(tau_c / tau_sector[a] - 1) <= 0.05, (a, tau_c)
        assert abs(beta - 1 / modes) <= 0.02, (a, beta)
