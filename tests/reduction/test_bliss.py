"""reduction.io.bliss on real files: discovery, scans, frames through VDS / external links / plain
datasets, and the raw-data failures that must fail only their chunks, naming the file at fault."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from bliss_helpers import finish_scan, write_metadata_only_experiment

from reduction import Geometry
from reduction.demo.bliss_writer import ScanSpec, write_dataset, write_demo_experiment
from reduction.io import bliss
from reduction.io.bliss import RawDataError, ScanSelectionError

SHAPE = (24, 20)  # small frames: the tests are about files, not pixels


def frames(n: int, seed: int = 0, dtype: str = "int32") -> np.ndarray:
    return np.random.default_rng(seed).poisson(30.0, (n, *SHAPE)).astype(dtype)


def master_path(root: Path, name: str = "sample_0001") -> Path:
    return root / "RAW_DATA" / "sample" / name / f"{name}.h5"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def vds_dataset(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """One finished scan of 12 frames in 3 bitshuffle-LZ4 lima files of 4 frames, behind a VDS."""
    data = frames(12)
    master = write_dataset(master_path(tmp_path), [ScanSpec(data, monitor=np.linspace(1e5, 2e5, 12), energy_kev=17.0)],
                           frames_per_file=4)
    return master, data


# -- discovery --------------------------------------------------------------------------------------
def test_find_datasets_default_layout_skips_lima_and_collection_files(tmp_path: Path) -> None:
    a = write_dataset(master_path(tmp_path, "sample_0001"), [ScanSpec(frames(2))])
    b = write_dataset(master_path(tmp_path, "sample_0002"), [ScanSpec(frames(2))])
    c = write_dataset(tmp_path / "RAW_DATA" / "other" / "other_0001" / "other_0001.h5", [ScanSpec(frames(2))])
    # the collection file BLISS writes beside the datasets, and a stray file: not dataset masters
    (tmp_path / "RAW_DATA" / "sample" / "ihch0000_sample.h5").write_bytes(b"")
    (tmp_path / "RAW_DATA" / "sample" / "sample_0001" / "notes.h5").write_bytes(b"")
    found = bliss.find_datasets(tmp_path / "RAW_DATA")
    assert found == sorted([a, b, c])
    assert all(p.is_absolute() for p in found)
    # a collection folder works too
    assert bliss.find_datasets(tmp_path / "RAW_DATA" / "sample") == [a, b]
    # a single file is itself
    assert bliss.find_datasets(a) == [a]


def test_find_datasets_patterns_never_return_lima_files(tmp_path: Path) -> None:
    a = write_dataset(master_path(tmp_path, "sample_0001"), [ScanSpec(frames(2))])
    b = write_dataset(master_path(tmp_path, "sample_0002"), [ScanSpec(frames(2))])
    raw = tmp_path / "RAW_DATA"
    assert list((a.parent / "scan0001").glob("*.h5"))  # lima files are there ...
    assert bliss.find_datasets(raw, ["**/*.h5"]) == [a, b]  # ... and never returned
    assert bliss.find_datasets(raw, ["sample/*_0002/*.h5"]) == [b]
    assert bliss.find_datasets(raw, ["sample/sample_0001/sample_0001.h5", str(b)]) == [a, b]
    assert bliss.find_datasets(raw, ["nothing/*.h5"]) == []


def test_find_datasets_flat_folder(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "flat" / "a.h5", [ScanSpec(frames(2))])
    b = write_dataset(tmp_path / "flat" / "b.h5", [ScanSpec(frames(2))])
    assert bliss.find_datasets(tmp_path / "flat") == [a, b]


def test_experiment_and_processed_data(tmp_path: Path) -> None:
    dataset = tmp_path / "ihch0000/id31/20261124/RAW_DATA/sample/sample_0001/sample_0001.h5"
    assert bliss.experiment_of(dataset) == "ihch0000/id31/20261124"
    assert bliss.experiment_of(tmp_path / "elsewhere" / "a.h5") is None
    session = tmp_path / "ihch0000/id31/20261124"
    assert bliss.processed_data_dir(session / "RAW_DATA") == session / "PROCESSED_DATA"
    assert bliss.processed_data_dir(session / "RAW_DATA" / "sample") == session / "PROCESSED_DATA"
    with pytest.raises(RawDataError, match="not inside a RAW_DATA"):
        bliss.processed_data_dir(tmp_path / "elsewhere")


# -- scan selection ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, chosen", [
    ("all", {"1.1", "1.2", "2.1", "10.1", "25.1"}),
    ("1-2, 25", {"1.1", "1.2", "2.1", "25.1"}),
    ("1", {"1.1", "1.2"}),
    ("1.2,10", {"1.2", "10.1"}),
    ("3-", {"10.1", "25.1"}),
])
def test_parse_scan_selection(text: str, chosen: set[str]) -> None:
    selection = bliss.parse_scan_selection(text)
    assert {s for s in ("1.1", "1.2", "2.1", "10.1", "25.1") if selection(s)} == chosen


@pytest.mark.parametrize("text", ["", "a", "3-1", "1,,2", "1-2-3", "1.x", "-4"])
def test_parse_scan_selection_errors_name_the_text(text: str) -> None:
    with pytest.raises(ScanSelectionError) as info:
        bliss.parse_scan_selection(text)
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


# -- scans ------------------------------------------------------------------------------------------
def test_read_scans_sorted_numerically_with_selection_and_pending(tmp_path: Path) -> None:
    specs = [ScanSpec(frames(3), name=name, title=f"scan {name}", finished=name != "10.1", monitor=np.ones(3))
             for name in ("10.1", "2.1", "1.2", "1.1")]
    master = write_dataset(master_path(tmp_path), specs)
    infos = bliss.read_scans(master, "pilatus", "mon")
    assert [i.scan for i in infos] == ["1.1", "1.2", "2.1", "10.1"]
    assert [i.finished for i in infos] == [True, True, True, False]
    assert infos[0].title == "scan 1.1" and infos[0].dataset == master
    assert (infos[0].nframes, infos[0].frame_shape, infos[0].frame_dtype) == (3, SHAPE, "int32")
    assert all(i.problem is None and i.has_monitor for i in infos)
    assert [i.scan for i in bliss.read_scans(master, "pilatus", "mon", "1")] == ["1.1", "1.2"]
    assert [i.scan for i in bliss.read_scans(master, "pilatus", "mon", "2-10")] == ["2.1", "10.1"]
    assert [i.scan for i in bliss.read_scans(master, "pilatus", "mon", {2, "1.2"})] == ["1.2", "2.1"]
    # the next run picks up the scan once BLISS has finished it
    finish_scan(master, "10.1")
    assert bliss.read_scans(master, "pilatus", "mon", "10")[0].finished


def test_read_scans_problems(tmp_path: Path) -> None:
    specs = [
        ScanSpec(frames(4), monitor=np.ones(4)),  # 1.1 fine
        ScanSpec(frames(4), monitor=np.ones(3)),  # 2.1 monitor too short
        ScanSpec(frames(4)),  # 3.1 no monitor
        ScanSpec(frames(4), monitor=np.ones(4)),  # 4.1 detector removed below
        ScanSpec(frames(4), monitor=np.ones(4)),  # 5.1 detector replaced by a 1-D dataset below
    ]
    master = write_dataset(master_path(tmp_path), specs)
    with h5py.File(master, "a") as f:
        del f["4.1/measurement/pilatus"]
        del f["5.1/measurement/pilatus"]
        f["5.1/measurement/pilatus"] = np.arange(4)
    infos = {i.scan: i for i in bliss.read_scans(master, "pilatus", "mon")}
    assert infos["1.1"].problem is None
    assert infos["2.1"].problem == "monitor 'mon' has 3 values for 4 frames"
    assert infos["3.1"].problem == "no monitor counter 'mon' under /3.1/measurement"
    assert infos["4.1"].problem == "no detector 'pilatus' under /4.1/measurement"
    assert "1-D" in infos["5.1"].problem and "measurement/pilatus" in infos["5.1"].problem
    # without a monitor, the monitor is nobody's problem
    assert bliss.read_scans(master, "pilatus", None, "3")[0].problem is None
    assert all(i.finished for i in infos.values())


def test_read_scans_energy_and_wavelength(tmp_path: Path) -> None:
    master = write_dataset(master_path(tmp_path), [ScanSpec(frames(2), energy_kev=12.398419843320026),
                                                   ScanSpec(frames(2)), ScanSpec(frames(2))])
    with h5py.File(master, "a") as f:
        mono = f.create_group("3.1/instrument/monochromator")
        mono["wavelength"] = 0.5
        mono["wavelength"].attrs["units"] = "Å"
    one, two, three = bliss.read_scans(master, "pilatus", None)
    assert one.energy_kev == pytest.approx(12.398419843320026) and one.wavelength_m == pytest.approx(1e-10)
    assert two.energy_kev is None and two.wavelength_m is None
    assert three.wavelength_m == pytest.approx(0.5e-10) and three.energy_kev == pytest.approx(24.79683969)


def test_read_scans_needs_no_lima_file(tmp_path: Path) -> None:
    [master] = write_metadata_only_experiment(tmp_path, 1, 5, n_frames=7, frame_shape=SHAPE)
    assert not list(master.parent.glob("scan*"))  # the lima files were never written
    infos = bliss.read_scans(master, "pilatus", "mon")
    assert [(i.nframes, i.frame_shape, i.problem) for i in infos] == [(7, SHAPE, None)] * 5
    with pytest.raises(RawDataError, match=r"scan0001/pilatus_0000\.h5: file not found"):
        bliss.read_frames(master, "1.1", "pilatus", 0, 1)


def test_read_scans_unreadable_master(tmp_path: Path) -> None:
    with pytest.raises(RawDataError, match="file not found"):
        bliss.read_scans(tmp_path / "nope.h5", "pilatus", None)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5" * 100)
    with pytest.raises(RawDataError, match=str(bad)):
        bliss.read_scans(bad, "pilatus", None)


# -- frames: the three ways a master reaches its frames ------------------------------------------
@pytest.mark.parametrize("layout", ["vds", "external", "plain", "vds-uncompressed"])
@pytest.mark.parametrize("dtype", ["int32", "uint16"])
def test_frames_round_trip(tmp_path: Path, layout: str, dtype: str) -> None:
    data = frames(8, seed=3, dtype=dtype)
    kwargs = {"vds": dict(frames_per_file=3), "external": dict(link="external", frames_per_file=8),
              "plain": dict(lima=False), "vds-uncompressed": dict(frames_per_file=3, compression=None)}[layout]
    master = write_dataset(master_path(tmp_path), [ScanSpec(data, monitor=np.arange(1.0, 9.0))], **kwargs)
    with h5py.File(master, "r") as f:
        link = f["1.1/instrument/pilatus"].get("data", getlink=True)
        assert isinstance(link, h5py.ExternalLink) == (layout == "external")
        assert f["1.1/measurement/pilatus"].is_virtual == layout.startswith("vds")
    if layout == "vds":
        with h5py.File(master.parent / "scan0001" / "pilatus_0000.h5", "r") as f:
            dcpl = f["entry_0000/measurement/data"].id.get_create_plist()
            assert dcpl.get_filter(0)[0] == 32008  # bitshuffle's registered HDF5 filter id
    [info] = bliss.read_scans(master, "pilatus", "mon")
    assert (info.nframes, info.frame_shape, info.frame_dtype, info.problem) == (8, SHAPE, dtype, None)
    for start, stop in [(0, 8), (2, 7), (3, 3), (7, 8)]:
        out = bliss.read_frames(master, "1.1", "pilatus", start, stop)
        assert out.dtype == np.dtype(dtype) and out.shape == (stop - start, *SHAPE)
        np.testing.assert_array_equal(out, data[start:stop])
    np.testing.assert_array_equal(bliss.read_counter(master, "1.1", "mon", 2, 5), [3.0, 4.0, 5.0])
    sources = bliss.frame_sources(master, "1.1", "pilatus", 2, 7)
    expected = {"vds": ["pilatus_0000.h5", "pilatus_0001.h5", "pilatus_0002.h5"],
                "vds-uncompressed": ["pilatus_0000.h5", "pilatus_0001.h5", "pilatus_0002.h5"],
                "external": ["pilatus_0000.h5"], "plain": [master.name]}[layout]
    assert [p.name for p in sources] == expected


def test_frames_and_counter_out_of_range(vds_dataset: tuple[Path, np.ndarray]) -> None:
    master, _ = vds_dataset
    with pytest.raises(RawDataError, match=r"frames \[10, 13\) are out of range: the scan has 12 frames"):
        bliss.read_frames(master, "1.1", "pilatus", 10, 13)
    with pytest.raises(RawDataError, match="no scan 7.1"):
        bliss.read_frames(master, "7.1", "pilatus", 0, 1)
    with pytest.raises(RawDataError, match="no /1.1/measurement/eiger"):
        bliss.read_frames(master, "1.1", "eiger", 0, 1)
    with pytest.raises(RawDataError, match="has 12 values"):
        bliss.read_counter(master, "1.1", "mon", 0, 13)
    with pytest.raises(RawDataError, match="no /1.1/measurement/diode"):
        bliss.read_counter(master, "1.1", "diode", 0, 1)


# -- failures that must fail only their chunk, naming the lima file -------------------------------
def test_missing_lima_file(vds_dataset: tuple[Path, np.ndarray]) -> None:
    master, data = vds_dataset
    lima = master.parent / "scan0001" / "pilatus_0001.h5"  # frames 4-7
    lima.unlink()
    with pytest.raises(RawDataError) as info:
        bliss.read_frames(master, "1.1", "pilatus", 2, 6)
    message = str(info.value)
    assert str(lima) in message and "file not found" in message and "1.1" in message
    assert "/1.1/measurement/pilatus" in message
    # the other files' frames are still there: only the chunks that need the lost file fail
    np.testing.assert_array_equal(bliss.read_frames(master, "1.1", "pilatus", 0, 4), data[:4])
    np.testing.assert_array_equal(bliss.read_frames(master, "1.1", "pilatus", 8, 12), data[8:])
    # and planning does not look at lima files at all
    assert bliss.read_scans(master, "pilatus", "mon")[0].problem is None


def test_truncated_lima_file(vds_dataset: tuple[Path, np.ndarray]) -> None:
    master, data = vds_dataset
    lima = master.parent / "scan0001" / "pilatus_0002.h5"  # frames 8-11
    size = lima.stat().st_size
    with open(lima, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(RawDataError) as info:
        bliss.read_frames(master, "1.1", "pilatus", 6, 10)
    assert str(lima) in str(info.value) and "truncated" in str(info.value)
    np.testing.assert_array_equal(bliss.read_frames(master, "1.1", "pilatus", 0, 8), data[:8])


def test_lima_file_with_too_few_frames(vds_dataset: tuple[Path, np.ndarray]) -> None:
    master, data = vds_dataset
    lima = master.parent / "scan0001" / "pilatus_0001.h5"  # should hold frames 4-7; keeps 4-5 only
    with h5py.File(lima, "w") as f:
        f["entry_0000/measurement/data"] = data[4:6]
    with pytest.raises(RawDataError) as info:
        bliss.read_frames(master, "1.1", "pilatus", 0, 12)
    assert str(lima) in str(info.value) and "has 2 frames" in str(info.value)
    with pytest.raises(RawDataError, match="pilatus_0001.h5"):
        bliss.read_frames(master, "1.1", "pilatus", 6, 7)
    # the frames that are there can still be read (a chunk boundary inside the short file)
    np.testing.assert_array_equal(bliss.read_frames(master, "1.1", "pilatus", 2, 6), data[2:6])


def test_lima_file_without_the_dataset(vds_dataset: tuple[Path, np.ndarray]) -> None:
    master, _ = vds_dataset
    lima = master.parent / "scan0001" / "pilatus_0000.h5"
    with h5py.File(lima, "w") as f:
        f["entry_0000/other"] = 1
    with pytest.raises(RawDataError, match=r"pilatus_0000\.h5: no dataset /entry_0000/measurement/data"):
        bliss.read_frames(master, "1.1", "pilatus", 0, 2)


def test_corrupt_chunk_in_lima_file(vds_dataset: tuple[Path, np.ndarray]) -> None:
    master, data = vds_dataset
    lima = master.parent / "scan0001" / "pilatus_0001.h5"
    with h5py.File(lima, "r") as f:
        chunk = f["entry_0000/measurement/data"].id.get_chunk_info(2)  # frame 6 of the scan
    with open(lima, "r+b") as handle:  # same size, garbage inside the compressed chunk
        handle.seek(chunk.byte_offset + 12)
        handle.write(b"\xff" * (chunk.size - 12))
    with pytest.raises(RawDataError) as info:
        bliss.read_frames(master, "1.1", "pilatus", 4, 8)
    assert str(lima) in str(info.value) and "frame 2 of /entry_0000/measurement/data" in str(info.value)
    np.testing.assert_array_equal(bliss.read_frames(master, "1.1", "pilatus", 0, 6), data[:6])


def test_external_link_to_missing_or_truncated_file(tmp_path: Path) -> None:
    master = write_dataset(master_path(tmp_path), [ScanSpec(frames(4), monitor=np.ones(4)),
                                                   ScanSpec(frames(4), monitor=np.ones(4))],
                           link="external", frames_per_file=4)
    missing = master.parent / "scan0001" / "pilatus_0000.h5"
    missing.unlink()
    truncated = master.parent / "scan0002" / "pilatus_0000.h5"
    with open(truncated, "r+b") as handle:
        handle.truncate(truncated.stat().st_size // 2)
    one, two = bliss.read_scans(master, "pilatus", "mon")
    assert f"external link to {missing}, which does not exist" in one.problem
    assert str(truncated) in two.problem and "truncated" in two.problem
    with pytest.raises(RawDataError, match=str(missing)):
        bliss.read_frames(master, "1.1", "pilatus", 0, 4)
    with pytest.raises(RawDataError, match=str(truncated)):
        bliss.read_frames(master, "2.1", "pilatus", 0, 4)


# -- read-only, no locks ----------------------------------------------------------------------------
def test_raw_files_unchanged(vds_dataset: tuple[Path, np.ndarray]) -> None:
    master, _ = vds_dataset
    files = [master, *sorted(master.parent.glob("scan*/*.h5"))]
    before = {p: (sha256(p), p.stat().st_mtime_ns) for p in files}
    time.sleep(0.01)
    bliss.find_datasets(master.parents[2])
    bliss.read_scans(master, "pilatus", "mon")
    bliss.read_frames(master, "1.1", "pilatus", 0, 12)
    bliss.frame_sources(master, "1.1", "pilatus")
    bliss.read_counter(master, "1.1", "mon")
    assert {p: (sha256(p), p.stat().st_mtime_ns) for p in files} == before


def test_reads_while_another_process_holds_the_files_locked(vds_dataset: tuple[Path, np.ndarray]) -> None:
    """BLISS keeps the master (and lima keeps its file) open for writing with an HDF5 lock."""
    master, data = vds_dataset
    lima = master.parent / "scan0001" / "pilatus_0000.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, h5py\n"
         f"a = h5py.File({str(master)!r}, 'a', locking=True)\n"
         f"b = h5py.File({str(lima)!r}, 'a', locking=True)\n"
         "print('locked', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OSError, match="lock"):  # the lock is real: a locking reader is refused
            h5py.File(master, "r", locking=True).close()
        assert bliss.read_scans(master, "pilatus", "mon")[0].nframes == 12
        np.testing.assert_array_equal(bliss.read_frames(master, "1.1", "pilatus", 0, 12), data)
        assert len(bliss.read_counter(master, "1.1", "mon")) == 12
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_every_open_turns_locking_off(vds_dataset: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    master, _ = vds_dataset
    calls: list[dict] = []
    original = h5py.File

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(bliss.h5py, "File", spy)
    bliss.read_scans(master, "pilatus", "mon")
    bliss.read_frames(master, "1.1", "pilatus", 0, 12)
    bliss.read_counter(master, "1.1", "mon")
    assert len(calls) >= 5  # the master three times, the three lima files once
    assert all(c.get("locking") is False for c in calls)


# -- the writer's experiments -----------------------------------------------------------------------
def test_demo_experiment_small(tmp_path: Path) -> None:
    demo = write_demo_experiment(tmp_path, n_datasets=2, n_scans=2, n_frames=3, detector="Pilatus100k")
    assert demo.experiment == "ihch0000/id31/20261124"
    assert bliss.find_datasets(demo.raw_data) == demo.datasets and len(demo.datasets) == 2
    assert all(bliss.experiment_of(d) == demo.experiment for d in demo.datasets)
    geo = Geometry.from_poni(demo.poni)
    assert geo.detector.name == "Pilatus100k" and geo.wavelength == pytest.approx(demo.wavelength)
    mask = np.load(demo.mask)
    assert mask.shape == geo.shape and 0 < mask.mean() < 0.2
    for dataset in demo.datasets:
        for info in bliss.read_scans(dataset, demo.detector, demo.monitor):
            assert info.finished and info.problem is None and info.has_monitor
            assert (info.nframes, info.frame_shape, info.frame_dtype) == (3, geo.shape, "int32")
            assert info.wavelength_m == pytest.approx(geo.wavelength, rel=1e-12)
            block = bliss.read_frames(dataset, info.scan, demo.detector, 0, 3)
            assert (block[:, geo.detector.mask] == -1).all()  # Pilatus gaps
            assert (block[:, ~geo.detector.mask] >= 0).all() and block.max() > 50  # rings above background
            monitor = bliss.read_counter(dataset, info.scan, demo.monitor)
            assert np.all(np.abs(monitor / 1e5 - 1) < 0.1)
    with h5py.File(demo.datasets[0], "r") as f:
        assert f.attrs["NX_class"] == "NXroot" and f["1.1"].attrs["NX_class"] == "NXentry"
        assert f["1.1/measurement"].attrs["NX_class"] == "NXcollection"
        assert f["1.1/instrument/pilatus"].attrs["NX_class"] == "NXdetector"
        assert f["1.1/instrument/pilatus/data"].virtual_sources()[0].file_name == "./scan0001/pilatus_0000.h5"
    # deterministic: the same seed writes the same frames
    again = write_demo_experiment(tmp_path / "again", n_datasets=1, n_scans=1, n_frames=3, detector="Pilatus100k")
    np.testing.assert_array_equal(bliss.read_frames(again.datasets[0], "1.1", "pilatus", 0, 3),
                                  bliss.read_frames(demo.datasets[0], "1.1", "pilatus", 0, 3))


def test_demo_experiment_default_size_is_quick(tmp_path: Path) -> None:
    start = time.perf_counter()
    demo = write_demo_experiment(tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"the demo experiment took {elapsed:.1f} s to write"
    infos = [i for d in demo.datasets for i in bliss.read_scans(d, demo.detector, demo.monitor)]
    assert len(infos) == 6 and all(i.nframes == 20 and i.frame_shape == (1043, 981) for i in infos)


def test_metadata_only_experiment_is_small(tmp_path: Path) -> None:
    masters = write_metadata_only_experiment(tmp_path, 3, 4)
    assert bliss.find_datasets(tmp_path / "RAW_DATA") == masters
    assert sum(p.stat().st_size for p in masters) < 3 * 200_000
    infos = [i for m in masters for i in bliss.read_scans(m, "pilatus", "mon")]
    assert len(infos) == 12 and all(i.problem is None and i.nframes == 100 for i in infos)
    with h5py.File(masters[2], "r") as f:
        assert f.attrs["file_name"] == str(masters[2])
