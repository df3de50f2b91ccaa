"""Planning reads the scans of many dataset files in a pool of processes: the same scans, in the same
order, with an unreadable file named, as reading them one by one in this process."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ProcessPoolExecutor

import pytest
from bliss_helpers import write_metadata_only_experiment

from hpc import plan as planning
from reduction.io import pool
from reduction.step import get_kind


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("discovery")
    masters = write_metadata_only_experiment(root, 6, 3, n_frames=12, frame_shape=(20, 30))
    masters[2].write_bytes(b"BLISS is still writing this file")  # unreadable: named, the others go on
    return [str(m) for m in masters]


def _discover(datasets: list[str]) -> list[tuple]:
    found = planning.discover_scans(get_kind("azint1d"), datasets, "pilatus", "mon", "all")
    return [(dataset, [(s.scan, s.finished, s.nframes, s.energy_kev, s.problem) for s in scans], unreadable, pending)
            for dataset, scans, unreadable, pending in found]


@pytest.mark.parametrize("threads", [False, True], ids=["fork", "forkserver"])
def test_a_pool_of_processes_reads_what_one_process_reads(datasets: list[str], monkeypatch: pytest.MonkeyPatch,
                                                          threads: bool) -> None:
    monkeypatch.setattr(planning, "FILES_PER_PROCESS", 10**6)
    serial = _discover(datasets)
    assert [d for d, _, _, _ in serial] == datasets
    assert [len(scans) for _, scans, _, _ in serial] == [3, 3, 0, 3, 3, 3]
    assert serial[0][1][0] == ("1.1", True, 12, pytest.approx(17.7), None)
    assert "BLISS is still writing" not in str(serial[2][2]) and "sample_0003.h5" in str(serial[2][2])

    pools: list[int] = []

    class Pool(ProcessPoolExecutor):  # the real pool, counted
        def __init__(self, processes: int, **kwargs) -> None:
            pools.append(processes)
            super().__init__(processes, **kwargs)

    monkeypatch.setattr(pool, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(planning, "FILES_PER_PROCESS", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})  # a pool of 3, whatever this machine has
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)  # a running thread: processes from a fork server
    if threads:
        helper.start()
    try:
        pooled = _discover(datasets)
    finally:
        stop.set()
    assert pools == [3]
    assert pooled == serial
