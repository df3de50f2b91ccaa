"""Input faults found before any work (exit 2, naming the key) and the config spellings the tool
itself suggests: pyFAI unit names and paths with spaces on the command line, a detector or monitor
name absent from the first scan, a radial range off the detector, an output folder in the raw data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import pytest

from hpc.cli import main
from tests.campaign_helpers import campaign_overrides, small_experiment


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return small_experiment(tmp_path_factory.mktemp("inputs"), n_datasets=1, n_scans=2, n_frames=6)


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def refused(capsys, argv: list[str]) -> str:
    """Run ``xreduce ARGV``: it must exit 2 with a one-line error (no traceback); return it."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    return err


# -- spellings the tool suggests --------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["q_nm^-1", "q_A^-1"])
def test_pyfai_unit_names_parse_unquoted(experiment, tmp_path, capsys, unit):
    out = tmp_path / "out"
    assert main(["plan", *campaign_overrides(experiment, out, f"reduction.unit={unit}", frames_per_chunk=3)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["config"]["reduction"]["unit"] == unit


def test_paths_with_spaces(tmp_path, capsys):
    exp = small_experiment(tmp_path / "my experiment", n_datasets=1, n_scans=1, n_frames=4)
    assert " " in str(exp.raw_data)
    out = tmp_path / "my results"
    assert main(["run", *campaign_overrides(exp, out, "reduction.unit=2th_deg", frames_per_chunk=4)]) == 0
    (master,) = out.glob("*.nxs")
    assert master.stat().st_size > 0


def test_a_path_split_by_the_shell_says_how_to_quote(experiment, tmp_path, capsys):
    err = refused(capsys, ["plan", *campaign_overrides(experiment, tmp_path / "out", frames_per_chunk=3),
                           "campaign.raw_data=/data/my", "experiment/RAW_DATA"])
    assert "'experiment/RAW_DATA' is not an override" in err
    assert '"campaign.raw_data=/data/my experiment/RAW_DATA"' in err


# -- mistakes found up front ------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("campaign.detector=eiger", ["campaign.detector=eiger: no detector 'eiger' in any of the 2 scans sampled",
                                 "holds detectors (frame datasets): pilatus)"]),
    ("campaign.monitor=i0", ["campaign.monitor=i0: no monitor 'i0' in any of the 2 scans sampled",
                             "holds counters: mon)"]),
    ("reduction.radial_range=[500,600]", ["reduction.radial_range=[500.0, 600.0]:",
                                          "wholly above the detector's range"]),
])
def test_mistakes_every_chunk_would_make_exit_2_before_any_work(experiment, tmp_path, capsys, override, expected):
    out = tmp_path / "out"
    before = files_under(Path(experiment.raw_data))
    err = refused(capsys, ["run", *campaign_overrides(experiment, out, override, frames_per_chunk=3)])
    for text in expected:
        assert text in err
    assert not (out / "plan.json").exists() and not (out / "chunks").exists()
    assert files_under(Path(experiment.raw_data)) == before


def test_a_first_scan_without_the_detector_is_that_scans_problem(tmp_path, capsys):
    """An alignment scan without the detector first: the campaign runs, that scan alone fails."""
    exp = small_experiment(tmp_path, n_datasets=1, n_scans=2, n_frames=4)
    (dataset,) = Path(exp.raw_data).rglob("*_0001.h5")
    with h5py.File(dataset, "r+") as f:
        del f["1.1/measurement/pilatus"]
    out = tmp_path / "out"
    assert main(["run", *campaign_overrides(exp, out, frames_per_chunk=4)]) == 1
    printed = capsys.readouterr()
    assert "no detector 'pilatus' under /1.1/measurement" in printed.out + printed.err
    (master,) = out.glob("*.nxs")
    with h5py.File(master, "r") as f:
        assert [name for name in f if name.endswith("_2.1")], list(f)


def test_a_radial_range_overlapping_the_detector_is_accepted(experiment, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["plan", *campaign_overrides(experiment, out, "reduction.radial_range=[1,1000]",
                                             frames_per_chunk=3)]) == 0


@pytest.mark.parametrize("where", ["inside", "symlink"])
def test_an_output_inside_raw_data_is_refused(experiment, tmp_path, capsys, where):
    raw = Path(experiment.raw_data)
    out = raw / "xreduce_out"
    if where == "symlink":  # the same folder under another spelling
        link = tmp_path / "raw-link"
        link.symlink_to(raw)
        out = link / "xreduce_out"
    before = files_under(raw)
    err = refused(capsys, ["run", *campaign_overrides(experiment, out, frames_per_chunk=3)])
    assert f"campaign.output={out}: inside the raw data" in err
    assert not os.path.lexists(raw / "xreduce_out")
    assert files_under(raw) == before
