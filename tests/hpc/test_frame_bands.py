"""End to end on data written by ESRF's own BLISS test writer (ewoksdata's ``save_bliss_scan``, the one
ewoksxrpd's tests use): its 4-D variant (a band of frames per point, as lima2 writes them) reduced with
``campaign.frame_band`` = all, an index and sum gives exactly what reducing the same frames written as
a 3-D scan gives; its 3-D variant reduces as before; ``plan`` names a band out of range; a value that
is no band exits 2 naming the key."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from ewoksdata.tests.data import save_bliss_scan
from nexus_validation import validate_file

from hpc.cli import main
from reduction.demo.bliss_writer import ScanSpec, demo_geometry, write_dataset

POINTS, BANDS = 5, 3
GEOMETRY = demo_geometry("Pilatus100k")


@pytest.fixture(scope="module")
def poni(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "pilatus100k.poni"
    path.write_text(GEOMETRY.to_poni(), encoding="utf-8")
    return path


def band_images() -> np.ndarray:
    """(band, ny, nx): each band its own counts, so that a wrong band or order shows."""
    rng = np.random.default_rng(15)
    return np.stack([rng.poisson(30.0 * (b + 1), GEOMETRY.shape) for b in range(BANDS)]).astype(np.float64)


def ewoks_scan(folder: Path, image: np.ndarray) -> Path:
    """A BLISS dataset as ewoksdata writes it: detector "p3", a "monitor" counter from 1 to 2 (sequence
    "multiply": frame = image × monitor), lima files of 2 points each."""
    folder.mkdir(parents=True)
    return save_bliss_scan(folder, image, npoints_per_file=2, npoints=POINTS, scannr=1, sequence="multiply",
                           lima_names=("p3",), counter_names=("diode1",), title="loopscan 5 0.1")


def raw_scan(master: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames, monitor) of scan 1.1 as h5py reads them."""
    with h5py.File(master, "r") as f:
        return f["1.1/measurement/p3"][()], f["1.1/measurement/monitor"][()]


def reference_scan(folder: Path, frames: np.ndarray, monitor: np.ndarray) -> Path:
    """The same frames as a 3-D scan written by xreduce's own writer (bitshuffle-LZ4 lima files)."""
    return write_dataset(folder / "ref.h5", [ScanSpec(frames, monitor=monitor)], detector="p3", monitor="monitor",
                         frames_per_file=4)


def reduce(raw: Path, out: Path, poni: Path, *extra: str) -> Path:
    args = ["run", "campaign=demo", "campaign.name=bands", f"campaign.raw_data={raw}", "campaign.detector=p3",
            "campaign.monitor=monitor", f"campaign.output={out}", f"reduction.poni={poni}", "reduction.mask=null",
            "reduction.npt=80", "reduction.engine=numpy", "partition.frames_per_chunk=4", *extra]
    assert main(args) == 0
    (master,) = out.glob("*.nxs")
    return master


def entry_of(master: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """(I, I_errors, monitor) of the master's one entry, and its frame_bands (None when absent)."""
    with h5py.File(master, "r") as f:
        (name,) = list(f)
        entry = f[name]
        data = {"I": entry["data/I"][()], "I_errors": entry["data/I_errors"][()],
                "monitor": entry["monitor/data"][()], "signal": entry["accumulators/signal"][()]}
        bands = None
        if "frame_bands" in entry:
            group = entry["frame_bands"]
            assert group.attrs["NX_class"] == "NXcollection"
            bands = {"point": group["point"][()], "band": group["band"][()],
                     "frame_band": group.attrs["frame_band"], "nbands": group.attrs["nbands"]}
    return data, bands


@pytest.mark.parametrize("band", ["all", 1, "sum"])
def test_4d_frame_bands_reduce_as_the_same_frames_in_3d(tmp_path: Path, poni: Path, band: str | int) -> None:
    master4 = ewoks_scan(tmp_path / "raw4", band_images())
    frames4, monitor = raw_scan(master4)
    assert frames4.shape == (POINTS, BANDS, *GEOMETRY.shape) and monitor.shape == (POINTS,)
    if band == "all":
        frames3, monitor3 = frames4.reshape(-1, *GEOMETRY.shape), np.repeat(monitor, BANDS)
    elif band == "sum":
        frames3, monitor3 = frames4.sum(axis=1), monitor
    else:
        frames3, monitor3 = frames4[:, int(band)], monitor
    reference = reference_scan(tmp_path / "raw3", frames3, monitor3)

    got, bands = entry_of(reduce(tmp_path / "raw4", tmp_path / "out4", poni, f"campaign.frame_band={band}"))
    want, none = entry_of(reduce(reference.parent, tmp_path / "out3", poni))
    assert none is None  # a 3-D scan's entry has no band indices
    assert got["I"].shape == (len(frames3), 80) and np.isfinite(got["I"]).all()
    for key in want:  # bit for bit: the same frames, the same chunks, the same kernel
        assert np.array_equal(got[key], want[key]), key
    np.testing.assert_array_equal(got["monitor"], monitor3)

    assert bands is not None and (bands["frame_band"], bands["nbands"]) == (str(band), BANDS)
    if band == "all":  # acquisition order, point-major
        np.testing.assert_array_equal(bands["point"], np.repeat(np.arange(POINTS), BANDS))
        np.testing.assert_array_equal(bands["band"], np.tile(np.arange(BANDS), POINTS))
    else:
        np.testing.assert_array_equal(bands["point"], np.arange(POINTS))
        np.testing.assert_array_equal(bands["band"], np.full(POINTS, -1 if band == "sum" else band))
    (master,) = (tmp_path / "out4").glob("*.nxs")
    problems = validate_file(master)
    assert problems and not any(problems.values()), problems


def test_ewoksdata_3d_scan_reduces_as_before(tmp_path: Path, poni: Path) -> None:
    master = ewoks_scan(tmp_path / "raw", band_images()[0])
    frames, monitor = raw_scan(master)
    assert frames.shape == (POINTS, *GEOMETRY.shape)
    reference = reference_scan(tmp_path / "ref", frames, monitor)
    got, bands = entry_of(reduce(tmp_path / "raw", tmp_path / "out", poni))
    want, _ = entry_of(reduce(reference.parent, tmp_path / "out_ref", poni))
    assert bands is None
    for key in want:
        assert np.array_equal(got[key], want[key]), key


def test_plan_names_a_band_out_of_range(tmp_path: Path, poni: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ewoks_scan(tmp_path / "raw", band_images())
    args = ["plan", "campaign=demo", "campaign.name=bands", f"campaign.raw_data={tmp_path / 'raw'}",
            "campaign.detector=p3", "campaign.monitor=monitor", f"campaign.output={tmp_path / 'out'}",
            f"reduction.poni={poni}", "reduction.mask=null"]
    capsys.readouterr()
    assert main([*args, "campaign.frame_band=3"]) == 0
    out = capsys.readouterr().out
    assert "1 scan(s) cannot be reduced" in out
    assert "frame_band=3 is out of range: the detector dataset has 3 bands (0-2)" in out
    assert main([*args, "campaign.frame_band=2"]) == 0
    out = capsys.readouterr().out
    assert "cannot be reduced" not in out and " 5 " in out  # 5 frames: band 2 of each point

    assert main([*args, "campaign.frame_band=every"]) == 2
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "campaign.frame_band='every'" in said and "'sum'" in said
