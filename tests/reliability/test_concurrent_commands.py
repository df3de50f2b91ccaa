"""Concurrent commands on one campaign: a plan written while a run goes on never changes the run's
work (the workers read an immutable, hash-named snapshot), and a second run is refused by the
campaign lock, naming its holder; a killed run's lock is taken over. Runs are real ``xreduce``
processes, paused with SIGSTOP where a test needs "while it runs" to be certain, not a race."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest
from campaign_helpers import campaign_overrides
from fault_helpers import run_xreduce, xreduce

from reduction.demo.bliss_writer import write_demo_experiment

N_CHUNKS = 64  # 2 datasets × 8 scans × 40 frames, 10 frames per chunk


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """The issue's BIG campaign, with a small detector: 64 chunks."""
    return write_demo_experiment(tmp_path_factory.mktemp("big") / "data", n_scans=8, n_frames=40,
                                 detector="Pilatus100k", frames_per_file=10)


def args(exp, out: Path, *extra: str) -> list[str]:
    return campaign_overrides(exp, out, *extra, frames_per_chunk=10)


def wait_for_file(path: Path, proc, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"xreduce ended before {path} appeared: {proc.communicate()[0]}"
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


def chunk_files(out: Path) -> list[Path]:
    return sorted((out / "chunks").glob("c-*.h5"))


def entries(out: Path) -> dict[str, int]:
    (master,) = out.glob("*.nxs")
    with h5py.File(master, "r") as f:
        return {name: f[name]["data"]["I"].shape[1] for name in f}


def test_a_plan_written_during_a_dask_run_changes_nothing_of_it(big, tmp_path) -> None:
    """Issue 12, item 1: `plan reduction.npt=500` while `run backend=dask` works: the plan is shown, not
    saved (the campaign is locked), and the run ends with all its 64 chunks at npt=100."""
    out = tmp_path / "out"
    run = xreduce("run", *args(big, out, "backend=dask", "backend.workers=2"), stderr=subprocess.STDOUT)
    wait_for_file(out / "plan.json", run)  # written once the run holds the lock
    os.kill(run.pid, signal.SIGSTOP)  # certainly "during the run"
    try:
        code, printed = run_xreduce("plan", *args(big, out, "reduction.npt=500"))
        assert code == 0, printed
        assert f"plan not saved: the campaign in {out} is being run by `xreduce run` (pid {run.pid}" in printed
        code, printed = run_xreduce("status", str(out))  # read-only views stay allowed
        assert code == 0, printed
    finally:
        os.kill(run.pid, signal.SIGCONT)
    printed = run.communicate(timeout=300)[0]
    assert run.returncode == 0, printed
    assert len(chunk_files(out)) == N_CHUNKS, "no chunk of the other plan was reduced"
    assert set(entries(out).values()) == {100}
    assert not (out / "campaign.lock").exists(), "the run released its lock"


def test_a_plan_replaced_under_a_running_campaign_does_not_reach_its_workers(big, tmp_path) -> None:
    """The lock aside (a plan.json replaced by hand or from a host that ignores it): the workers read
    the run's snapshot by chunk id, so `campaign.scans=1-2` written over plan.json changes nothing."""
    out = tmp_path / "out"
    code, printed = run_xreduce("plan", *args(big, out, "campaign.scans=1-2"))
    assert code == 0, printed
    other = (out / "plan.json").read_text()
    assert len(json.loads(other)["chunks"]) == 16
    (out / "plan.json").unlink()
    run = xreduce("run", *args(big, out, "backend=dask", "backend.workers=2"), stderr=subprocess.STDOUT)
    wait_for_file(out / "plan.json", run)
    os.kill(run.pid, signal.SIGSTOP)  # before its Dask workers start
    try:
        (out / "plan.json").write_text(other)
    finally:
        os.kill(run.pid, signal.SIGCONT)
    printed = run.communicate(timeout=300)[0]
    assert run.returncode == 0, printed
    assert f"{N_CHUNKS} chunks: 0 already done, {N_CHUNKS} to run" in printed
    assert len(chunk_files(out)) == N_CHUNKS
    assert len(entries(out)) == 16, "every scan of the run's own plan is in the master"
    (snapshot,) = (out / "plans").glob("*.json")
    assert len(json.loads(snapshot.read_text())["chunks"]) == N_CHUNKS


def test_a_second_run_is_refused_and_a_killed_runs_lock_taken_over(big, tmp_path) -> None:
    out = tmp_path / "out"
    first = xreduce("run", *args(big, out, "campaign.scans=1"), stderr=subprocess.STDOUT)
    wait_for_file(out / "campaign.lock", first)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        code, printed = run_xreduce("run", *args(big, out, "campaign.scans=1"))
        assert code == 1, printed
        assert f"is locked by `xreduce run` (pid {first.pid} on {os.uname().nodename}, started " in printed
        code, printed = run_xreduce("merge", *args(big, out, "campaign.scans=1"))
        assert code == 1 and "is locked by `xreduce run`" in printed, printed
    finally:
        os.kill(first.pid, signal.SIGKILL)  # as the OOM killer would: the lock stays behind
    first.communicate()
    holder = json.loads((out / "campaign.lock").read_text())
    assert holder["pid"] == first.pid
    code, printed = run_xreduce("run", *args(big, out, "campaign.scans=1"))
    assert code == 0, printed
    assert not (out / "campaign.lock").exists()
    assert len(chunk_files(out)) == 8 and len(entries(out)) == 2


def test_an_altered_snapshot_is_refused_by_the_worker(big, tmp_path) -> None:
    out = tmp_path / "out"
    code, printed = run_xreduce("run", *args(big, out, "campaign.scans=1"))
    assert code == 0, printed
    (snapshot,) = (out / "plans").glob("*.json")
    code, printed = run_xreduce("worker", "--plan", str(snapshot), "--group", "0")
    assert code == 0, printed
    snapshot.write_text(snapshot.read_text().replace('"scan": "1.1"', '"scan": "2.1"', 1))
    code, printed = run_xreduce("worker", "--plan", str(snapshot), "--group", "0")
    assert code == 1
    assert f"plan snapshot {snapshot} was altered" in printed and "Traceback" not in printed
