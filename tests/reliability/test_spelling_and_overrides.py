"""What a user spells differently must not change the work: the same raw data reached through another
spelling of its path (a symbolic link to RAW_DATA) are the same chunks; `merge` takes the overrides it is given."""

from __future__ import annotations

import h5py
from fault_helpers import overrides

from hpc.cli import main
from reduction.demo.bliss_writer import write_demo_experiment


def test_raw_data_through_a_symlink_is_not_reduced_again(tmp_path, capsys) -> None:
    exp = write_demo_experiment(tmp_path / "data", n_datasets=1, n_scans=2, n_frames=8, detector="Pilatus100k",
                                frames_per_file=4)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["run", *overrides(exp, out, frames_per_chunk=4)]) == 0
    assert "4 to run" in capsys.readouterr().out
    linked = str(exp.raw_data).replace(str(tmp_path / "data"), str(link))
    again = [o if not o.startswith("campaign.raw_data=") else f"campaign.raw_data={linked}"
             for o in overrides(exp, out, frames_per_chunk=4)]
    assert main(["run", *again]) == 0
    text = capsys.readouterr().out
    assert "4 chunks: 4 already done, 0 to run" in text and "missing" not in text
    (master,) = out.glob("*.nxs")
    with h5py.File(master, "r") as f:
        assert sorted(f) == ["calibrants_0001_1.1", "calibrants_0001_2.1"]
        assert all(int(f[e]["chunks/n_missing_frames"][()]) == 0 for e in f)
    assert main(["status", str(out)]) == 0


def test_merge_takes_the_merge_mode_it_is_given(tmp_path, capsys) -> None:
    """`xreduce merge merge.mode=vds` after a copy-mode run rewrites the master with virtual datasets."""
    exp = write_demo_experiment(tmp_path / "data", n_datasets=1, n_scans=1, n_frames=8, detector="Pilatus100k",
                                frames_per_file=4)
    out = tmp_path / "out"
    assert main(["run", *overrides(exp, out, "merge.mode=copy", frames_per_chunk=4)]) == 0
    (master,) = out.glob("*.nxs")
    with h5py.File(master, "r") as f:
        assert not f["calibrants_0001_1.1/data/I"].is_virtual
    assert main(["merge", *overrides(exp, out, "merge.mode=vds", frames_per_chunk=4)]) == 0
    with h5py.File(master, "r") as f:
        assert f["calibrants_0001_1.1/data/I"].is_virtual
        assert f["calibrants_0001_1.1/chunks"].attrs["mode"] == "vds"
