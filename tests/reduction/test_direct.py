"""Direct-chunk reads (reduction.io.direct): the same bytes as h5py for every layout and filter,
h5py's path (logged) for what they do not cover, and the raw-data checks unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from reduction.demo.bliss_writer import ScanSpec, write_dataset
from reduction.errors import RawDataError
from reduction.io import bliss, direct

SHAPE = (24, 20)


def frames(n: int, dtype: str = "int32", seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).poisson(30.0, (n, *SHAPE)).astype(dtype)
    data[:, 3, :] = np.iinfo(dtype).max if dtype[0] in "iu" else np.nan  # a gap row, as detectors write
    return data


def master_path(root: Path) -> Path:
    return root / "RAW_DATA" / "sample" / "sample_0001" / "sample_0001.h5"


def h5py_frames(master: Path, start: int, stop: int) -> np.ndarray:
    with h5py.File(master, "r") as f:
        return f["1.1/measurement/pilatus"][start:stop]


def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record whether each read took the direct path."""
    taken: list[str] = []
    original = direct.read_direct

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        taken.append("direct" if out is not None else "h5py")
        return out

    monkeypatch.setattr(bliss, "read_direct", recording)
    return taken


@pytest.mark.parametrize("compression", ["bitshuffle", "lz4", "gzip"])
@pytest.mark.parametrize("layout", ["vds", "external", "plain"])
@pytest.mark.parametrize("dtype", ["int32", "uint16", "uint32", "float32"])
def test_direct_bytes_equal_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str, layout: str,
                                 dtype: str) -> None:
    data = frames(9, dtype)
    kwargs = {"vds": dict(frames_per_file=4), "external": dict(link="external", frames_per_file=9),
              "plain": dict(lima=False)}[layout]
    master = write_dataset(master_path(tmp_path), [ScanSpec(data, dtype=dtype)], compression=compression, **kwargs)
    taken = spy(monkeypatch)
    for start, stop in [(0, 9), (2, 7), (3, 4), (8, 9), (5, 5)]:
        out = bliss.read_frames(master, "1.1", "pilatus", start, stop)
        expected = h5py_frames(master, start, stop)
        assert out.dtype == expected.dtype and out.shape == expected.shape
        assert out.tobytes() == expected.tobytes()  # bit for bit, NaN gaps included
    assert set(taken) == {"direct"}


def test_lz4_frames_larger_than_one_lz4_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HDF5's LZ4 filter cuts a chunk into 1 GiB blocks by default; a small block size makes several."""
    data = np.random.default_rng(1).integers(0, 50, (3, 512, 300)).astype(np.uint32)
    path = tmp_path / "lz4.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, chunks=(1, 512, 300), **hdf5plugin.LZ4(nbytes=4096))
    with h5py.File(path, "r") as f:
        out = direct.read_direct(f["data"], 0, 3, resolve=Path, open_file=h5py.File)
    assert out is not None and np.array_equal(out, data)


def test_other_layouts_are_read_by_h5py_and_said_at_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    data = frames(8)
    uncompressed = write_dataset(master_path(tmp_path / "a"), [ScanSpec(data)], compression=None, frames_per_file=4)
    taken = spy(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="reduction.io.direct"):
        np.testing.assert_array_equal(bliss.read_frames(uncompressed, "1.1", "pilatus", 0, 8), data)
    assert taken == ["h5py"] and "no direct-chunk decoder" in caplog.text
    # two frames per chunk
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, chunks=(2, *SHAPE), **hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(path, "r") as f:
        assert direct.decoder_for(f["data"]) is None
    # bitshuffle without LZ4, and zstd: not decoded here
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("plain_bs", data=data, chunks=(1, *SHAPE), **hdf5plugin.Bitshuffle(cname="none"))
        f.create_dataset("zstd", data=data, chunks=(1, *SHAPE), **hdf5plugin.Zstd())
    with h5py.File(tmp_path / "other.h5", "r") as f:
        assert direct.decoder_for(f["plain_bs"]) is None and direct.decoder_for(f["zstd"]) is None


