"""Masters and raw inputs under faults: an experiment whose chunks all failed does not block the
others' masters; ``status`` tells a missing or stale master ("merge needed", exit 1, also in
``--json``); a damaged dataset master file is a failure naming it (exit 1), while one still being
written is pending (exit 0); the campaign lock handed to Slurm jobs holds until they end."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from campaign_helpers import campaign_overrides, small_experiment

from hpc.cli import main
from hpc.errors import CampaignBusy
from hpc.lock import CampaignLock
from reduction.demo.bliss_writer import write_demo_experiment


def args(raw_data: Path, exp, out: Path, *extra: str) -> list[str]:
    overrides = campaign_overrides(exp, out, *extra, frames_per_chunk=5)
    return [f"campaign.raw_data={raw_data}" if o.startswith("campaign.raw_data=") else o for o in overrides]


def status_json(out: Path, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["status", str(out), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_an_experiment_without_a_finished_chunk_blocks_no_other_master(tmp_path, capsys) -> None:
    """Issue 12, item 2: two experiments, every lima file of the second one missing."""
    root = tmp_path / "data"
    healthy = write_demo_experiment(root, session="s1", n_datasets=1, n_scans=2, n_frames=10,
                                    detector="Pilatus100k", frames_per_file=5)
    broken = write_demo_experiment(root, session="s2", n_datasets=1, n_scans=1, n_frames=10,
                                   detector="Pilatus100k", frames_per_file=5)
    for lima in broken.raw_data.rglob("scan*/*.h5"):
        lima.unlink()
    out = tmp_path / "out"
    overrides = args(root / "ihch0000" / "id31", healthy, out, "campaign.datasets=[*/RAW_DATA/*/*/*.h5]")
    assert main(["run", *overrides]) == 1
    printed = capsys.readouterr().out
    good, bad = out / "ihch0000_id31_s1.nxs", out / "ihch0000_id31_s2.nxs"
    assert good.is_file() and f"master: {good}\n" in printed
    assert not bad.exists() and f"master: {bad} not written: none of the chunks of experiment " in printed
    assert "2 of 6 chunks failed:" in printed and "chunk " in printed and "reason" in printed
    good.unlink()
    assert main(["merge", *overrides]) == 1, "xreduce merge: the same"
    printed = capsys.readouterr().out
    assert good.is_file() and f"master: {bad} not written" in printed and "reason" in printed


def test_status_says_merge_needed_for_a_missing_or_stale_master(tmp_path, capsys) -> None:
    """Issue 12, item 5: status said "all done", rc 0, whatever the master."""
    exp = small_experiment(tmp_path, n_datasets=1, n_scans=2, n_frames=10, frames_per_file=5)
    out = tmp_path / "out"
    assert main(["run", *args(exp.raw_data, exp, out)]) == 0
    (master,) = out.glob("*.nxs")
    code, report = status_json(out, capsys)
    assert code == 0 and report["merge_needed"] is False
    assert report["masters"] == [{"experiment": "ihch0000/id31/20261124", "master": str(master),
                                  "state": "merged", "reason": ""}]

    master.unlink()  # killed during the merge of a first run: no master at all
    code, report = status_json(out, capsys)
    assert code == 1 and report["merge_needed"] is True and report["masters"][0]["reason"] == "no master file"
    assert main(["status", str(out)]) == 1
    assert f"merge needed: {master}: no master file" in capsys.readouterr().out
    assert main(["merge", *args(exp.raw_data, exp, out)]) == 0
    assert status_json(out, capsys)[0] == 0

    old = tmp_path / "old.nxs"  # a parameter change, killed during its merge: the old master stays
    shutil.copy2(master, old)
    assert main(["run", *args(exp.raw_data, exp, out, "reduction.npt=150")]) == 0
    os.replace(old, master)
    os.utime(master)  # even newer than every chunk: what it holds tells
    code, report = status_json(out, capsys)
    assert code == 1 and report["masters"][0]["state"] == "merge needed"
    assert report["masters"][0]["reason"].startswith("it holds 4 chunk(s) of another config, not of config "
                                                     f"{report['config_hash'][:12]}")

    assert main(["merge", *args(exp.raw_data, exp, out, "reduction.npt=150")]) == 0
    code, report = status_json(out, capsys)
    assert code == 0
    chunk = out / "chunks" / f"{report['chunks'][0]['id']}.h5"
    later = master.stat().st_mtime + 10
    os.utime(chunk, (later, later))  # a chunk result rewritten after the merge
    code, report = status_json(out, capsys)
    assert code == 1 and report["masters"][0]["reason"] == "it is older than the newest chunk result"


def test_a_damaged_dataset_master_fails_the_run_and_the_status(tmp_path, capsys) -> None:
    """Issue 12, item 6: `head -c 38336 /dev/urandom > x_0002.h5` was "unfinished ... picked up by the
    next run", rc 0, on every run."""
    exp = small_experiment(tmp_path, n_datasets=2, n_scans=1, n_frames=10, frames_per_file=5)
    damaged = sorted(exp.raw_data.rglob("*_0002.h5"))[0]
    damaged.write_bytes(os.urandom(38336))
    out = tmp_path / "out"
    overrides = args(exp.raw_data, exp, out)
    assert main(["run", *overrides]) == 1
    printed = capsys.readouterr().out
    assert "1 of 3 chunks failed:" in printed and damaged.name in printed and "unfinished" not in printed
    assert "1 failed for good" in printed  # planning found it: not sent to a worker, so no error record
    assert list((out / "chunks").glob("*.error.json")) == []
    code, report = status_json(out, capsys)
    assert code == 1 and report["counts"]["failed"] == 1
    (failed,) = [c for c in report["chunks"] if c["state"] == "failed"]
    assert failed["dataset"] == str(damaged)
    assert failed["reason"].startswith(f"{damaged} scan *: unreadable dataset master file: {damaged}: cannot open")
    assert "not an HDF5 file" in failed["reason"]
    assert report["masters"][0]["state"] == "merged", "the other dataset is reduced and merged"
    assert main(["run", *overrides]) == 1, "every run says so, until the file is fixed"


