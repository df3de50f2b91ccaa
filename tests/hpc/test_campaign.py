"""End to end on generated BLISS-layout data, as a user runs it: `xreduce run / status / merge`.

Real files everywhere (bitshuffle-LZ4 lima files behind VDS, PONI, mask, monitor); the only
thing made small is the detector, so that the whole campaign runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from bliss_helpers import finish_scan
from campaign_helpers import campaign_overrides, small_experiment
from nexus_validation import validate_file

from hpc.cli import main
from reduction import Geometry, Integrator
from reduction.demo.bliss_writer import ScanSpec, write_dataset
from reduction.io import bliss
from reduction.io.images import load_image

N_FRAMES = 12


@pytest.fixture()
def experiment(tmp_path):
    """2 datasets × 2 scans × 12 frames of a Pilatus100k, in the BLISS layout."""
    return small_experiment(tmp_path, n_frames=N_FRAMES, frames_per_file=5)


def overrides(exp, out: Path, *extra: str) -> list[str]:
    return campaign_overrides(exp, out, *extra, frames_per_chunk=5, npt=200)


def checksums(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.h5"))}


def status_json(out: Path, capsys) -> dict:
    capsys.readouterr()
    main(["status", str(out), "--json"])
    return json.loads(capsys.readouterr().out)


def master_of(out: Path) -> Path:
    masters = sorted(out.glob("*.nxs"))
    assert len(masters) == 1, masters
    return masters[0]


def test_run_reduces_everything_like_the_integrator(experiment, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    before = checksums(experiment.raw_data)
    assert main(["run", *overrides(experiment, out)]) == 0
    assert checksums(experiment.raw_data) == before, "raw data must never change"
    # engine=auto takes OpenCL where a device exists (PoCL's CPU device in CI), and says so
    assert "frames/s; engine opencl on " in capsys.readouterr().out

    master = master_of(out)
    assert master.name == "ihch0000_id31_20261124.nxs" and master.with_suffix(".png").is_file()
    problems = validate_file(master)
    assert len(problems) == 4 and not any(problems.values()), problems

    # the master holds exactly what the public API gives on the same frames
    geo = Geometry.from_poni(experiment.poni)
    integ = Integrator(geo, mask=load_image(experiment.mask), cache_dir=False)
    dataset = experiment.datasets[1]
    frames = bliss.read_frames(dataset, "2.1", "pilatus", 0, N_FRAMES)
    monitor = bliss.read_counter(dataset, "2.1", "mon", 0, N_FRAMES)
    expected = integ.integrate1d(frames, npt=200, unit="q_nm^-1", normalization=monitor)
    with h5py.File(master, "r") as f:
        entry = f[f"{dataset.stem}_2.1"]
        assert entry["definition"][()].decode() == "NXazint1d"
        data = entry[entry.attrs["default"]]
        np.testing.assert_allclose(data["I"][()], expected.intensity, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(data["I_errors"][()], expected.sigma, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(data["radial_axis"][()], expected.radial, rtol=1e-12)
        assert entry["reduction/input/engine"][()].decode().startswith("opencl on 0:"), "provenance: the engine"

    report = status_json(out, capsys)
    assert report["counts"] == {"done": 12, "failed": 0, "pending": 0, "queued": 0, "running": 0}
    assert report["frames"] == {"total": 4 * N_FRAMES, "done": 4 * N_FRAMES}

    # moving the output folder keeps the master readable (relative VDS paths)
    moved = tmp_path / "moved"
    out.rename(moved)
    with h5py.File(master_of(moved), "r") as f:
        entry = f[f"{dataset.stem}_2.1"]
        np.testing.assert_allclose(entry[entry.attrs["default"]]["I"][()], expected.intensity, rtol=1e-6)


def test_rerun_skips_done_chunks_and_a_changed_parameter_reruns(experiment, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["run", *overrides(experiment, out)]) == 0
    chunks = {p: p.stat().st_mtime_ns for p in (out / "chunks").glob("*.h5")}
    assert len(chunks) == 12
    capsys.readouterr()
    assert main(["run", *overrides(experiment, out)]) == 0
    assert "12 already done, 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "chunks").glob("*.h5")} == chunks, "no chunk rewritten"

    assert main(["run", *overrides(experiment, out, "reduction.npt=150")]) == 0
    assert "0 already done, 12 to run" in capsys.readouterr().out
    with h5py.File(master_of(out), "r") as f:
        entry = f[f"{experiment.datasets[0].stem}_1.1"]
        assert entry[entry.attrs["default"]]["I"].shape == (N_FRAMES, 150)


def test_unfinished_scan_is_pending_then_picked_up(experiment, tmp_path, capsys) -> None:
    rng = np.random.default_rng(3)
    frames = rng.poisson(50, size=(6, 195, 487)).astype(np.int32)
    dataset = experiment.raw_data / "calibrants" / "calibrants_0003" / "calibrants_0003.h5"
    write_dataset(dataset, [ScanSpec(frames, monitor=np.full(6, 1e5)),
                            ScanSpec(frames, monitor=np.full(6, 1e5), finished=False)])
    out = tmp_path / "out"
    assert main(["run", *overrides(experiment, out)]) == 0
    report = status_json(out, capsys)
    assert report["unfinished_scans"] == [{"dataset": str(dataset), "scan": "2.1",
                                           "reason": "no end_time: still running"}]
    finish_scan(dataset, "2.1")
    assert main(["run", *overrides(experiment, out)]) == 0
    report = status_json(out, capsys)
    assert report["unfinished_scans"] == [] and report["counts"]["done"] == 12 + 2 + 2
    assert not any(validate_file(master_of(out)).values())


def _break(experiment) -> dict[str, str]:
    """Damage four scans in four different ways; return scan key -> what status must name."""
    d1, d2 = experiment.datasets
    lima = sorted((d1.parent / "scan0001").glob("pilatus_*.h5"))
    lima[1].unlink()  # frames 5-9 of scan 1.1: a missing lima file
    truncated = sorted((d1.parent / "scan0002").glob("pilatus_*.h5"))[0]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    with h5py.File(d2, "a") as f:
        del f["1.1/measurement/pilatus"]  # a scan without the detector
        mon = f["2.1/measurement/mon"]
        values = mon[()]
        values[7] = 0.0  # a zero monitor in frames 5-9 of scan 2.1
        mon[...] = values
    return {f"{d1}::1.1": lima[1].name, f"{d1}::2.1": truncated.name, f"{d2}::1.1": "no detector 'pilatus'",
            f"{d2}::2.1": "monitor 'mon' is 0.0 at frame 7"}


def test_bad_inputs_fail_only_their_chunks(experiment, tmp_path, capsys) -> None:
    expected = _break(experiment)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["run", *overrides(experiment, out)]) == 1
    printed = capsys.readouterr().out
    assert "chunks failed" in printed

    report = status_json(out, capsys)
    failed = [c for c in report["chunks"] if c["state"] == "failed"]
    for c in failed:
        key = f"{c['dataset']}::{c['scan']}"
        assert expected[key] in c["reason"], (key, c["reason"])
        # a scan planning finds unreducible (no detector) is failed for good, never given to a worker,
        # so it has no error record; the others failed in a worker, which wrote one
        assert (out / "chunks" / f"{c['id']}.error.json").is_file() == (not c["permanent"]), c
    assert [c["scan"] for c in failed if c["permanent"]] == ["1.1"]
    assert {f"{c['dataset']}::{c['scan']}" for c in failed} == set(expected)
    # the scan without detector becomes one chunk (10 in all); each other breakage costs one chunk
    assert len(failed) == 4 and report["counts"] == {"done": 6, "failed": 4, "pending": 0, "queued": 0, "running": 0}

    d1 = experiment.datasets[0]
    with h5py.File(master_of(out), "r") as f:
        data = f[f"{d1.stem}_1.1"][f[f"{d1.stem}_1.1"].attrs["default"]]["I"][()]
        assert np.isnan(data[5:10]).all(), "a missing chunk is NaN, never zeros"
        assert np.isfinite(data[:5]).all() and np.isfinite(data[10:]).all()
    assert main(["status", str(out)]) == 1


def test_copy_mode_and_2d_cakes(experiment, tmp_path) -> None:
    out = tmp_path / "out"
    extra = ("reduction=azint2d", "reduction.npt_rad=60", "reduction.npt_azim=36", "merge.mode=copy")
    code = main(["run", *[o for o in overrides(experiment, out) if o != "reduction.npt=200"], *extra])
    assert code == 0
    master = master_of(out)
    for chunk in (out / "chunks").glob("*.h5"):
        os.unlink(chunk)  # a copy is self-contained
    with h5py.File(master, "r") as f:
        entry = f[f"{experiment.datasets[0].stem}_1.1"]
        assert entry["definition"][()].decode() == "NXazint2d"
        cake = entry[entry.attrs["default"]]["I"][()]
        assert cake.shape == (N_FRAMES, 36, 60) and np.isfinite(cake).any()
    assert not any(validate_file(master).values())


@pytest.mark.parametrize(("override", "message"), [
    ("campaign.raw_data=/nonexistent/RAW_DATA", "campaign.raw_data"),
    ("reduction.npt=-3", "reduction.npt"),
    ("reduction.unit=q_fm", "reduction.unit"),
    ("campaign.bogus=1", "bogus"),
])
def test_bad_config_exits_2_before_anything_runs(experiment, tmp_path, capsys, override, message) -> None:
    out = tmp_path / "out"
    assert main(["run", *overrides(experiment, out), override]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_poni_content_exits_2(experiment, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.poni"
    broken.write_text("Detector: Pilatus100k\nDistance: oops\n")
    out = tmp_path / "out"
    assert main(["run", *overrides(experiment, out), f"reduction.poni={broken}"]) == 2
    assert "Distance = 'oops' is not a number" in capsys.readouterr().err


def test_plan_then_parallel_workers(experiment, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["plan", *overrides(experiment, out)]) == 0
    printed = capsys.readouterr().out
    assert "total" in printed and f"{4 * N_FRAMES}" in printed and "plan.json" in printed
    assert main(["run", *overrides(experiment, out, "backend.workers=2")]) == 0
    serial = tmp_path / "serial"
    assert main(["run", *overrides(experiment, serial)]) == 0
    with h5py.File(master_of(out), "r") as a, h5py.File(master_of(serial), "r") as b:
        for name in a:
            np.testing.assert_allclose(a[name]["data"]["I"][()], b[name]["data"]["I"][()], rtol=1e-6)


def test_wavelength_from_the_scan_when_the_poni_has_none(experiment, tmp_path) -> None:
    poni = tmp_path / "no-wavelength.poni"
    poni.write_text("\n".join(line for line in experiment.poni.read_text().splitlines()
                              if not line.startswith("Wavelength")) + "\n")
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert main(["run", *overrides(experiment, out, f"reduction.poni={poni}")]) == 0
    assert main(["run", *overrides(experiment, ref)]) == 0
    with h5py.File(master_of(out), "r") as a, h5py.File(master_of(ref), "r") as b:
        name = f"{experiment.datasets[0].stem}_1.1"
        np.testing.assert_allclose(a[name]["data"]["radial_axis"][()], b[name]["data"]["radial_axis"][()],
                                   rtol=1e-9)
        np.testing.assert_allclose(a[name]["data"]["I"][()], b[name]["data"]["I"][()], rtol=1e-6)


def test_r_mm_on_a_tilted_detector_is_refused_up_front(experiment, tmp_path, capsys) -> None:
    assert "Rot1: 0.01" in experiment.poni.read_text()  # the demo detector is slightly tilted
    out = tmp_path / "out"
    assert main(["run", *overrides(experiment, out, "reduction.unit=r_mm")]) == 2
    assert "r_mm needs an untilted detector" in capsys.readouterr().err
    assert not (out / "chunks").exists()
