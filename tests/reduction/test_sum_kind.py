"""The ``sum`` kind on its own: sums against numpy, the chunk file and ``is_done``, the merge (VDS and
copy, missing chunks as NaN), the preview, the selftest, and registration through the entry point."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from campaign_helpers import plugin_distribution

import reduction.step
from reduction.demo.bliss_writer import ScanSpec, write_dataset
from reduction.errors import OutputError, RawDataError
from reduction.step import FAILED, OK, MasterEntry, get_kind, reload_kinds, rules
from reduction.sum import selftest as sum_selftest
from reduction.sum import step as sum_step
from reduction.sum.config import SumConfig
from reduction.sum.kind import SUM
from reduction.sum.sums import frame_sums

SHAPE = (6, 8)
N_FRAMES = 10
CUTS = (0, 4, 8, 10)
GAP = np.iinfo(np.uint32).max


def _frames(seed: int) -> np.ndarray:
    """Poisson-like counts with detector gaps (uint32's maximum) in some frames."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 1000, (N_FRAMES, *SHAPE)).astype(np.uint32)
    frames[2, 1, 1] = frames[7, 5, 0] = frames[7, 0, 7] = GAP
    return frames


def _numpy_sums(frames: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The oracle: totals and maxima by numpy's masked arrays, leaving out gaps and masked pixels."""
    bad = frames == GAP if frames.dtype.kind == "u" else ~np.isfinite(frames)
    if mask is not None:
        bad = bad | (mask != 0)
    masked = np.ma.masked_array(frames.astype(np.float64), bad)
    return masked.sum(axis=(1, 2)).filled(0.0), masked.max(axis=(1, 2)).filled(np.nan)


@pytest.fixture()
def raw(tmp_path: Path) -> dict:
    """A BLISS dataset (two scans of uint32 frames with gaps, bitshuffle-LZ4 lima files) and a mask."""
    frames = {"1.1": _frames(1), "2.1": _frames(2)}
    dataset = write_dataset(tmp_path / "RAW_DATA" / "s" / "s_0001" / "s_0001.h5",
                            [ScanSpec(frames["1.1"]), ScanSpec(frames["2.1"])], frames_per_file=3)
    mask = np.zeros(SHAPE, dtype=np.int8)
    mask[0, :3] = 1
    np.save(tmp_path / "mask.npy", mask)
    return {"dataset": str(dataset), "frames": frames, "mask": mask, "mask_file": str(tmp_path / "mask.npy")}


def _chunk(raw: dict, scan: str, start: int, stop: int) -> dict:
    return {"id": f"c-{scan}-{start}-{stop}", "dataset": raw["dataset"], "scan": scan, "detector": "pilatus",
            "monitor": None, "start": start, "stop": stop, "energy_kev": None}


def _reduce(raw: dict, out: Path, *, mask: bool = True, config_hash: str = "h-1") -> dict[str, list]:
    """Every chunk of both scans into ``out/chunks``; returns scan → [(start, stop, path)]."""
    step = SUM.open({"kind": "sum", "mask": raw["mask_file"] if mask else None})
    parts: dict[str, list] = {}
    for scan in raw["frames"]:
        for start, stop in zip(CUTS[:-1], CUTS[1:]):
            path = out / "chunks" / f"c-{scan}-{start}-{stop}.h5"
            assert step(_chunk(raw, scan, start, stop), path, config_hash=config_hash, config_json="{}") == stop - start
            parts.setdefault(scan, []).append((start, stop, path))
    return parts


def _entries(raw: dict, parts: dict[str, list]) -> list[MasterEntry]:
    return [MasterEntry(name=f"s_0001_{scan}", dataset=raw["dataset"], scan=scan, nframes=N_FRAMES,
                        chunks=chunks, chunk_ids=[Path(p).stem if p else f"c-{scan}-{a}-{b}" for a, b, p in chunks])
            for scan, chunks in parts.items()]


# -- the science ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint32", "int32", "float32"])
def test_sums_match_numpy_and_leave_out_invalid_and_masked_pixels(dtype: str) -> None:
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 500, (4, *SHAPE)).astype(dtype)
    invalid = {"uint32": np.iinfo(np.uint32).max, "int32": -1, "float32": np.nan}[dtype]
    frames[1, 2, 3] = frames[3, 0, 0] = invalid
    mask = np.zeros(SHAPE, dtype=bool)
    mask[4] = True
    sums = frame_sums(frames, mask)
    bad = (frames == invalid) if dtype != "float32" else np.isnan(frames)
    expected = np.ma.masked_array(frames.astype(np.float64), bad | mask)
    np.testing.assert_array_equal(sums.total, expected.sum(axis=(1, 2)))
    np.testing.assert_array_equal(sums.maximum, expected.max(axis=(1, 2)))
    np.testing.assert_array_equal(sums.pixels, (~(bad | mask)).sum(axis=(1, 2)))
    assert sums.total.dtype == sums.maximum.dtype == np.float64


def test_a_frame_without_a_valid_pixel_has_no_maximum() -> None:
    frames = np.full((2, *SHAPE), 5, dtype=np.uint32)
    frames[1] = GAP
    sums = frame_sums(frames)
    assert sums.total.tolist() == [5.0 * frames[0].size, 0.0] and sums.pixels.tolist() == [frames[0].size, 0]
    assert sums.maximum[0] == 5 and np.isnan(sums.maximum[1])
    with pytest.raises(ValueError, match="does not fit"):
        frame_sums(frames, np.zeros(SHAPE[::-1], dtype=bool))


# -- the step and its chunk file -----------------------------------------------------------------
def test_step_writes_the_sums_of_every_frame(raw: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sum_step, "READ_BLOCK", 3)  # blocks that do not fall on the chunk's edges
    parts = _reduce(raw, tmp_path)
    for scan, chunks in parts.items():
        total, maximum = _numpy_sums(raw["frames"][scan], raw["mask"])
        for start, stop, path in chunks:
            with h5py.File(path, "r") as f:
                assert dict(f.attrs) | {"created": "", "xreduce_version": ""} == {
                    "format": "xreduce-sum-chunk-1", "chunk_id": path.stem, "config_hash": "h-1", "kind": "sum",
                    "dataset": raw["dataset"], "scan": scan, "frame_start": start, "frame_stop": stop,
                    "config": "{}", "created": "", "xreduce_version": ""}
                np.testing.assert_array_equal(f["total"][()], total[start:stop])
                np.testing.assert_array_equal(f["maximum"][()], maximum[start:stop])
    assert not list((tmp_path / "chunks").glob(".*.tmp")), "no temporary file left behind"


def test_without_a_mask_only_invalid_pixels_are_left_out(raw: dict, tmp_path: Path) -> None:
    (start, stop, path), *_ = _reduce(raw, tmp_path, mask=False)["2.1"]
    total, _ = _numpy_sums(raw["frames"]["2.1"])
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["total"][()], total[start:stop])
        assert f["pixels"][()].tolist() == [48, 48, 47, 48]  # frame 2 has a gap pixel


