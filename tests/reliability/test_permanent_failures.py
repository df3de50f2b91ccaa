"""Permanent vs transient failures: a chunk that cannot succeed with the same inputs is not run again
(until its raw dataset file or the config changes); one that may pass (a lima file missing now) is."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
from fault_helpers import overrides

from hpc.cli import main
from hpc.config import config_hash, load_config, to_json
from hpc.plan import make_plan
from hpc.state import FAILED, ChunkPaths, chunk_states, record_failure
from reduction.demo.bliss_writer import write_demo_experiment
from reduction.errors import IntegrationError, RawDataError


def _experiment(tmp_path: Path):
    return write_demo_experiment(tmp_path / "data", n_datasets=1, n_scans=2, n_frames=8, detector="Pilatus100k",
                                 frames_per_file=4)


def test_a_scan_that_cannot_be_reduced_fails_for_good_and_is_not_run_again(tmp_path, capsys) -> None:
    exp = _experiment(tmp_path)
    (dataset,) = exp.datasets
    with h5py.File(dataset, "r+", locking=False) as f:  # scan 2.1 loses its detector: a layout problem
        del f["2.1/measurement/pilatus"]
    out = tmp_path / "out"
    assert main(["run", *overrides(exp, out, frames_per_chunk=4)]) == 1
    text = capsys.readouterr().out
    assert "1 failed for good" in text and "may pass" not in text  # scan 2.1: one chunk, failed at planning
    assert "no detector 'pilatus' under /2.1/measurement" in text
    # the second run does nothing for them, and still says they failed
    assert main(["run", *overrides(exp, out, frames_per_chunk=4)]) == 1
    text = capsys.readouterr().out
    assert "0 to run" in text and "(1 failed for good, not retried: see below)" in text
    assert main(["status", str(out), "--json"]) == 1
    chunks = json.loads(capsys.readouterr().out)["chunks"]
    assert sorted((c["scan"], c["state"], c["permanent"]) for c in chunks) == [
        ("1.1", "done", False), ("1.1", "done", False), ("2.1", "failed", True)]


def test_a_missing_lima_file_is_transient_and_retried(tmp_path, capsys) -> None:
    exp = _experiment(tmp_path)
    (dataset,) = exp.datasets
    lima = sorted(dataset.parent.glob("scan0002/*.h5"))[0]
    hidden = lima.with_suffix(".away")
    lima.rename(hidden)
    out = tmp_path / "out"
    assert main(["run", *overrides(exp, out, frames_per_chunk=4)]) == 1
    text = capsys.readouterr().out
    assert "1 failed for a reason that may pass" in text and "for good" not in text
    hidden.rename(lima)  # the file arrives: the next run retries the chunk and completes the campaign
    assert main(["run", *overrides(exp, out, frames_per_chunk=4)]) == 0
    assert "1 to run" in capsys.readouterr().out


def test_a_permanent_record_holds_until_the_dataset_file_changes(tmp_path) -> None:
    exp = _experiment(tmp_path)
    cfg = load_config(overrides(exp, tmp_path / "out", frames_per_chunk=4))
    plan = make_plan(cfg, config_hash(cfg), json.loads(to_json(cfg)))
    out = Path(plan.output)
    first, second = plan.chunks[0], plan.chunks[1]
    record_failure(ChunkPaths(out, first.id), first, IntegrationError("frames of shape (1, 2) for a (3, 4) detector"))
    record_failure(ChunkPaths(out, second.id), second, RawDataError("lima file not found"))
    states = {st.chunk.id: st for st in chunk_states(plan, out)}
    assert (states[first.id].state, states[first.id].permanent) == (FAILED, True)
    assert (states[second.id].state, states[second.id].permanent) == (FAILED, False)
    stat = os.stat(first.dataset)  # the raw dataset file is rewritten (fixed): worth trying again
    os.utime(first.dataset, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert not {st.chunk.id: st for st in chunk_states(plan, out)}[first.id].permanent


def test_plan_says_why_a_scan_is_skipped(tmp_path, capsys) -> None:
    exp = _experiment(tmp_path)
    (dataset,) = exp.datasets
    with h5py.File(dataset, "r+", locking=False) as f:
        del f["2.1/measurement/pilatus"]
    assert main(["plan", *overrides(exp, tmp_path / "out", frames_per_chunk=4)]) == 0
    text = capsys.readouterr().out
    assert "1 scan(s) cannot be reduced as configured" in text
    row = next(line for line in text.splitlines() if " 2.1 " in line)
    assert "no" in row.split() and "no detector 'pilatus' under /2.1/measurement" in row