@pytest.mark.parametrize("age", [0, 3600], ids=["just-written", "an-hour-old"])
def test_a_dataset_master_being_written_is_pending_a_truncated_one_failed(tmp_path, capsys, age) -> None:
    """An HDF5 file cut short: pending while it may still be being written (changed within a minute),
    failed once it has not changed for longer."""
    exp = small_experiment(tmp_path, n_datasets=2, n_scans=1, n_frames=10, frames_per_file=5)
    cut = sorted(exp.raw_data.rglob("*_0002.h5"))[0]
    cut.write_bytes(cut.read_bytes()[:4096])
    then = time.time() - age
    os.utime(cut, (then, then))
    out = tmp_path / "out"
    code = main(["run", *args(exp.raw_data, exp, out)])
    printed = capsys.readouterr().out
    if age:
        assert code == 1 and "1 of 3 chunks failed:" in printed and cut.name in printed
    else:
        assert code == 0, printed
        assert f"unfinished: {cut} scan *: picked up by the next run" in printed
        code, report = status_json(out, capsys)
        assert code == 0 and report["unfinished_scans"][0]["reason"].startswith("master file being written")


def test_the_lock_of_a_submission_holds_while_its_jobs_run(tmp_path) -> None:
    """What `submit` leaves: the lock held by its Slurm jobs (here: which jobs the scheduler calls
    active is the callable's answer), refused while one is queued or running, taken over after."""
    queued = ["1001", "1002"]
    submit = CampaignLock(tmp_path, "submit", lambda jobs: [j for j in jobs if j in queued])
    submit.acquire()
    submit.hand_to_jobs(["1001", "1002"])
    second = CampaignLock(tmp_path, "run", lambda jobs: [j for j in jobs if j in queued])
    with pytest.raises(CampaignBusy, match=r"locked by `xreduce submit` \(pid \d+ on .*\) with Slurm jobs "
                                           r"1001, 1002: jobs 1001, 1002 queued or running"):
        second.acquire()
    queued.clear()
    with second:
        assert json.loads((tmp_path / "campaign.lock").read_text())["command"] == "run"
    assert not (tmp_path / "campaign.lock").exists()