def test_mask_errors_name_the_file_and_the_scan(raw: dict, tmp_path: Path) -> None:
    with pytest.raises(RawDataError, match="mask file .*nowhere.npy does not exist"):
        SUM.open({"kind": "sum", "mask": str(tmp_path / "nowhere.npy")})
    np.save(tmp_path / "wide.npy", np.zeros((6, 9)))
    step = SUM.open({"kind": "sum", "mask": str(tmp_path / "wide.npy")})
    with pytest.raises(RawDataError, match=r"wide.npy has shape \(6, 9\), but the frames of .*s_0001.h5 scan 1.1"):
        step(_chunk(raw, "1.1", 0, 4), tmp_path / "c.h5", config_hash="h", config_json="{}")
    assert not (tmp_path / "c.h5").exists()


def test_is_done_only_for_a_complete_chunk_of_this_id_and_hash(raw: dict, tmp_path: Path) -> None:
    (_, _, path), *_ = _reduce(raw, tmp_path)["1.1"]
    assert SUM.is_done(path, path.stem, "h-1")
    assert not SUM.is_done(path, "c-other", "h-1"), "foreign chunk id"
    assert not SUM.is_done(path, path.stem, "h-2"), "another config"
    assert not SUM.is_done(tmp_path / "absent.h5", path.stem, "h-1")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[:1500])
    assert not SUM.is_done(truncated, path.stem, "h-1")
    short = tmp_path / "short.h5"
    shutil.copy(path, short)
    with h5py.File(short, "a") as f:  # a chunk file whose data do not cover its frames
        del f["maximum"]
        f["maximum"] = np.zeros(2)
    assert not SUM.is_done(short, path.stem, "h-1")


