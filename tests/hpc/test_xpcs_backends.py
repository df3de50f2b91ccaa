"""``reduction=xpcs`` unchanged on every backend: Dask (LocalCluster, 2 workers), MPI (mpirun -n 3),
Slurm (``xreduce submit``: a real job array and merge job) and submitit, each giving a master whose
every dataset and attribute is bit-identical to backend=local's — but for the two provenance fields
that must differ (``reduction/date``; ``reduction/input/config``, which records the backend and the
output folder) — and each resuming: a second run finds every scan done and reduces nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from campaign_helpers import plugin_env, require_slurm_cluster, submission, wait_for

from reduction.azint.detectors import Detector
from reduction.azint.geometry import Geometry
from reduction.demo.bliss_writer import ScanSpec, write_dataset

SHAPE = (24, 24)
N_FRAMES, N_SCANS = 200, 4  # 2 datasets × 2 scans: 4 chunks (a chunk is a whole scan)
#: Open MPI as the MPI backend's tests run it (as root in CI, 3 ranks on 2 cores)
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}
#: Provenance that differs between two runs by construction: when, and the config with its backend and output
PROVENANCE = ("reduction/date", "reduction/input/config")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """Two datasets of two BLISS scans each (bitshuffle-LZ4, 64 frames per lima file), and a PONI."""
    root = tmp_path_factory.mktemp("xpcs_backends")
    geo = Geometry(dist=2.0, poni1=12 * 75e-6, poni2=12 * 75e-6, wavelength=1e-10,
                   detector=Detector("Detector", 75e-6, 75e-6, SHAPE))
    (root / "geometry.poni").write_text(geo.to_poni(), encoding="utf-8")
    rng = np.random.default_rng(0)
    for d in (1, 2):
        scans = [ScanSpec(rng.poisson(rng.uniform(0.05, 2.0, SHAPE), (N_FRAMES, *SHAPE)).astype(np.uint16))
                 for _ in range(2)]
        write_dataset(root / "RAW_DATA" / "s" / f"s_{d:04d}" / f"s_{d:04d}.h5", scans, frames_per_file=64)
    return root


def _args(experiment: Path, out: Path, *extra: str) -> list[str]:
    return ["campaign=demo", f"campaign.raw_data={experiment / 'RAW_DATA'}", "campaign.monitor=null",
            "reduction=xpcs", f"reduction.poni={experiment / 'geometry.poni'}", "reduction.dynamic_q.npt=3",
            "reduction.twotime.enabled=true", "reduction.twotime.q_bins=[1,3]", f"campaign.output={out}", *extra]


def _xreduce(*args: str, launcher: tuple[str, ...] = (), env: dict[str, str] | None = None) -> str:
    done = subprocess.run([*launcher, sys.executable, "-m", "hpc.cli", *args], capture_output=True, text=True,
                          timeout=600, env={**plugin_env(), **(env or {})})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _content(out: Path) -> dict[str, Any]:
    """Every dataset (its values, read through the virtual datasets) and attribute of the one master."""
    (master,) = out.glob("*.nxs")
    found: dict[str, Any] = {}

    def value(v: Any) -> Any:
        v = np.asarray(v)
        return repr(v.tolist()) if v.dtype.kind == "O" else (v.dtype.str, v.shape, v.tobytes())

    with h5py.File(master, "r") as f:
        def visit(name: str, obj: Any) -> None:
            for key, attr in obj.attrs.items():
                found[f"{name}@{key}"] = value(attr)
            if isinstance(obj, h5py.Dataset):
                found[name] = value(obj[()])

        f.visititems(visit)
    return found


@pytest.fixture(scope="module")
def reference(experiment: Path, tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("local") / "out"
    printed = _xreduce("run", *_args(experiment, out, "backend=local"))
    assert f"{N_SCANS} chunks: 0 already done, {N_SCANS} to run" in printed
    content = _content(out)
    entries = {k.split("/")[0] for k in content if "/" in k}
    assert len(entries) == N_SCANS
    for entry in entries:  # real values: g2 of every q bin, two-time of the bins asked for
        g2 = np.frombuffer(content[f"{entry}/data/g2"][2])
        assert content[f"{entry}/data/g2"][1][1] == 3 and np.isfinite(g2).all() and (np.abs(g2 - 1) < 0.5).all()
        assert content[f"{entry}/twotime/two_time_corr_func"][1] == (2, N_FRAMES, N_FRAMES)
    return content


def _assert_identical(out: Path, reference: dict[str, Any], backend: str) -> None:
    theirs = _content(out)
    assert theirs.keys() == reference.keys()
    differ = sorted(k for k in reference if theirs[k] != reference[k])
    assert all(k.split("/", 1)[1] in PROVENANCE for k in differ), differ
    for key in (k for k in differ if k.endswith("/config")):  # the same config, but for backend and output
        ours, other = (json.loads(c[2].decode() if isinstance(c, tuple) else c) for c in (reference[key], theirs[key]))
        assert other["backend"]["name"] == backend
        for c in (ours, other):
            del c["backend"], c["campaign"]["output"]
        assert ours == other


def test_dask_local_cluster(experiment, reference, tmp_path) -> None:
    out = tmp_path / "out"
    args = _args(experiment, out, "backend=dask", "backend.workers=2")
    assert f"{N_SCANS} chunks: 0 already done, {N_SCANS} to run" in _xreduce("run", *args)
    _assert_identical(out, reference, "dask")
    chunks = {p: p.stat().st_mtime_ns for p in out.glob("chunks/*.h5")}
    assert len(chunks) == N_SCANS
    assert f"{N_SCANS} already done, 0 to run" in _xreduce("run", *args)
    assert {p: p.stat().st_mtime_ns for p in out.glob("chunks/*.h5")} == chunks


@pytest.mark.mpi
def test_mpi_ranks(experiment, reference, tmp_path) -> None:
    if shutil.which("mpirun") is None:
        pytest.fail("Open MPI is not installed: as root `apt-get install openmpi-bin libopenmpi-dev`")
    out = tmp_path / "out"
    mpirun = ("mpirun", "-n", "3", "--oversubscribe")
    printed = _xreduce("run", *_args(experiment, out, "backend=mpi"), launcher=mpirun, env=MPI_ENV)
    assert printed.count(f"{N_SCANS} chunks: 0 already done, {N_SCANS} to run") == 1, "only rank 0 plans"
    _assert_identical(out, reference, "mpi")
    chunks = {p: p.stat().st_mtime_ns for p in out.glob("chunks/*.h5")}
    again = _xreduce("run", *_args(experiment, out, "backend=mpi"), launcher=mpirun, env=MPI_ENV)
    assert f"{N_SCANS} already done, 0 to run" in again  # nothing to do: nobody hangs
    assert {p: p.stat().st_mtime_ns for p in out.glob("chunks/*.h5")} == chunks


@pytest.mark.slurm
def test_slurm_array(experiment, reference, tmp_path) -> None:
    require_slurm_cluster()
    out = tmp_path / "out"
    printed = _xreduce("submit", *_args(experiment, out, "backend=slurm", "backend.time=00:10:00"))
    sub = submission(out)
    assert f"{N_SCANS} to submit" in printed and sub["merge_job"] in printed
    assert all(wait_for(job) == "COMPLETED" for job in sub["array_jobs"])
    assert wait_for(sub["merge_job"]) == "COMPLETED"
    _assert_identical(out, reference, "slurm")
    chunks = {p: p.stat().st_mtime_ns for p in out.glob("chunks/*.h5")}
    again = _xreduce("submit", *_args(experiment, out, "backend=slurm", "backend.time=00:10:00"))
    assert f"{N_SCANS} already done, 0 to submit" in again, again
    assert submission(out)["folder"] == sub["folder"], "nothing was submitted again"
    assert {p: p.stat().st_mtime_ns for p in out.glob("chunks/*.h5")} == chunks


@pytest.mark.slurm
def test_submitit(experiment, reference, tmp_path) -> None:
    require_slurm_cluster()
    out = tmp_path / "out"
    _xreduce("run", *_args(experiment, out, "backend=submitit"))
    assert list((out / "submitit").glob("*/*_result.pkl")), "the scans ran as Slurm jobs"
    _assert_identical(out, reference, "submitit")
    assert f"{N_SCANS} already done, 0 to run" in _xreduce("run", *_args(experiment, out, "backend=submitit"))


def test_threads_do_not_change_the_master(experiment, reference, tmp_path) -> None:
    """Two local workers (processes) and BLAS on 1 thread: the same bytes (the sums are in a fixed order)."""
    out = tmp_path / "out"
    _xreduce("run", *_args(experiment, out, "backend.workers=2"), env={"OMP_NUM_THREADS": "1",
                                                                      "OPENBLAS_NUM_THREADS": "1"})
    _assert_identical(out, reference, "local")
    assert os.path.exists(out / "plan.json")
