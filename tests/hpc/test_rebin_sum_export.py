"""`xreduce rebin`, `xreduce sum` and `merge.export` end to end on a reduced generated experiment:
the new masters validate, equal a direct reduction at the coarse grid / the sum of the frames, and
the ASCII files read back to the master's numbers; bad inputs exit 2 naming the file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from campaign_helpers import campaign_overrides, small_experiment
from nexus_validation import validate_file

from hpc.cli import main


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """One dataset × 2 scans × 6 frames reduced at 200 and at 50 bins (same range), with ASCII export."""
    tmp = tmp_path_factory.mktemp("rebin")
    exp = small_experiment(tmp, n_datasets=1, n_scans=2, n_frames=6, frames_per_file=3)
    masters = {}
    for npt in (200, 50):
        out = tmp / f"out{npt}"
        args = campaign_overrides(exp, out, "reduction.engine=numpy", "reduction.radial_range=[1.0,30.0]",
                                  "merge.export=[xye,dat]", frames_per_chunk=4, npt=npt)
        assert main(["run", *args]) == 0
        (masters[npt],) = out.glob("*.nxs")
    return masters


def read(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        return {name: {"I": e["data/I"][()], "sigma": e["data/I_errors"][()], "edges": e["data/radial_axis_edges"][()],
                       "radial": e["data/radial_axis"][()], "signal": e["accumulators/signal"][()],
                       "normalization": e["accumulators/normalization"][()],
                       "variance": e["accumulators/variance"][()]} for name, e in f.items()}


def test_rebin_equals_the_reduction_at_the_coarse_grid(reduced, tmp_path, capsys) -> None:
    out = tmp_path / "coarse.nxs"
    assert main(["rebin", str(reduced[200]), "--factor", "4", "-o", str(out)]) == 0
    assert f"master: {out}" in capsys.readouterr().out
    problems = validate_file(out)
    assert len(problems) == 2 and not any(problems.values()), problems
    rebinned, direct = read(out), read(reduced[50])
    assert rebinned.keys() == direct.keys()
    for name, got in rebinned.items():
        want = direct[name]
        np.testing.assert_array_equal(got["edges"], want["edges"])
        np.testing.assert_allclose(got["radial"], want["radial"], rtol=1e-12)
        # bbox: I exact up to the engine's rounding (the numpy engine sums integer frames' 1-D products in
        # float32 tiles, ~1e-7 relative; tests/reduction/test_rebin.py shows 1e-12 on float64 sums)
        np.testing.assert_allclose(got["I"], want["I"], rtol=1e-6, equal_nan=True)
        ok = np.isfinite(want["sigma"])
        assert np.all(got["sigma"][ok] <= want["sigma"][ok] * (1 + 1e-6))  # bbox: sigma a lower bound
    with h5py.File(out, "r") as f:
        entry = next(iter(f.values()))
        inp = entry["reduction/input"]
        assert inp["source_file"][()].decode() == str(reduced[200].resolve())
        assert inp["operation"][()].decode() == "rebin: 4 adjacent radial bins merged"
        assert [s.decode() for s in inp["source_entries"][()]] == [entry.name.lstrip("/")]
        assert "poni" in inp and "config" in inp


def test_sum_and_mean_of_frames(reduced, tmp_path) -> None:
    source = read(reduced[200])
    out = tmp_path / "sum.nxs"
    assert main(["sum", str(reduced[200]), "--frames", "1:5", "-o", str(out)]) == 0
    problems = validate_file(out)
    assert len(problems) == 2 and not any(problems.values()), problems
    summed = read(out)
    for name, got in summed.items():
        src = source[name]
        assert got["I"].shape == (1, 200)
        np.testing.assert_allclose(got["signal"][0], src["signal"][1:5].sum(axis=0), rtol=1e-12)
        # the demo campaign divides by the monitor: the summed frame's monitor is the summed monitor
        norm = src["normalization"][1:5].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.testing.assert_allclose(got["I"][0], src["signal"][1:5].sum(axis=0) / norm, rtol=1e-12)
            np.testing.assert_allclose(got["sigma"][0], np.sqrt(src["variance"][1:5].sum(axis=0)) / norm, rtol=1e-12)
    mean = tmp_path / "mean.nxs"
    names = list(source)
    assert main(["sum", str(reduced[200]), "--mean", "--combine", "both", "--entries", ",".join(names),
                 "-o", str(mean)]) == 0
    problems = validate_file(mean)
    assert list(problems) == ["/both"] and not any(problems.values()), problems
    got = read(mean)["both"]
    signal = sum(source[n]["signal"].sum(axis=0) for n in names)
    norm = sum(source[n]["normalization"].sum(axis=0) for n in names)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(got["I"][0], signal / norm, rtol=1e-12)
    with h5py.File(mean, "r") as f:
        assert f["both/reduction/input/frames_used"][()] == 12
        assert [s.decode() for s in f["both/reduction/input/source_entries"][()]] == names


def test_ascii_export_reads_back_to_the_master(reduced) -> None:
    folder = reduced[200].with_name(f"{reduced[200].stem}_export")
    source = read(reduced[200])
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.{fmt}" for n in source for fmt in ("xye", "dat"))
    for name, src in source.items():
        xye = np.loadtxt(folder / f"{name}.xye")
        dat = np.loadtxt(folder / f"{name}.dat")
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = src["normalization"].sum(axis=0)  # monitor applied: the sum's I is per summed monitor
            intensity = src["signal"].sum(axis=0) / norm
            sigma = np.sqrt(src["variance"].sum(axis=0)) / norm
        ok = np.isfinite(intensity)
        assert xye.shape == (ok.sum(), 3) and dat.shape == (ok.sum(), 2)
        np.testing.assert_allclose(xye[:, 0], src["radial"][ok], rtol=1e-9)
        np.testing.assert_allclose(xye[:, 1], intensity[ok], rtol=1e-9)
        np.testing.assert_allclose(xye[:, 2], sigma[ok], rtol=1e-9)
        np.testing.assert_array_equal(dat, xye[:, :2])
        header = (folder / f"{name}.xye").read_text().splitlines()[:9]
        assert any("wavelength:" in line and "angstrom" in line for line in header)
        assert any(line.startswith("# radial: q in 1/nm") for line in header)
        assert any(str(reduced[200].resolve()) in line for line in header)


def test_bad_inputs_exit_2_naming_the_file(reduced, tmp_path, capsys) -> None:
    master = str(reduced[200])
    png = reduced[200].with_suffix(".png")
    cases = [
        (["rebin", str(png), "--factor", "2"], f"{png} is not an HDF5 file"),
        (["rebin", master, "--factor", "3", "-o", str(tmp_path / "x.nxs")], "factor 3 does not divide the 200 bins"),
        (["rebin", master, "--factor", "2", "--entries", "nope", "-o", str(tmp_path / "x.nxs")],
         "has no NXazint entry nope"),
        (["rebin", master, "--factor", "2", "--azimuthal-factor", "2", "-o", str(tmp_path / "x.nxs")],
         "needs NXazint2d"),
        (["sum", master, "--frames", "3:9", "-o", str(tmp_path / "x.nxs")], "has 6 frames (0 to 5): frames 3:9"),
        (["sum", master, "-o", master], "is the source file"),
        (["rebin", str(tmp_path / "none.nxs"), "--factor", "2"], "none.nxs: no such file"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "x.nxs").exists()
    out = tmp_path / "y.nxs"
    assert main(["rebin", master, "--factor", "2", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["rebin", master, "--factor", "2", "-o", str(out)]) == 2
    assert f"output {out} exists" in capsys.readouterr().err
    assert main(["rebin", master, "--factor", "5", "-o", str(out), "--overwrite"]) == 0
    with h5py.File(out, "r") as f:
        assert next(iter(f.values()))["data/I"].shape == (6, 40)