# -- merge and preview ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["vds", "copy"])
def test_merge_holds_the_sums_with_nan_for_missing_chunks(raw: dict, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    parts = _reduce(raw, out)
    parts["1.1"][1] = (4, 8, None)  # a failed chunk
    foreign = parts["2.1"][2][2]
    with h5py.File(foreign, "a") as f:  # a file that claims to be another chunk
        f.attrs["chunk_id"] = "c-someone-else"
    master = out / "session.nxs"
    report = SUM.merge(master, _entries(raw, parts), mode=mode, config_json='{"reduction": {"kind": "sum"}}')
    assert not report.complete
    assert report.missing_frames == {"s_0001_1.1": [(4, 8)], "s_0001_2.1": [(8, 10)]}
    assert "chunk failed or not done" in report.summary() and "c-someone-else" in report.summary()
    if mode == "copy":
        shutil.rmtree(out / "chunks")  # self-contained
    with h5py.File(master, "r") as f:
        assert f.attrs["NX_class"] == "NXroot" and f.attrs["default"] == "s_0001_1.1"
        for scan, missing in (("1.1", slice(4, 8)), ("2.1", slice(8, 10))):
            entry = f[f"s_0001_{scan}"]
            data = entry[entry.attrs["default"]]
            assert data.attrs["signal"] == "total" and list(data.attrs["axes"]) == ["frame"]
            assert data["total"].is_virtual == (mode == "vds")
            total, maximum = _numpy_sums(raw["frames"][scan], raw["mask"])
            total[missing] = maximum[missing] = np.nan
            np.testing.assert_array_equal(data["total"][()], total)
            np.testing.assert_array_equal(data["maximum"][()], maximum)
            assert data["frame"][()].tolist() == list(range(N_FRAMES))
            table = entry["chunks"]
            assert table["missing_frames"][()].tolist() == [[missing.start, missing.stop]]
            assert entry["reduction/program"][()] == b"xreduce"
            assert json.loads(entry["reduction/input/config"][()]) == {"reduction": {"kind": "sum"}}
            assert entry["reduction/date"][()] and entry["reduction/version"][()]


def test_vds_master_survives_moving_the_folder(raw: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    SUM.merge(out / "session.nxs", _entries(raw, _reduce(raw, out)), mode="vds", config_json="{}")
    moved = tmp_path / "elsewhere"
    shutil.move(out, moved)
    with h5py.File(moved / "session.nxs", "r") as f:
        assert np.isfinite(f["s_0001_1.1/data/total"][()]).all()


def test_preview_is_a_png(raw: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    parts = _reduce(raw, out)
    parts["2.1"][0] = (0, 4, None)
    SUM.merge(out / "session.nxs", _entries(raw, parts), mode="vds", config_json="{}")
    SUM.preview(out / "session.nxs", out / "session.png")
    assert (out / "session.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with h5py.File(out / "empty.nxs", "w"):
        pass
    with pytest.raises(OutputError, match="no NXentry"):
        SUM.preview(out / "empty.nxs", out / "empty.png")


# -- selftest --------------------------------------------------------------------------------------
def test_selftest_knows_the_answer() -> None:
    (check,) = SUM.selftest().checks
    assert check.name == "sum" and check.status == OK, check.detail
    assert "672" in check.detail  # 7 counts x 96 pixels


def test_selftest_fails_on_a_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    right = sum_selftest.frame_sums
    monkeypatch.setattr(sum_selftest, "frame_sums", lambda frames: right(np.minimum(frames, 100)))  # gaps counted
    (check,) = SUM.selftest().checks
    assert check.status == FAILED and "total" in check.detail and "665" in check.detail

    def broken(frames):
        raise RuntimeError("illegal instruction")

    monkeypatch.setattr(sum_selftest, "frame_sums", broken)
    (check,) = SUM.selftest().checks
    assert check.status == FAILED and "RuntimeError: illegal instruction" in check.detail


# -- registration ----------------------------------------------------------------------------------
def test_schema_rules() -> None:
    assert SumConfig().kind == "sum" and rules(SumConfig)["mask"].input_file


def test_the_kind_is_found_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "sum" not in reduction.step._BUILTIN, "sum is registered as a plugin is, not built in"
    plugin_distribution(tmp_path, "xreduce_sum_test", {"sum": "reduction.sum.kind:SUM",
                                                       "broken": "no_such_module_here:KIND"})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert reload_kinds()["sum"] is SUM and get_kind("sum") is SUM
        assert "No module named 'no_such_module_here'" in reduction.step.broken_kinds()["broken"]
        with pytest.raises(reduction.step.UnknownKind, match="registered but cannot be loaded"):
            get_kind("broken")
    finally:
        monkeypatch.undo()
        reload_kinds()
    assert "broken" not in reduction.step.broken_kinds() and str(tmp_path) not in sys.path
