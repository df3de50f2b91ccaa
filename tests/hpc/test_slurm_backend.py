"""`xreduce submit` on a real single-node Slurm (tests/cluster/start-slurm.sh): real sbatch, squeue,
sacct and scancel, real array tasks running the real worker on generated BLISS data."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from campaign_helpers import (
    campaign_overrides,
    intensities,
    job_state,
    require_slurm_cluster,
    small_experiment,
    submission,
    wait_for,
)

from hpc.cli import main

N_FRAMES = 12

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    require_slurm_cluster()


@pytest.fixture()
def experiment(tmp_path):
    return small_experiment(tmp_path, n_frames=N_FRAMES)


def overrides(exp, out: Path, *extra: str) -> list[str]:
    return campaign_overrides(exp, out, *extra, frames_per_chunk=2)


def test_array_with_throttle_packing_and_split_matches_local(experiment, tmp_path, capsys) -> None:
    out, local = tmp_path / "slurm", tmp_path / "local"
    capsys.readouterr()
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.chunks_per_task=2",
                                      "backend.array_parallelism=4", "backend.max_array_size=5",
                                      "backend.time=00:10:00")]) == 0
    printed = capsys.readouterr().out
    sub = submission(out)
    assert "24 to submit" in printed and sub["merge_job"] in printed
    # 24 chunks packed 2 per task → 12 groups → arrays of at most 5 tasks, each indexed from 0
    assert [tuple(a) for a in sub["arrays"]] == [(0, 5), (5, 5), (10, 2)] and len(sub["groups"]) == 12
    script = (Path(sub["folder"]) / "array_1.sbatch").read_text()
    assert "#SBATCH --array=0-4%4" in script and "--group \"${GROUP}\"" in script and "GROUP=$(( 5 + " in script
    assert f"afterany:{':'.join(sub['array_jobs'])}" in (Path(sub["folder"]) / "merge.sbatch").read_text()

    assert wait_for(sub["merge_job"]) == "COMPLETED"
    assert all(wait_for(job) == "COMPLETED" for job in sub["array_jobs"])
    assert main(["run", *overrides(experiment, local)]) == 0
    theirs, ours = intensities(out), intensities(local)
    assert theirs.keys() == ours.keys() and len(ours) == 4
    for name in ours:  # the same summation order whatever the threads per task (deterministic engines)
        assert theirs[name].tobytes() == ours[name].tobytes(), name
    capsys.readouterr()
    main(["status", str(out), "--json"])
    assert json.loads(capsys.readouterr().out)["counts"]["done"] == 24


def test_killed_and_failing_tasks_are_reported_then_a_resubmit_finishes(experiment, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    lima = sorted((experiment.datasets[1].parent / "scan0002").glob("pilatus_*.h5"))[0]
    hidden = lima.with_name("hidden.h5")
    lima.rename(hidden)  # frames 0-3 of dataset 2 scan 2.1: those chunks raise, naming the file
    slow = """backend.setup=['test "$SLURM_ARRAY_TASK_ID" != 0 || sleep 300']"""
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.chunks_per_task=4", slow)]) == 0
    sub = submission(out)
    (array_job,) = sub["array_jobs"]
    end = time.monotonic() + 60
    while job_state(f"{array_job}_0") != "RUNNING" and time.monotonic() < end:
        time.sleep(0.5)
    subprocess.run(["scancel", f"{array_job}_0"], check=True)  # a task killed mid-run
    # the merge job still runs (afterany), merges what is done and exits 1: the master is incomplete
    assert wait_for(sub["merge_job"]) == "FAILED"
    (merge_log,) = (Path(sub["folder"]) / "logs").glob("merge_*.out")
    assert "missing" in merge_log.read_text()

    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    reasons = {c["id"]: c["reason"] for c in report["chunks"] if c["state"] == "failed"}
    killed = set(sub["groups"][0])
    assert killed <= set(reasons) and all("Slurm: CANCELLED" in reasons[c] for c in killed)
    raised = set(reasons) - killed
    assert len(raised) == 2 and all(lima.name in reasons[c] and "RawDataError" in reasons[c] for c in raised)
    assert report["counts"]["done"] == 24 - len(killed) - 2

    hidden.rename(lima)
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.chunks_per_task=4")]) == 0
    assert "18 already done, 6 to submit" in capsys.readouterr().out
    assert wait_for(submission(out)["merge_job"]) == "COMPLETED"
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["done"] == 24
    local = tmp_path / "local"  # the campaign resumed after scancel gives what an uninterrupted run gives
    assert main(["run", *overrides(experiment, local)]) == 0
    theirs, ours = intensities(out), intensities(local)
    assert theirs.keys() == ours.keys() and all(theirs[n].tobytes() == ours[n].tobytes() for n in ours)


def test_gpu_request_and_refusal_of_a_concurrent_submit(experiment, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    slow = "backend.setup=['sleep 8']"
    args = overrides(experiment, out, "backend=slurm", "backend.gpus_per_task=1", "backend.partition=gpu",
                     "backend.chunks_per_task=12", slow)
    assert main(["submit", *args]) == 0
    sub = submission(out)
    assert "#SBATCH --gres=gpu:1" in (Path(sub["folder"]) / "array_0.sbatch").read_text()
    capsys.readouterr()
    assert main(["submit", *args]) == 1  # jobs still queued or running: refused, naming them
    err = capsys.readouterr().err
    assert "still has jobs queued or running (backend=slurm)" in err and sub["array_jobs"][0] in err
    assert wait_for(sub["merge_job"]) == "COMPLETED"
    logs = sorted((Path(sub["folder"]) / "logs").glob(f"{sub['array_jobs'][0]}_*.out"))
    assert logs and all(re.search(r"CUDA_VISIBLE_DEVICES=[01]\b", log.read_text()) for log in logs)


def test_a_task_past_its_time_limit_is_reported_as_timeout_then_resubmitted(experiment, tmp_path, capsys) -> None:
    """Slurm kills a task at its time limit without a word from xreduce: status learns it from
    sacct (TIMEOUT, with the log to read), and the next submit redoes exactly those chunks."""
    out = tmp_path / "out"
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.time=00:01:00",
                                      "backend.chunks_per_task=24", "backend.setup=['sleep 600']")]) == 0
    sub = submission(out)
    assert wait_for(sub["array_jobs"][0], timeout=240) == "TIMEOUT"
    capsys.readouterr()
    assert main(["cancel", *overrides(experiment, out, "backend=slurm")]) == 0  # the merge job sleeps too
    assert wait_for(sub["merge_job"]) == "CANCELLED"
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["failed"] == 24
    job = f"{sub['array_jobs'][0]}_0"
    assert all(c["reason"].startswith(f"Slurm: TIMEOUT (job {job}; log ") for c in report["chunks"])
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.time=00:05:00")]) == 0
    assert "0 already done, 24 to submit" in capsys.readouterr().out
    assert wait_for(submission(out)["merge_job"]) == "COMPLETED"
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["done"] == 24


def test_cancel(experiment, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.setup=['sleep 300']")]) == 0
    sub = submission(out)
    capsys.readouterr()
    assert main(["cancel", *overrides(experiment, out, "backend=slurm")]) == 0
    assert sub["array_jobs"][0] in capsys.readouterr().out
    assert wait_for(sub["array_jobs"][0]) == "CANCELLED"


def test_slurm_errors_are_shown_and_nothing_is_left_half_submitted(experiment, tmp_path, capsys) -> None:
    out = tmp_path / "out"

    def queued() -> set[str]:
        return set(subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True).stdout.split())

    before = queued()
    capsys.readouterr()
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.partition=nosuchpart")]) == 1
    err = capsys.readouterr().err
    assert "sbatch --parsable" in err and "invalid partition" in err.lower()
    assert not list((out / "slurm").glob("*/submission.json"))
    assert queued() <= before, "no job of this submission may be left in the queue"


def test_missing_sbatch_names_the_command(experiment, tmp_path, capsys, monkeypatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["submit", *overrides(experiment, tmp_path / "out", "backend=slurm")]) == 1
    err = capsys.readouterr().err
    assert "`sbatch` not found" in err and "backend=local" in err


def test_submitit_backend_end_to_end(experiment, tmp_path, capsys) -> None:
    out, local = tmp_path / "submitit", tmp_path / "local"
    # 24 items: more than the test cluster's MaxArraySize (16), so two arrays
    assert main(["run", *overrides(experiment, out, "backend=submitit", "backend.chunks_per_task=1",
                                   "backend.array_parallelism=8", "backend.time=00:10:00")]) == 0
    assert "reduced 48 frames" in capsys.readouterr().out
    assert main(["run", *overrides(experiment, local)]) == 0
    theirs, ours = intensities(out), intensities(local)
    assert theirs.keys() == ours.keys()
    for name in ours:  # the same summation order whatever the threads per task (deterministic engines)
        assert theirs[name].tobytes() == ours[name].tobytes(), name
    (folder,) = (out / "submitit").iterdir()
    assert list(folder.glob("*_result.pkl")), "submitit ran the tasks as Slurm jobs"


def test_a_rejected_merge_job_withdraws_its_arrays(experiment, tmp_path, capsys, monkeypatch) -> None:
    from hpc.backends import sbatch, slurm

    merge_script, submit, accepted = sbatch.merge_script, slurm._sbatch, []

    def reject_merge(*args) -> str:  # Slurm refuses the merge job, and only it
        return merge_script(*args).replace("#SBATCH --time", "#SBATCH --partition=nosuchpart\n#SBATCH --time")

    def spy(script: Path) -> str:  # the real sbatch; only remember which jobs it accepted
        accepted.append(submit(script))
        return accepted[-1]

    monkeypatch.setattr(sbatch, "merge_script", reject_merge)
    monkeypatch.setattr(slurm, "_sbatch", spy)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.setup=['sleep 30']")]) == 1
    assert "invalid partition" in capsys.readouterr().err.lower()
    (folder,) = (out / "slurm").iterdir()
    arrays = sorted(folder.glob("array_*.sbatch"))
    # 24 groups on the test cluster (MaxArraySize read from scontrol: 16) → 2 arrays, both accepted
    assert len(arrays) == 2 and len(accepted) == 2, "the arrays were accepted, the merge job was not"
    assert not (folder / "submission.json").exists()
    assert [wait_for(job) for job in accepted] == ["CANCELLED"] * 2, "arrays without a merge job are withdrawn"


def test_mode_mpi_runs_one_allocation_of_mpi_ranks(experiment, tmp_path, capsys) -> None:
    out, local = tmp_path / "mpi", tmp_path / "local"
    capsys.readouterr()
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.mode=mpi", "backend.ntasks=3",
                                      "backend.cpus_per_task=1")]) == 0
    sub = submission(out)
    assert "submitted MPI job" in capsys.readouterr().out and not sub["array_jobs"]
    script = (Path(sub["folder"]) / "mpi.sbatch").read_text()
    assert "#SBATCH --ntasks=3" in script and "srun --mpi=pmix" in script and "worker --plan" in script
    assert wait_for(sub["merge_job"]) == "COMPLETED"
    assert main(["run", *overrides(experiment, local)]) == 0
    theirs, ours = intensities(out), intensities(local)
    assert theirs.keys() == ours.keys()
    for name in ours:  # the same summation order whatever the threads per task (deterministic engines)
        assert theirs[name].tobytes() == ours[name].tobytes(), name
