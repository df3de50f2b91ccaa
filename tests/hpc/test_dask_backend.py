"""`backend=dask` on a real distributed.LocalCluster, and from a notebook with a Client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from campaign_helpers import campaign_overrides, intensities, require_slurm_cluster, small_experiment

import hpc
from hpc.cli import main


@pytest.fixture()
def experiment(tmp_path):
    return small_experiment(tmp_path)


def overrides(exp, out: Path, *extra: str) -> list[str]:
    return campaign_overrides(exp, out, *extra, frames_per_chunk=4)


def test_local_cluster_matches_local_backend(experiment, tmp_path, capsys) -> None:
    out, ref = tmp_path / "dask", tmp_path / "local"
    assert main(["run", *overrides(experiment, out, "backend=dask", "backend.workers=2")]) == 0
    assert main(["run", *overrides(experiment, ref)]) == 0
    theirs, ours = intensities(out), intensities(ref)
    assert theirs.keys() == ours.keys() and len(ours) == 4
    for name in ours:
        np.testing.assert_allclose(theirs[name], ours[name], rtol=1e-6)
    capsys.readouterr()
    main(["status", str(out), "--json"])
    assert json.loads(capsys.readouterr().out)["counts"]["done"] == 12


def test_run_campaign_with_a_notebook_client(experiment, tmp_path) -> None:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        cfg = hpc.load_config(overrides(experiment, tmp_path / "out"))
        assert hpc.run_campaign(cfg, client=client) == 0
        assert client.status == "running", "a client passed in is not closed by xreduce"
    assert len(intensities(tmp_path / "out")) == 4


def test_unreachable_scheduler_fails_within_the_timeout(experiment, tmp_path, capsys) -> None:
    start = time.monotonic()
    code = main(["run", *overrides(experiment, tmp_path / "out", "backend=dask",
                                   "backend.scheduler_address=tcp://127.0.0.1:9", "backend.connect_timeout=3")])
    assert code == 1 and time.monotonic() - start < 30
    assert "cannot reach the Dask scheduler at backend.scheduler_address=tcp://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.slurm
def test_slurm_cluster_survives_a_cancelled_worker_job(tmp_path, capsys) -> None:
    """dask-jobqueue SLURMCluster on the test Slurm: scancel a worker job mid-campaign; the campaign
    still completes, with the same numbers as backend=local."""
    import subprocess
    import sys

    from reduction.demo.bliss_writer import write_demo_experiment

    require_slurm_cluster()
    exp = write_demo_experiment(tmp_path / "data", n_datasets=1, n_scans=2, n_frames=40, detector="Pilatus1M")
    out, ref = tmp_path / "dask", tmp_path / "local"
    args = overrides(exp, out, "backend=dask", "backend.cluster=slurm", "backend.interface=lo", "backend.jobs=2",
                     "backend.cpus_per_task=1", "backend.mem=2G", f"backend.log_directory={tmp_path / 'logs'}",
                     "partition.frames_per_chunk=1")
    runner = subprocess.Popen([sys.executable, "-m", "hpc.cli", "run", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    chunks, killed, deadline = out / "chunks", None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and runner.poll() is None:
        done = len(list(chunks.glob("*.h5"))) if chunks.exists() else 0
        jobs = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-n", "dask-worker", "-o", "%i"],
                              capture_output=True, text=True).stdout.split()
        if done >= 10 and len(jobs) == 2:
            subprocess.run(["scancel", jobs[0]], check=True)
            killed = (jobs[0], done)
        time.sleep(0.2)
    output, _ = runner.communicate(timeout=300)
    assert killed is not None, f"a worker job was cancelled while chunks remained:\n{output[-3000:]}"
    assert killed[1] < 80, f"the cancel came before the end ({killed[1]} of 80 chunks done)"
    assert runner.returncode == 0, output[-3000:]
    assert main(["run", *overrides(exp, ref, "partition.frames_per_chunk=1")]) == 0
    theirs, ours = intensities(out), intensities(ref)
    for name in ours:
        np.testing.assert_allclose(theirs[name], ours[name], rtol=1e-6)
