"""`backend=mpi` with real Open MPI ranks (mpirun -n 3) on generated BLISS data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from campaign_helpers import campaign_overrides, intensities, small_experiment

from hpc.cli import main

# run as root in CI; one engine thread everywhere so that MPI and local sum in the same order
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "XREDUCE_THREADS": "1",
       "OMPI_MCA_rmaps_base_oversubscribe": "1"}

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module", autouse=True)
def open_mpi() -> None:
    if shutil.which("mpirun") is None:
        pytest.fail("Open MPI is not installed: run `make test`, or as root "
                    "`apt-get install openmpi-bin libopenmpi-dev` and `pip install mpi4py`")


@pytest.fixture()
def experiment(tmp_path):
    return small_experiment(tmp_path)


def overrides(exp, out: Path, *extra: str) -> list[str]:
    return campaign_overrides(exp, out, *extra, frames_per_chunk=3)


def mpirun(args: list[str], n: int = 3) -> subprocess.CompletedProcess:
    return subprocess.run(["mpirun", "-n", str(n), "--oversubscribe", sys.executable, "-m", "hpc.cli", *args],
                          capture_output=True, text=True, env=ENV, timeout=300)


def local(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpc.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=300)


def test_mpi_ranks_give_the_same_bytes_as_local(experiment, tmp_path) -> None:
    out, ref = tmp_path / "mpi", tmp_path / "local"
    done = mpirun(["run", *overrides(experiment, out, "backend=mpi")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("16 chunks: 0 already done, 16 to run") == 1, "only rank 0 plans"
    assert local(["run", *overrides(experiment, ref)]).returncode == 0
    theirs, ours = intensities(out), intensities(ref)
    assert theirs.keys() == ours.keys() and len(ours) == 4
    for name in ours:
        assert theirs[name].tobytes() == ours[name].tobytes(), name
    again = mpirun(["run", *overrides(experiment, out, "backend=mpi")])  # nothing to do: nobody hangs
    assert again.returncode == 0 and "16 already done, 0 to run" in again.stdout


def test_a_corrupt_chunk_fails_alone(experiment, tmp_path, capsys) -> None:
    lima = sorted((experiment.datasets[0].parent / "scan0001").glob("pilatus_*.h5"))[1]
    lima.write_bytes(lima.read_bytes()[:2000])  # frames 4-7 of scan 1.1: truncated
    out = tmp_path / "out"
    done = mpirun(["run", *overrides(experiment, out, "backend=mpi")])
    assert done.returncode == 1, done.stdout + done.stderr
    capsys.readouterr()
    main(["status", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    failed = [c for c in report["chunks"] if c["state"] == "failed"]
    assert report["counts"]["done"] == 14 and len(failed) == 2  # chunks [3,6) and [6,9) read that file
    assert all(lima.name in c["reason"] for c in failed)


def test_a_single_rank_is_told_how_to_launch(experiment, tmp_path) -> None:
    done = local(["run", *overrides(experiment, tmp_path / "out", "backend=mpi")])
    assert done.returncode == 1 and "mpirun -n 4 xreduce run backend=mpi" in done.stderr
