"""Process faults on backend=local: a worker killed mid-chunk (as the OOM killer does), the command
itself killed or terminated, its output pipe closed early. Real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest
from fault_helpers import overrides, wait_gone, writing, xreduce

from reduction.demo.bliss_writer import write_demo_experiment

N_CHUNKS = 16  # 2 scans × 40 frames, 5 frames per chunk


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Pilatus1M frames (slow enough to catch a worker in the middle of a chunk)."""
    return write_demo_experiment(tmp_path_factory.mktemp("data"), n_datasets=1, n_scans=2, n_frames=40)


def status(out: Path) -> dict:
    stdout, _ = xreduce("status", str(out), "--json").communicate(timeout=120)
    return json.loads(stdout)


def temporaries(out: Path) -> list[str]:
    return [p.name for p in out.rglob(".*.tmp")]


def test_a_killed_worker_costs_one_retry_and_the_run_goes_on(experiment, tmp_path) -> None:
    out = tmp_path / "out"
    run = xreduce("run", *overrides(experiment, out, "backend.workers=2"))
    chunk, pid = writing(out / "chunks", run)
    os.kill(pid, signal.SIGKILL)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert f"chunk {chunk}: worker process {pid} was killed by signal 9 (SIGKILL)" in err
    assert "trying it again in a new worker" in err and "Traceback" not in err
    counts = status(out)["counts"]
    assert counts["done"] == N_CHUNKS and counts["failed"] == 0
    assert not list((out / "chunks").glob("*.error.json"))  # the retry succeeded: its record is cleared
    assert len(list(out.glob("*.nxs"))) == 1 and temporaries(out) == []


def test_a_chunk_whose_worker_dies_twice_fails_alone_with_its_record(experiment, tmp_path) -> None:
    out = tmp_path / "out"
    run = xreduce("run", *overrides(experiment, out, "backend.workers=2"))
    chunk, first = writing(out / "chunks", run)
    os.kill(first, signal.SIGKILL)
    _, second = writing(out / "chunks", run, exclude={first}, chunk=chunk)  # the retry, in a new worker
    os.kill(second, signal.SIGKILL)
    stdout, err = run.communicate(timeout=300)
    assert run.returncode == 1, err
    assert "Traceback" not in err and f"1 of {N_CHUNKS} chunks failed" in stdout
    record = json.loads((out / "chunks" / f"{chunk}.error.json").read_text())
    assert record["error"] == "WorkerDied"
    assert f"worker process {second} was killed by signal 9 (SIGKILL) while reducing this chunk" in record["message"]
    states = {c["id"]: c["state"] for c in status(out)["chunks"]}
    assert states.pop(chunk) == "failed" and set(states.values()) == {"done"} and len(states) == N_CHUNKS - 1
    assert len(list(out.glob("*.nxs"))) == 1 and temporaries(out) == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_killing_the_command_ends_its_workers(experiment, tmp_path, sig) -> None:
    out = tmp_path / "out"
    run = xreduce("run", *overrides(experiment, out, "backend.workers=2"))
    writing(out / "chunks", run)
    children = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
    assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
    run.send_signal(sig)
    _, err = run.communicate(timeout=60)
    assert wait_gone(children, within=5.0) == [], "orphaned workers"
    if sig == signal.SIGTERM:
        assert run.returncode == 143 and "xreduce: terminated (SIGTERM)" in err and "Traceback" not in err
        assert temporaries(out) == []  # the chunks cut short left nothing half-written
    else:
        assert run.returncode == -signal.SIGKILL
    rerun = xreduce("run", *overrides(experiment, out, "backend.workers=2"))
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert status(out)["counts"]["done"] == N_CHUNKS and temporaries(out) == []  # what kill -9 left is removed


def test_a_reader_that_stops_early_does_not_stop_the_run(experiment, tmp_path) -> None:
    """``xreduce run ... | head -1``: the run goes on to the merge once its stdout is gone."""
    out = tmp_path / "out"
    run = xreduce("run", *overrides(experiment, out, "partition.frames_per_chunk=40"))
    assert run.stdout is not None
    assert "chunks:" in run.stdout.readline()
    run.stdout.close()
    err = run.stderr.read() if run.stderr else ""
    assert run.wait(timeout=300) == 0, err
    assert "BrokenPipeError" not in err and len(list(out.glob("*.nxs"))) == 1
