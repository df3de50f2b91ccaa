"""``reduction=xpcs`` end to end through the real ``xreduce run`` (backend=local) on BLISS scans of
synthetic speckle (bitshuffle-LZ4 lima files, tests/xpcs_speckle.py): the master's g2 against the
direct computation on the raw frames and against the known answer, the delays in seconds from the
scan's acquisition parameters, two-time against its formula, the preview, and resume."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
from campaign_helpers import plugin_env
from xpcs_speckle import direct_g2, fit_g2, g2_model, speckle_frames

from reduction.azint.detectors import Detector
from reduction.azint.geometry import Geometry
from reduction.demo.bliss_writer import ScanSpec, write_dataset
from reduction.xpcs.multitau import delays

SHAPE = (40, 40)
N_FRAMES, MODES = 3000, 2
N_DYN, PER = 3, 3
EXPO, LATENCY = 0.002, 0.0005
TT_FRAMES = (0, 400)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("xpcs")
    geo = Geometry(dist=5.0, poni1=20 * 75e-6, poni2=20 * 75e-6, wavelength=1e-10,
                   detector=Detector("Detector", 75e-6, 75e-6, SHAPE))
    poni = root / "geometry.poni"
    poni.write_text(geo.to_poni(), encoding="utf-8")
    q = geo.radial("q_nm^-1")
    r_px = np.hypot(*np.meshgrid(np.arange(SHAPE[0]) + 0.5 - 20, np.arange(SHAPE[1]) + 0.5 - 20, indexing="ij"))
    lo, hi = float(q[np.abs(r_px - 4).argmin() // SHAPE[1], 20]), float(q[0, 20]) * 0.97
    fine = np.linspace(lo, hi, N_DYN * PER + 1)
    sub = np.searchsorted(fine, q, side="right") - 1
    inside = (q >= lo) & (q < hi)
    ring = np.where(inside, sub // PER, -1)
    static = np.where(inside, sub, -1)
    q_ring = (np.linspace(lo, hi, N_DYN + 1)[:-1] + np.linspace(lo, hi, N_DYN + 1)[1:]) / 2
    tau_q = 30.0 * (q_ring[0] / q_ring) ** 2  # τc = τ0/q², frames
    means = np.linspace(0.05, 1.0, N_DYN * PER)
    frames = speckle_frames(np.where(inside, means[np.clip(static, 0, None)], 0.2),
                            np.where(inside, tau_q[np.clip(ring, 0, None)], 5.0), N_FRAMES, MODES, seed=7)
    raw = root / "RAW_DATA" / "speckle" / "speckle_0001" / "speckle_0001.h5"
    write_dataset(raw, [ScanSpec(frames)], frames_per_file=500)
    with h5py.File(raw, "r+") as f:  # as BLISS writes a lima detector's acquisition
        acq = f["1.1/instrument/pilatus"].create_group("acq_parameters")
        acq["acq_expo_time"], acq["acq_latency_time"] = EXPO, LATENCY
    out = root / "out"
    args = ["campaign=demo", f"campaign.raw_data={root / 'RAW_DATA'}", "campaign.monitor=null", "reduction=xpcs",
            f"reduction.poni={poni}", f"reduction.dynamic_q.npt={N_DYN}", f"reduction.dynamic_q.range=[{lo},{hi}]",
            f"reduction.static_per_dynamic={PER}", "reduction.twotime.enabled=true", "reduction.twotime.q_bins=[1]",
            f"reduction.twotime.frames=[{TT_FRAMES[0]},{TT_FRAMES[1]}]", f"campaign.output={out}", "backend=local"]
    first = _xreduce("run", *args)
    return {"frames": frames, "static": static, "ring": ring, "tau_q": tau_q, "out": out, "args": args,
            "first": first}


def _xreduce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpc.cli", *args], capture_output=True, text=True, timeout=600,
                          env=plugin_env())


def _entry(campaign: dict) -> h5py.Group:
    (master,) = campaign["out"].glob("*.nxs")
    return h5py.File(master, "r")["speckle_0001_1.1"]


def test_run_writes_g2_equal_to_the_direct_computation(campaign: dict) -> None:
    assert campaign["first"].returncode == 0, campaign["first"].stdout + campaign["first"].stderr
    entry = _entry(campaign)
    assert entry["definition"][()] == b"NXxpcs"
    data = entry["data"]
    d, _ = delays(N_FRAMES)
    np.testing.assert_array_equal(data["delay_difference"][()], d)
    np.testing.assert_allclose(data["delay"][()], d * (EXPO + LATENCY), rtol=1e-12)
    assert entry["instrument/detector/frame_time"][()] == pytest.approx(EXPO + LATENCY)
    inside = campaign["static"].ravel() >= 0
    g2, err = direct_g2(campaign["frames"].reshape(N_FRAMES, -1)[:, inside], campaign["static"].ravel()[inside],
                        np.repeat(np.arange(N_DYN), PER), N_DYN)
    assert np.abs(data["g2"][()] - g2).max() <= 1e-6
    assert np.abs(data["g2_err"][()] - err).max() <= 1e-6
    np.testing.assert_array_equal(entry["instrument/masks/dynamic_roi_map"][()], campaign["ring"] + 1)
    assert data["frame_average"].shape == SHAPE
    average = data["frame_average"][()]
    used = campaign["static"] >= 0
    np.testing.assert_allclose(average[used], campaign["frames"].mean(axis=0)[used], rtol=1e-12)
    assert np.isnan(average[~used]).all()  # pixels outside the q partition are never read


def test_g2_has_the_known_answer(campaign: dict) -> None:
    data = _entry(campaign)["data"]
    products = _entry(campaign)["multitau/products"][()]
    d, level = delays(N_FRAMES)
    for q in range(N_DYN):
        tau = campaign["tau_q"][q]
        baseline, beta, tau_c = fit_g2(d, level, data["g2"][:, q], data["g2_err"][:, q], tau)
        assert abs(tau_c / tau - 1) <= 0.05 and abs(beta - 1 / MODES) <= 0.01, (q, tau_c, tau, beta)
        assert abs(baseline - 1) <= 1e-3, (q, baseline)
        truth = g2_model(d, level, 1.0, 1 / MODES, tau)
        z = np.abs(data["g2"][:, q] - truth) / data["g2_err"][:, q]
        assert (z[products >= 16] <= 5).all(), (q, z.max())


def test_twotime_matches_its_formula(campaign: dict) -> None:
    entry = _entry(campaign)
    c = entry["twotime/two_time_corr_func"][0]
    assert c.shape == (TT_FRAMES[1] - TT_FRAMES[0],) * 2
    x = campaign["frames"][TT_FRAMES[0]:TT_FRAMES[1]].reshape(TT_FRAMES[1] - TT_FRAMES[0], -1).astype(np.float64)
    static = campaign["static"].ravel()
    for s in range(PER):  # static bins of dynamic bin 1
        mean = x[:, static == s].mean(axis=1)
        mean[mean <= 0] = 1
        x[:, static == s] /= mean[:, None]
    x = x[:, campaign["ring"].ravel() == 0]
    norm = x.sum(axis=1)
    norm[norm <= 0] = 1
    ref = (x @ x.T) * x.shape[1] / np.outer(norm, norm)
    upper = np.triu(np.ones(c.shape, dtype=bool))
    assert np.abs(c[upper] - ref[upper]).max() <= 1e-4
    assert np.isnan(c[~upper]).all()


def test_preview_and_resume(campaign: dict) -> None:
    pngs = list(campaign["out"].glob("*.png"))
    assert pngs and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (chunk,) = campaign["out"].glob("chunks/*.h5")
    before = chunk.stat().st_mtime_ns
    again = _xreduce("run", *campaign["args"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert chunk.stat().st_mtime_ns == before  # done and valid: not reduced again


def test_master_entry_validates_against_nxxpcs(campaign: dict) -> None:
    """nexusformat finds nothing; pynxtools finds nothing but its own contradiction on the NX_INT
    attribute baseline_reference (an integer fails its enumeration ['0', '1'], the string '1' its type)."""
    from nexus_validation import nexusformat_problems, pynxtools_problems

    (master,) = campaign["out"].glob("*.nxs")
    assert nexusformat_problems(master, "/speckle_0001_1.1", "NXxpcs") == []
    problems = [p for p in pynxtools_problems(master, "/speckle_0001_1.1", "NXxpcs")
                if not p.startswith("pynxtools: InvalidEnum at /speckle_0001_1.1/twotime/two_time_corr_func/"
                                    "@baseline_reference")]
    assert problems == []
