"""Rank-4 detector datasets (points, band, ny, nx), lima2 frame bands: planning counts the frames the
selection gives, read_frames gives exactly those frames (direct-chunk reads and h5py alike), counters
follow their point, and a band out of range is the scan's problem."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from reduction.demo.bliss_writer import ScanSpec, write_dataset
from reduction.errors import RawDataError
from reduction.io import bliss, direct
from reduction.io.bands import SUM_BAND, BandLayout, parse_frame_band

POINTS, BANDS, SHAPE = 7, 3, (12, 10)


def banded(dtype: str = "uint16") -> np.ndarray:
    data = np.random.default_rng(4).poisson(40.0, (POINTS, BANDS, *SHAPE))
    data[:, :, 2, :] = np.iinfo(dtype).max if dtype[0] in "iu" else 0  # a gap row near the dtype's limit
    return data.astype(dtype)


def master(tmp_path: Path, data: np.ndarray, **kwargs) -> Path:
    monitor = np.linspace(1.0, 2.0, len(data))
    return write_dataset(tmp_path / "RAW_DATA" / "s" / "s_0001" / "s_0001.h5", [ScanSpec(data, monitor=monitor)],
                         **kwargs)


def expected(data: np.ndarray, band: int | str) -> np.ndarray:
    if band == "all":
        return data.reshape(-1, *data.shape[2:])
    if band == "sum":
        return data.sum(axis=1, dtype=np.int64 if data.dtype.kind in "iu" else np.float64)
    return data[:, band]


@pytest.mark.parametrize("band", ["all", 0, 2, "sum"])
@pytest.mark.parametrize("direct_reads", ["1", "0"])
def test_read_frames_gives_the_selected_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, band: int | str,
                                               direct_reads: str) -> None:
    monkeypatch.setenv("XREDUCE_DIRECT_READS", direct_reads)
    data = banded()
    path = master(tmp_path, data, frames_per_file=3)  # lima files of 3 points: ranges cross files
    want = expected(data, band)
    [info] = bliss.read_scans(path, "pilatus", "mon", frame_band=band)
    assert (info.nframes, info.nbands, info.frame_shape, info.problem) == (len(want), BANDS, SHAPE, None)
    n = len(want)
    for start, stop in [(0, n), (1, 5), (4, 5), (n - 2, n), (3, 3)]:
        out = bliss.read_frames(path, "1.1", "pilatus", start, stop, band)
        assert out.dtype == want.dtype
        np.testing.assert_array_equal(out, want[start:stop])
        compressed = bliss.read_frames_compressed(path, "1.1", "pilatus", start, stop, band)
        decoded = compressed.decode() if isinstance(compressed, direct.CompressedFrames) else compressed
        np.testing.assert_array_equal(decoded, want[start:stop])


def test_one_chunk_per_frame_is_read_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lima2's layout, a (1, 1, ny, nx) chunk per frame, takes the direct-chunk path for all and an index;
    the device path keeps those chunks compressed."""
    data = banded()
    path = master(tmp_path, data, frames_per_file=3)
    with h5py.File(path, "r") as f:
        assert direct.decoder_for(f["1.1/measurement/pilatus"]) is None  # the VDS: its sources are chunked
    taken: list[bool] = []
    original = direct.read_direct

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(bliss, "read_direct", recording)
    for band in ("all", 1, "sum"):
        bliss.read_frames(path, "1.1", "pilatus", 2, 6, band)
    assert taken == [True, True, True]
    chunks = bliss.read_frames_compressed(path, "1.1", "pilatus", 2, 6, "all")
    assert isinstance(chunks, direct.CompressedFrames) and len(chunks) == 4
    np.testing.assert_array_equal(chunks.decode(), expected(data, "all")[2:6])


def test_plain_4d_dataset_with_other_chunks_reads_through_h5py(tmp_path: Path) -> None:
    """ewoksdata's test writer stores float64 lima files unchunked: h5py reads them, same frames."""
    data = banded("float64")
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        entry = f.create_group("1.1")
        entry["end_time"] = "now"
        entry.create_dataset("measurement/p3", data=data, chunks=(1, BANDS, *SHAPE))
        entry["measurement/mon"] = np.arange(1.0, POINTS + 1)
    for band in ("all", 2, "sum"):
        np.testing.assert_array_equal(bliss.read_frames(path, "1.1", "p3", 0, len(expected(data, band)), band),
                                      expected(data, band))


def test_counters_follow_their_point(tmp_path: Path) -> None:
    path = master(tmp_path, banded())
    layout = bliss.band_layout(path, "1.1", "pilatus", "all")
    mon = np.linspace(1.0, 2.0, POINTS)
    np.testing.assert_array_equal(bliss.read_counter(path, "1.1", "mon", 4, 11, layout), np.repeat(mon, BANDS)[4:11])
    for band in (1, "sum"):
        layout = bliss.band_layout(path, "1.1", "pilatus", band)
        np.testing.assert_array_equal(bliss.read_counter(path, "1.1", "mon", 2, 5, layout), mon[2:5])


def test_band_indices_per_frame() -> None:
    layout = BandLayout.of((POINTS, BANDS, *SHAPE), "all")
    assert layout.nframes == POINTS * BANDS
    np.testing.assert_array_equal(layout.points(4, 8), [1, 1, 2, 2])
    np.testing.assert_array_equal(layout.bands(4, 8), [1, 2, 0, 1])
    assert layout.point_range(4, 8) == (1, 3)
    summed = BandLayout.of((POINTS, BANDS, *SHAPE), "sum")
    np.testing.assert_array_equal(summed.bands(0, 2), [SUM_BAND, SUM_BAND])
    assert BandLayout.merged(21, 3, "all") == layout


def test_band_out_of_range_is_the_scans_problem(tmp_path: Path) -> None:
    path = master(tmp_path, banded())
    [info] = bliss.read_scans(path, "pilatus", "mon", frame_band=3)
    assert info.problem is not None and "frame_band=3 is out of range" in info.problem
    assert "3 bands (0-2)" in info.problem
    with pytest.raises(RawDataError, match="out of range"):
        bliss.read_frames(path, "1.1", "pilatus", 0, 1, 3)
    three_d = write_dataset(tmp_path / "three" / "t.h5", [ScanSpec(banded()[:, 0])])
    assert bliss.read_scans(three_d, "pilatus", frame_band=0)[0].problem is None
    assert "a 3-D dataset (one band: 0)" in str(bliss.read_scans(three_d, "pilatus", frame_band=1)[0].problem)


def test_3d_frames_are_read_as_they_are_whatever_the_band(tmp_path: Path) -> None:
    data = banded()[:, 0]
    path = write_dataset(tmp_path / "t" / "t.h5", [ScanSpec(data)])
    for band in ("all", "sum", 0):
        out = bliss.read_frames(path, "1.1", "pilatus", 1, 6, band)
        assert out.dtype == data.dtype
        np.testing.assert_array_equal(out, data[1:6])


@pytest.mark.parametrize("value", ["every", -1, 1.5, True, "", None])
def test_parse_frame_band_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="'all'.*'sum'.*band index"):
        parse_frame_band(value)
