"""kill -9 of `xreduce run` at each phase, then `xreduce run` again: the master is bit-identical to an
uninterrupted run's, nothing temporary is left, nothing half-written counts as done.

The phases are caught, not timed: a chunk result renamed into place (reducing), a chunk file being
written (its temporary name exists), the master file being written (its temporary name), the
preview being drawn (the master in place, the PNG not yet). Backends: local with one and with two
worker processes, Dask (a local cluster of two workers) and MPI (3 ranks under mpirun; the whole
job is killed, as a node crash or the scheduler would).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from fault_helpers import REPO, overrides, xreduce

from reduction.demo.bliss_writer import write_demo_experiment

BACKENDS = {"local-1": ("backend.workers=1",), "local-2": ("backend.workers=2",),
            "dask-2": ("backend=dask", "backend.workers=2"), "mpi-3": ("backend=mpi",)}
#: Open MPI as the MPI backend's tests run it (as root in CI, 3 ranks on 2 cores)
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return write_demo_experiment(tmp_path_factory.mktemp("data"), n_datasets=1, n_scans=3, n_frames=24,
                                 detector="Pilatus100k", frames_per_file=8)


def _master_data(out: Path) -> dict[str, np.ndarray]:
    """Every per-frame dataset of every entry of the one master file."""
    (master,) = out.glob("*.nxs")
    data: dict[str, np.ndarray] = {}
    with h5py.File(master, "r") as f:
        for entry in f:
            for group in ("data", "accumulators"):
                for name, ds in f[entry][group].items():
                    if ds.ndim >= 2:
                        data[f"{entry}/{group}/{name}"] = ds[()]
    return data


def _start(experiment, out: Path, backend: str) -> subprocess.Popen:
    """``xreduce run`` on ``backend``, in a session of its own (an MPI job: mpirun and its 3 ranks)."""
    args = ["run", *overrides(experiment, out, *BACKENDS[backend], frames_per_chunk=6, npt=200)]
    if backend.startswith("mpi"):
        if shutil.which("mpirun") is None:
            pytest.fail("Open MPI is not installed: run `make test`, or as root `apt-get install openmpi-bin "
                        "libopenmpi-dev` and `pip install mpi4py`")
        return subprocess.Popen(["mpirun", "-n", "3", sys.executable, "-m", "hpc.cli", *args], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                env={**os.environ, **MPI_ENV, "PYTHONPATH": str(REPO)})
    return xreduce(*args, start_new_session=True)


def _kill(process: subprocess.Popen, backend: str) -> None:
    """kill -9: of the command (its workers end with it), or of the whole MPI job, as a node crash would."""
    if backend.startswith("mpi"):
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


@pytest.fixture(scope="module")
def reference(experiment, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """An uninterrupted run per backend."""
    result = {}
    for backend in BACKENDS:
        out = tmp_path_factory.mktemp(f"reference-{backend}")
        process = _start(experiment, out, backend)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        result[backend] = _master_data(out)
    return result


def _reducing(out: Path) -> bool:
    return any((out / "chunks").glob("c-*.h5"))


def _writing_chunk(out: Path) -> bool:
    return any((out / "chunks").glob(".c-*.tmp"))


def _writing_master(out: Path) -> bool:
    return any(out.glob(".*.nxs.*.tmp"))


def _previewing(out: Path) -> bool:
    return any(out.glob("*.nxs")) and not any(out.glob("*.png"))


PHASES: dict[str, Callable[[Path], bool]] = {"reducing": _reducing, "writing a chunk": _writing_chunk,
                                             "writing the master": _writing_master, "drawing the preview": _previewing}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("phase", list(PHASES))
def test_kill_9_then_run_again_gives_the_uninterrupted_master(experiment, reference, tmp_path, backend,
                                                              phase) -> None:
    for attempt in range(3):  # a phase may go by between two looks (a busy machine): start afresh
        out = tmp_path / f"out{attempt}"
        process = _start(experiment, out, backend)
        while process.poll() is None and not PHASES[phase](out):
            time.sleep(0.002)
        if process.poll() is None:
            break
        process.communicate()
    else:
        pytest.fail(f"three runs ended before one was caught {phase}")
    _kill(process, backend)
    again = _start(experiment, out, backend)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert sorted(p.name for p in out.rglob("*.tmp")) == []
    data = _master_data(out)
    assert data.keys() == reference[backend].keys()
    for key, values in reference[backend].items():
        assert np.array_equal(data[key], values, equal_nan=True), f"{key} differs after a kill while {phase}"
