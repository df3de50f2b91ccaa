"""Chunk result files and the NeXus master file: exact data, VDS paths, copy mode, missing chunks,
atomic writes, and validation of every entry against NXazint1d / NXazint2d by both pynxtools and
nexusformat (tests/nexus_validation.py), for 1-D and 2-D and every radial unit."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
from chunk_helpers import read_chunk, write_chunk
from h5_helpers import describe
from nexus_validation import validate_entry, validate_file

from reduction import Geometry, Integrator
from reduction.azint.chunkfile import ChunkMeta, ChunkWriter, chunk_matches, read_chunk_meta
from reduction.azint.detectors import Detector
from reduction.azint.nexus import EntrySpec, write_master, write_preview
from reduction.demo.synthetic import calibrant_d_spacings, calibrant_image
from reduction.errors import OutputError

DET = Detector("Detector", 172e-6, 172e-6, (64, 80))
WAVELENGTH = 1e-10
GEO = Geometry(dist=0.05, poni1=0.002, poni2=0.003, rot1=0.04, rot2=-0.02, wavelength=WAVELENGTH, detector=DET)
FLAT_GEO = Geometry(dist=0.05, poni1=0.002, poni2=0.003, wavelength=WAVELENGTH, detector=DET)  # untilted
UNITS = ["q_nm^-1", "q_A^-1", "2th_deg", "2th_rad", "r_mm"]
CONFIG = {"reduction": {"kind": "azint1d", "npt": 40, "unit": "q_nm^-1"}, "campaign": {"name": "test"}}


def _frames(n: int, seed: int) -> np.ndarray:
    tth = GEO.twotheta()
    d = calibrant_d_spacings("LaB6", n=6)
    rng = np.random.default_rng(seed)
    return np.stack([calibrant_image(tth, WAVELENGTH, d, peak_width=np.deg2rad(0.6), rng=rng) for _ in range(n)])


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return _frames(24, seed=3)


def _integrate(geo: Geometry, frames: np.ndarray, kind: str, unit: str, monitor: np.ndarray | None,
               error_model: str | None = "poisson"):
    integ = Integrator(geo, cache_dir=False)
    kw = dict(unit=unit, normalization=monitor, polarization_factor=0.99, error_model=error_model)
    if kind == "azint1d":
        return integ.integrate1d(frames, npt=40, **kw)
    return integ.integrate2d(frames, npt_rad=30, npt_azim=8, **kw)


def _meta(chunk_id: str, kind: str, dataset: str, scan: str, start: int, stop: int, geo: Geometry,
          monitor: np.ndarray | None) -> ChunkMeta:
    return ChunkMeta(chunk_id=chunk_id, config_hash="cfg-1", kind=kind, dataset=dataset, scan=scan, frame_start=start,
                     frame_stop=stop, poni=geo.to_poni(), config_json=json.dumps(CONFIG), wavelength=WAVELENGTH,
                     energy_kev=12.398419843320026, solid_angle_applied=True, polarization_applied=True,
                     flat_applied=False, monitor_applied=monitor is not None, monitor=monitor)


def _campaign(out: Path, frames: np.ndarray, *, kind: str = "azint1d", unit: str = "q_nm^-1", nentries: int = 2,
              nframes: int = 12, cuts: tuple[int, ...] = (5, 9), monitor: bool = True, geo: Geometry = GEO,
              error_model: str | None = "poisson") -> tuple[list[EntrySpec], dict[str, np.ndarray]]:
    """Chunk files under out/chunks for ``nentries`` scans of ``nframes`` frames cut at ``cuts``;
    returns the entry specs and, per entry, the stacked chunk results (intensity) for comparison."""
    bounds = [0, *cuts, nframes]
    specs, expected = [], {}
    for e in range(nentries):
        dataset, scan = str(out / "RAW_DATA" / "sample" / "sample_0001" / "sample_0001.h5"), f"{e + 1}.1"
        stack = frames[(e * nframes) % len(frames):][:nframes]
        if len(stack) < nframes:
            stack = np.concatenate([stack, frames[: nframes - len(stack)]])
        mon = np.linspace(1.0, 2.0, nframes) if monitor else None
        chunks, ids, parts = [], [], []
        for a, b in zip(bounds[:-1], bounds[1:]):
            cid = f"c-{e:04d}{a:06d}{b:06d}"
            res = _integrate(geo, stack[a:b], kind, unit, None if mon is None else mon[a:b], error_model)
            path = out / "chunks" / f"{cid}.h5"
            write_chunk(path, res, _meta(cid, kind, dataset, scan, a, b, geo, None if mon is None else mon[a:b]))
            chunks.append((a, b, path))
            ids.append(cid)
            parts.append(res)
        name = f"sample_0001_{scan}"
        specs.append(EntrySpec(name=name, kind=kind, dataset=dataset, scan=scan, nframes=nframes, chunks=chunks,
                               chunk_ids=ids, beamline="id00", title=f"ascan {e}"))
        expected[name] = {f: np.concatenate([getattr(p, f) for p in parts]) if getattr(parts[0], f) is not None
                          else None for f in ("intensity", "sigma", "signal", "variance", "normalization", "count")}
        expected[name]["monitor"] = mon
        expected[name]["radial"] = parts[0].radial
    return specs, expected


def _assert_valid(path: Path) -> None:
    problems = validate_file(path)
    assert problems and not any(problems.values()), problems


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# -- chunk files --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["azint1d", "azint2d"])
def test_chunk_file_roundtrip(tmp_path: Path, frames: np.ndarray, kind: str) -> None:
    mon = np.array([1.0, 2.0, 3.0])
    res = _integrate(GEO, frames[:3], kind, "2th_deg", mon)
    meta = _meta("c-0123456789abcdef", kind, "/raw/x.h5", "2.1", 10, 13, GEO, mon)
    path = tmp_path / "chunks" / "c-0123456789abcdef.h5"
    write_chunk(path, res, meta)
    back, info = read_chunk(path)
    for name in ("radial", "radial_edges", "azimuthal", "azimuthal_edges", "intensity", "sigma", "signal",
                 "variance", "normalization", "count"):
        a, b = getattr(res, name), getattr(back, name)
        assert (a is None and b is None) or np.array_equal(a, b, equal_nan=True), name
    assert (back.unit, back.splitting, back.ndim) == ("2th_deg", res.splitting, res.ndim)
    assert info["chunk_id"] == "c-0123456789abcdef" and info["config_hash"] == "cfg-1" and info["kind"] == kind
    assert (info["scan"], info["frame_start"], info["frame_stop"], info["nframes"]) == ("2.1", 10, 13, 3)
    assert info["poni"] == GEO.to_poni() and info["config_dict"] == CONFIG and info["error_model"] == "poisson"
    assert info["wavelength"] == WAVELENGTH and info["monitor_applied"] is True
    assert info["normalization_applied"] is False  # = no flat field
    np.testing.assert_array_equal(info["monitor"], mon)
    assert read_chunk_meta(path)["xreduce_version"]
    assert chunk_matches(path, "c-0123456789abcdef", "cfg-1")
    assert not chunk_matches(path, "c-0123456789abcdef", "cfg-2")
    assert not chunk_matches(path, "c-other", "cfg-1")
    assert not chunk_matches(tmp_path / "nope.h5", "c-0123456789abcdef", "cfg-1")
    assert _no_temp_files(tmp_path)


def test_chunk_matches_is_false_for_damaged_or_foreign_files(tmp_path: Path, frames: np.ndarray) -> None:
    res = _integrate(GEO, frames[:2], "azint1d", "q_nm^-1", None)
    good = tmp_path / "good.h5"
    write_chunk(good, res, _meta("c-1", "azint1d", "/raw/x.h5", "1.1", 0, 2, GEO, None))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file at all")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs.update({"chunk_id": "c-1", "config_hash": "cfg-1"})
    for path in (truncated, garbage, foreign, tmp_path):
        assert chunk_matches(path, "c-1", "cfg-1") is False
        with pytest.raises(OutputError):
            read_chunk_meta(path)


def test_looks_done_checks_the_superblock_not_the_content(tmp_path: Path, frames: np.ndarray) -> None:
    """The quick check of status and merge: any complete HDF5 file under the chunk's name; never a
    truncated, empty, foreign-format or still-open one (run still decides by chunk_matches)."""
    from reduction.azint.kind import AZINT1D
    from reduction.io.nexus import hdf5_complete

    res = _integrate(GEO, frames[:2], "azint1d", "q_nm^-1", None)
    good = tmp_path / "c-1.h5"
    write_chunk(good, res, _meta("c-1", "azint1d", "/raw/x.h5", "1.1", 0, 2, GEO, None))
    data = good.read_bytes()
    assert AZINT1D.looks_done(good, "c-1", "cfg-1") and hdf5_complete(good)
    for n in (0, 7, 8, 15, 30, 47, 60, 100, 1500, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut{n}.h5"
        cut.write_bytes(data[:n])
        assert not hdf5_complete(cut), f"truncated to {n} bytes"
    longer = tmp_path / "longer.h5"
    longer.write_bytes(data + b"\0" * 10)  # HDF5 opens a file longer than its end-of-file address
    assert hdf5_complete(longer) and h5py.File(longer, "r").close() is None
    (tmp_path / "text.h5").write_text("not an hdf5 file at all " * 10)
    assert not hdf5_complete(tmp_path / "text.h5") and not hdf5_complete(tmp_path / "absent.h5")
    assert not hdf5_complete(tmp_path)
    for libver in ("earliest", "v108", "v110", "latest"):
        with h5py.File(tmp_path / f"{libver}.h5", "w", libver=libver) as f:
            f["x"] = np.arange(3)
            f.flush()
            # superblocks from v2 on say while the file is open for writing; v0 cannot (chunk files are
            # closed before they are renamed into place)
            assert hdf5_complete(tmp_path / f"{libver}.h5") == (libver == "earliest")
        assert hdf5_complete(tmp_path / f"{libver}.h5")


def test_chunk_writer_is_atomic(tmp_path: Path, frames: np.ndarray) -> None:
    res = _integrate(GEO, frames[:4], "azint1d", "q_nm^-1", None)
    path = tmp_path / "c.h5"
    meta = _meta("c-1", "azint1d", "/raw/x.h5", "1.1", 0, 4, GEO, None)
    # block by block, as the worker writes
    first, second = (replace(res, **{k: getattr(res, k)[sl] for k in ("intensity", "sigma", "signal", "variance",
                                                                       "normalization", "count")})
                     for sl in (slice(0, 3), slice(3, 4)))
    with ChunkWriter(path, meta) as writer:
        writer.write(3, second)
        assert not path.exists()  # not before every frame is in
        writer.write(0, first)
    np.testing.assert_array_equal(read_chunk(path)[0].intensity, res.intensity)
    before = path.read_bytes()
    # a failure inside the block, frames never written, a wrong frame count: old file kept, no temp file
    with pytest.raises(RuntimeError):
        with ChunkWriter(path, meta) as writer:
            writer.write(0, first)
            raise RuntimeError("worker killed")
    with pytest.raises(OutputError, match="never written"):
        with ChunkWriter(path, meta) as writer:
            writer.write(0, first)
    with pytest.raises(OutputError, match="stack of 4 frames"):
        write_chunk(path, first, meta)
    with pytest.raises(OutputError, match="outside"):
        with ChunkWriter(path, meta) as writer:
            writer.write(2, first)
    assert path.read_bytes() == before and _no_temp_files(tmp_path)


# -- master file: data ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["azint1d", "azint2d"])
def test_master_holds_the_chunks_frame_by_frame(tmp_path: Path, frames: np.ndarray, kind: str) -> None:
    specs, expected = _campaign(tmp_path, frames, kind=kind)
    master = tmp_path / "exp" / "session.nxs"
    report = write_master(master, specs)
    assert report.complete and not report.missing_frames and report.mode == "vds"
    with h5py.File(master, "r") as f:
        assert f.attrs["default"] == specs[0].name
        for spec in specs:
            entry, exp = f[spec.name], expected[spec.name]
            assert entry.attrs["default"] == "data" and entry["definition"][()].decode() == f"NX{kind}"
            data = entry["data"]
            assert data["I"].is_virtual and data["I"].shape == exp["intensity"].shape
            for i in range(spec.nframes):  # frame by frame
                np.testing.assert_array_equal(data["I"][i], exp["intensity"][i])
            np.testing.assert_array_equal(data["I_errors"][()], exp["sigma"])
            for name in ("signal", "variance", "normalization", "count"):
                np.testing.assert_array_equal(entry["accumulators"][name][()], exp[name])
            np.testing.assert_array_equal(entry["monitor/data"][()], exp["monitor"])
            np.testing.assert_array_equal(data["norm"][()], exp["count"][0])
            np.testing.assert_array_equal(data["radial_axis"][()], exp["radial"])
            # what neither validator checks (docs): I's units and rank
            assert data["I"].attrs["units"] == "arbitrary units" and data["I"].ndim == (2 if kind == "azint1d" else 3)
            assert entry["monitor_applied"][()] == np.True_ and entry["instrument/name"][()] == b"id00"
            inp = entry["reduction/input"]
            assert json.loads(inp["config"][()]) == CONFIG and inp["poni"][()].decode() == GEO.to_poni()
            assert inp["raw_file"][()].decode() == spec.dataset and inp["scan"][()].decode() == spec.scan
            assert [c.decode() for c in inp["chunk_ids"][()]] == spec.chunk_ids
            assert entry["reduction/program"][()] == b"xreduce"
    _assert_valid(master)


def test_vds_paths_are_relative_and_survive_moving_the_folder(tmp_path: Path, frames: np.ndarray) -> None:
    out = tmp_path / "out"
    specs, expected = _campaign(out, frames, nentries=1)
    master = out / "proposal" / "id00" / "session.nxs"  # two levels below the chunks' parent
    write_master(master, specs)
    with h5py.File(master, "r") as f:
        sources = {s.file_name for s in f[specs[0].name]["data/I"].virtual_sources()}
    assert sources == {f"../../chunks/{cid}.h5" for cid in specs[0].chunk_ids}
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(out, moved)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)  # the sources resolve from the master's folder, not the working directory
        with h5py.File(moved / "proposal" / "id00" / "session.nxs", "r") as f:
            np.testing.assert_array_equal(f[specs[0].name]["data/I"][()], expected[specs[0].name]["intensity"])
    finally:
        os.chdir(cwd)


def test_copy_mode_is_self_contained(tmp_path: Path, frames: np.ndarray) -> None:
    specs, expected = _campaign(tmp_path, frames, kind="azint2d")
    master = tmp_path / "session.nxs"
    report = write_master(master, specs, mode="copy")
    assert report.complete and report.mode == "copy"
    shutil.rmtree(tmp_path / "chunks")
    with h5py.File(master, "r") as f:
        for spec in specs:
            assert not f[spec.name]["data/I"].is_virtual
            np.testing.assert_array_equal(f[spec.name]["data/I"][()], expected[spec.name]["intensity"])
            np.testing.assert_array_equal(f[spec.name]["accumulators/count"][()], expected[spec.name]["count"])
    _assert_valid(master)


@pytest.mark.parametrize("mode", ["vds", "copy"])
def test_missing_chunks_are_nan_and_listed(tmp_path: Path, frames: np.ndarray, mode: str) -> None:
    specs, expected = _campaign(tmp_path, frames, nentries=2)
    failed_id = specs[0].chunk_ids[1]  # frames [5, 9): failed (no result file)
    a, b, _ = specs[0].chunks[1]
    specs[0].chunks[1] = (a, b, None)
    damaged = specs[1].chunks[2][2]  # frames [9, 12): a damaged file
    damaged.write_bytes(b"\0" * 100)
    master = tmp_path / "session.nxs"
    report = write_master(master, specs, mode=mode)
    assert not report.complete
    assert report.missing_frames == {specs[0].name: [(5, 9)], specs[1].name: [(9, 12)]}
    assert report.missing_chunk_ids == [failed_id, specs[1].chunk_ids[2]]
    assert "chunk failed" in report.summary()
    with h5py.File(master, "r") as f:
        for spec, (m0, m1) in ((specs[0], (5, 9)), (specs[1], (9, 12))):
            entry, exp = f[spec.name], expected[spec.name]
            keep = np.r_[0:m0, m1:spec.nframes]
            for ds in (entry["data/I"], entry["data/I_errors"], entry["accumulators/signal"],
                       entry["accumulators/count"], entry["monitor/data"]):
                assert np.isnan(ds[m0:m1]).all(), ds.name  # never zeros
            np.testing.assert_array_equal(entry["data/I"][keep], exp["intensity"][keep])
            table = entry["chunks"]
            assert table["missing_frames"][()].tolist() == [[m0, m1]]
            assert [s.decode() for s in table["missing_chunk_ids"][()]] == [spec.chunk_ids[[5, 9].index(m0) + 1]]
            assert table["n_missing_frames"][()] == m1 - m0
            assert b"missing" in table["status"][()][[0, 5, 9].index(m0)]
            assert b"(NaN)" in entry["reduction/note"][()]
    _assert_valid(master)


def test_entry_without_any_chunk_is_skipped_and_reported(tmp_path: Path, frames: np.ndarray) -> None:
    specs, _ = _campaign(tmp_path, frames, nentries=2)
    specs[1].chunks = [(a, b, None) for a, b, _ in specs[1].chunks]
    report = write_master(tmp_path / "m.nxs", specs)
    assert report.skipped_entries == [specs[1].name] and not report.complete
    with h5py.File(tmp_path / "m.nxs", "r") as f:
        assert list(f) == [specs[0].name]
    specs[0].chunks = [(a, b, None) for a, b, _ in specs[0].chunks]
    with pytest.raises(OutputError, match="nothing to merge"):
        write_master(tmp_path / "none.nxs", specs)
    assert not (tmp_path / "none.nxs").exists()


def test_inconsistent_chunk_is_not_merged(tmp_path: Path, frames: np.ndarray) -> None:
    specs, _ = _campaign(tmp_path, frames, nentries=1)
    # the chunk of frames [5, 9) of another scan: refused, reported, NaN
    other = tmp_path / "other.h5"
    write_chunk(other, _integrate(GEO, frames[:4], "azint1d", "q_nm^-1", np.ones(4)),
                _meta(specs[0].chunk_ids[1], "azint1d", specs[0].dataset, "7.1", 5, 9, GEO, np.ones(4)))
    specs[0].chunks[1] = (5, 9, other)
    report = write_master(tmp_path / "m.nxs", specs)
    assert report.missing_frames == {specs[0].name: [(5, 9)]}
    assert "scan='7.1'" in report.entries[0].missing[0].reason


def test_master_write_is_atomic(tmp_path: Path, frames: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    specs, _ = _campaign(tmp_path, frames, nentries=2)
    master = tmp_path / "session.nxs"
    write_master(master, specs[:1])
    before = master.read_bytes()
    import reduction.azint.nexus as nexus

    calls = []

    def failing(f, plan, mode, master_dir):
        calls.append(plan.spec.name)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(f, plan, mode, master_dir)

    original = nexus._write_entry
    monkeypatch.setattr(nexus, "_write_entry", failing)
    with pytest.raises(OutputError, match="disk full"):
        write_master(master, specs)
    assert master.read_bytes() == before and _no_temp_files(tmp_path)
    monkeypatch.undo()
    write_master(master, specs)  # success replaces it
    with h5py.File(master, "r") as f:
        assert set(f) == {s.name for s in specs}
    assert _no_temp_files(tmp_path)
    with pytest.raises(OutputError, match="duplicate"):
        write_master(master, [specs[0], specs[0]])
    with pytest.raises(OutputError, match="mode"):
        write_master(master, specs, mode="link")


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["azint1d", "azint2d"])
@pytest.mark.parametrize("unit", UNITS)
def test_every_entry_validates_for_every_unit(tmp_path: Path, frames: np.ndarray, kind: str, unit: str) -> None:
    geo = FLAT_GEO if unit == "r_mm" else GEO
    monitor = unit != "2th_rad"  # also an entry without NXmonitor
    specs, expected = _campaign(tmp_path, frames, kind=kind, unit=unit, nentries=2, nframes=6, cuts=(4,),
                                monitor=monitor, geo=geo, error_model=None if unit == "q_A^-1" else "poisson")
    master = tmp_path / "session.nxs"
    write_master(master, specs)
    _assert_valid(master)
    long_name, units = {"q_nm^-1": ("q", "1/nm"), "q_A^-1": ("q", "1/angstrom"), "2th_deg": ("2theta", "deg"),
                        "2th_rad": ("2theta", "rad"), "r_mm": ("2theta", "deg")}[unit]
    with h5py.File(master, "r") as f:
        data = f[specs[0].name]["data"]
        assert (data["radial_axis"].attrs["long_name"], data["radial_axis"].attrs["units"]) == (long_name, units)
        assert ("monitor" in f[specs[0].name]) == monitor and ("I_errors" in data) == (unit != "q_A^-1")
        radial = expected[specs[0].name]["radial"]
        if unit == "r_mm":  # 2θ = atan(r / dist), exact for an untilted detector; r kept beside
            np.testing.assert_allclose(data["radial_axis"][()], np.degrees(np.arctan(radial * 1e-3 / geo.dist)))
            np.testing.assert_array_equal(f[specs[0].name]["accumulators/radial_r_mm"][()], radial)
        else:
            np.testing.assert_array_equal(data["radial_axis"][()], radial)


@pytest.mark.parametrize("wavelength, energy", [(None, None), (None, 15.0), (0.8e-10, None)])
def test_monochromator_from_wavelength_or_energy_or_unknown(tmp_path: Path, frames: np.ndarray,
                                                           wavelength: float | None, energy: float | None) -> None:
    geo = Geometry(dist=0.05, poni1=0.002, poni2=0.003, detector=DET)  # no wavelength: 2θ units only
    meta = replace(_meta("c-1", "azint1d", "/raw/x.h5", "1.1", 0, 3, geo, None), wavelength=wavelength,
                   energy_kev=energy)
    write_chunk(tmp_path / "c-1.h5", _integrate(geo, frames[:3], "azint1d", "2th_deg", None), meta)
    spec = EntrySpec("x_1.1", "azint1d", "/raw/x.h5", "1.1", 3, [(0, 3, tmp_path / "c-1.h5")], chunk_ids=["c-1"])
    write_master(tmp_path / "m.nxs", [spec])
    with h5py.File(tmp_path / "m.nxs", "r") as f:
        mono = f["x_1.1/instrument/monochromator"]
        wl, en = mono["wavelength"][()], mono["energy"][()]
    if wavelength is None and energy is None:
        assert np.isnan(wl) and np.isnan(en)  # unknown, said so in reduction/note; never a made-up value
    else:
        assert wl * en == pytest.approx(12.398419843320026)
        assert wl == pytest.approx(0.8) if wavelength else en == 15.0
    _assert_valid(tmp_path / "m.nxs")


def test_r_mm_with_a_tilted_detector_is_refused(tmp_path: Path, frames: np.ndarray) -> None:
    specs, _ = _campaign(tmp_path, frames, unit="r_mm", nentries=1, nframes=4, cuts=())
    with pytest.raises(OutputError, match="tilted"):
        write_master(tmp_path / "m.nxs", specs)
    assert not (tmp_path / "m.nxs").exists() and _no_temp_files(tmp_path)


def _delete(path: str):
    return lambda entry: entry.__delitem__(path)


def _set_attr(path: str, name: str, value):
    return lambda entry: entry[path].attrs.__setitem__(name, value)


def _replace(path: str, value):
    return lambda entry: (entry.__delitem__(path), entry.__setitem__(path, value))


BROKEN = {  # what must make a file invalid; the first three only nexusformat sees, the rest only pynxtools
    "no monochromator": _delete("instrument/monochromator"),
    "no source": _delete("instrument/source"),
    "no NXdata": _delete("data"),
    "wrong @signal": _set_attr("data", "signal", "J"),
    "@axes as one string": _set_attr("data", "axes", "['.', 'radial_axis']"),
    "wrong @interpretation": _set_attr("data", "interpretation", "image"),
    "probe X-rays": _replace("instrument/source/probe", "X-rays"),
    "boolean as int8": _replace("solid_angle_applied", np.int8(1)),
    "date without timezone": _replace("reduction/date", "2026-01-01T00:00:00"),
    "radial long_name r": _set_attr("data/radial_axis", "long_name", "r"),
    "wavelength in keV": _set_attr("instrument/monochromator/wavelength", "units", "keV"),
    "no reduction/input": _delete("reduction/input"),
    "no normalization_applied": _delete("normalization_applied"),
    "wrong definition": _replace("definition", "NXazint9d"),
}


@pytest.fixture(scope="module")
def valid_master(tmp_path_factory: pytest.TempPathFactory, frames: np.ndarray) -> Path:
    out = tmp_path_factory.mktemp("valid")
    specs, _ = _campaign(out, frames, nentries=1, nframes=4, cuts=(2,))
    write_master(out / "m.nxs", specs, mode="copy")
    _assert_valid(out / "m.nxs")
    return out / "m.nxs"


@pytest.mark.parametrize("fault", list(BROKEN))
def test_validation_reports_broken_files(tmp_path: Path, valid_master: Path, fault: str) -> None:
    broken = tmp_path / "broken.nxs"
    shutil.copy(valid_master, broken)
    with h5py.File(broken, "a") as f:
        name = next(iter(f))
        BROKEN[fault](f[name])
    problems = validate_entry(broken, f"/{name}", None if fault != "wrong definition" else "NXazint1d")
    assert problems, f"{fault} was not reported"
    if fault == "wrong definition":
        assert validate_entry(broken, f"/{name}")  # against its own (unknown) definition: an error too


def test_default_plot_is_found(valid_master: Path) -> None:
    with h5py.File(valid_master, "r") as f:
        entry = f[f.attrs["default"]]
        data = entry[entry.attrs["default"]]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "I"
        assert list(data.attrs["axes"]) == [".", "radial_axis"]
    from silx.io import nxdata  # silx comes with pyFAI, the test oracle (test extra)

    with h5py.File(valid_master, "r") as f:
        default = nxdata.get_default(f)
        assert default is not None and default.signal.name.endswith("/data/I")


# -- preview and speed ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["azint1d", "azint2d"])
def test_preview_png(tmp_path: Path, frames: np.ndarray, kind: str) -> None:
    specs, _ = _campaign(tmp_path, frames, kind=kind, nentries=3)
    specs[1].chunks[1] = (*specs[1].chunks[1][:2], None)
    master = tmp_path / "session.nxs"
    write_master(master, specs)
    png = write_preview(master, tmp_path / "session.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert _no_temp_files(tmp_path)


def test_merge_of_six_entries_is_quick(tmp_path: Path, frames: np.ndarray) -> None:
    specs, _ = _campaign(tmp_path, frames, nentries=6, nframes=20, cuts=(8, 16))
    t0 = time.perf_counter()
    report = write_master(tmp_path / "session.nxs", specs)
    merge_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _assert_valid(tmp_path / "session.nxs")
    validate_s = time.perf_counter() - t0
    print(f"merge 6 entries x 20 frames: {merge_s:.3f} s (report {report.seconds:.3f} s), "
          f"validation (both validators): {validate_s:.2f} s")
    assert merge_s < 5


def test_a_merge_in_parts_by_a_pool_of_processes_gives_the_same_master(tmp_path: Path, frames: np.ndarray,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from reduction.io import merge, pool

    specs, expected = _campaign(tmp_path, frames, nentries=7, nframes=20, cuts=(8, 16))
    specs[1].chunks[1] = (*specs[1].chunks[1][:2], None)  # a failed chunk: reported the same way
    specs[4].chunks = [(a, b, None) for a, b, _ in specs[4].chunks]  # an entry without any chunk: not written
    serial = write_master(tmp_path / "serial.nxs", specs)
    pools: list[int] = []

    class Pool(pool.ProcessPoolExecutor):  # the real pool, counted
        def __init__(self, processes: int, **kwargs) -> None:
            pools.append(processes)
            super().__init__(processes, **kwargs)

    monkeypatch.setattr(pool, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(merge, "ENTRIES_PER_PROCESS", 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    pooled = write_master(tmp_path / "pooled.nxs", specs)
    assert pools == [3]
    assert pooled.missing_frames == serial.missing_frames
    assert serial.missing_frames["sample_0001_2.1"] == [(8, 16)] and pooled.skipped_entries == ["sample_0001_5.1"]
    with h5py.File(tmp_path / "serial.nxs") as a, h5py.File(tmp_path / "pooled.nxs") as b:
        assert list(b) == [s.name for s in specs if s.name != "sample_0001_5.1"]
        assert {k: v for k, v in b.attrs.items() if k != "file_time"} == {
            k: (v.replace("serial", "pooled") if isinstance(v, str) else v) for k, v in a.attrs.items()
            if k != "file_time"}
        dated = [(row[0], row[:-1]) if row[0].endswith("reduction/date") else (row[0], row) for row in describe(b)]
        assert dated == [(row[0], row[:-1]) if row[0].endswith("reduction/date") else (row[0], row)
                         for row in describe(a)]
        np.testing.assert_array_equal(b["sample_0001_1.1/data/I"][()], expected["sample_0001_1.1"]["intensity"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "the part files are removed"