def test_a_vds_with_a_gap_reads_the_fill_value_through_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = frames(8)
    lima = tmp_path / "lima.h5"
    with h5py.File(lima, "w") as f:
        f.create_dataset("data", data=data[:4], chunks=(1, *SHAPE), **hdf5plugin.Bitshuffle(cname="lz4"))
    master = tmp_path / "master.h5"
    with h5py.File(master, "w") as f:
        layout = h5py.VirtualLayout(shape=(8, *SHAPE), dtype=data.dtype)
        layout[0:4] = h5py.VirtualSource("lima.h5", "data", shape=(4, *SHAPE))  # frames 4-7: no source
        f.create_virtual_dataset("frames", layout, fillvalue=-7)
    with h5py.File(master, "r") as f:
        ds = f["frames"]
        assert direct.frame_locations(ds, 0, 8, lambda name: tmp_path / name) is None  # the gap
        located = direct.frame_locations(ds, 1, 3, lambda name: tmp_path / name)
        assert located is not None and [(s.rows, s.frames) for s in located] == [([1, 2], [0, 1])]
        out = direct.read_direct(ds, 1, 3, resolve=lambda name: tmp_path / name, open_file=h5py.File)
        assert out is not None and np.array_equal(out, data[1:3])


def test_a_vds_with_a_strided_source_selection(tmp_path: Path) -> None:
    """A mapping may take every other frame of its source: row k of the mapping is source row 2k."""
    data = frames(8)
    with h5py.File(tmp_path / "lima.h5", "w") as f:
        f.create_dataset("data", data=data, chunks=(1, *SHAPE), **hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(tmp_path / "master.h5", "w") as f:
        layout = h5py.VirtualLayout(shape=(4, *SHAPE), dtype=data.dtype)
        layout[:] = h5py.VirtualSource("lima.h5", "data", shape=(8, *SHAPE))[::2]
        f.create_virtual_dataset("frames", layout)
    with h5py.File(tmp_path / "master.h5", "r") as f:
        out = direct.read_direct(f["frames"], 0, 4, resolve=lambda name: tmp_path / name, open_file=h5py.File)
        assert out is not None and np.array_equal(out, f["frames"][:]) and np.array_equal(out, data[::2])


def test_a_damaged_chunk_falls_back_and_is_named(tmp_path: Path) -> None:
    data = frames(8)
    master = write_dataset(master_path(tmp_path), [ScanSpec(data)], frames_per_file=4)
    lima = master.parent / "scan0001" / "pilatus_0001.h5"
    with h5py.File(lima, "r") as f:
        chunk = f["entry_0000/measurement/data"].id.get_chunk_info(1)  # frame 5 of the scan
    with open(lima, "r+b") as handle:
        handle.seek(chunk.byte_offset + 12)
        handle.write(b"\xff" * (chunk.size - 12))
    with pytest.raises(RawDataError, match="frame 1 of /entry_0000/measurement/data"):
        bliss.read_frames(master, "1.1", "pilatus", 4, 8)
    np.testing.assert_array_equal(bliss.read_frames(master, "1.1", "pilatus", 0, 4), data[:4])


def test_missing_and_short_lima_files_still_fail_named(tmp_path: Path) -> None:
    data = frames(8)
    master = write_dataset(master_path(tmp_path), [ScanSpec(data)], frames_per_file=4)
    (master.parent / "scan0001" / "pilatus_0001.h5").unlink()
    with pytest.raises(RawDataError, match="pilatus_0001.h5: file not found"):
        bliss.read_frames(master, "1.1", "pilatus", 2, 6)
    np.testing.assert_array_equal(bliss.read_frames(master, "1.1", "pilatus", 0, 4), data[:4])


def test_read_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XREDUCE_READ_THREADS", "3")
    assert direct.read_threads() == 3
    monkeypatch.setenv("XREDUCE_READ_THREADS", "zero")
    assert direct.read_threads() >= 1
