"""The ``sum`` kind end to end on every backend, installed only through its entry point; a kind of
another distribution; a broken one. Every run is a fresh ``python -m hpc.cli`` process whose path
holds a distribution declaring the kind, as after ``pip install`` — nothing in hpc names the kind.

The oracle is numpy on the raw frames: per frame, the sum and the maximum of the pixels neither
masked nor invalid (the integer type's maximum, negatives).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from campaign_helpers import (
    plugin_distribution,
    plugin_env,
    require_slurm_cluster,
    small_experiment,
    submission,
    wait_for,
)

from reduction.io import bliss

N_FRAMES = 5
FRAMES_PER_CHUNK = 2  # 3 chunks per scan: [0, 2) [2, 4) [4, 5)
N_CHUNKS = 6
# run as root in CI; oversubscribe: 3 ranks on a 2-core machine
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}
THIRD_PARTY = '''"""A reduction kind of another distribution: the sum kind under its own name and schema."""
from dataclasses import dataclass

from reduction.sum.config import SumConfig
from reduction.sum.kind import SumKind


@dataclass
class TotalConfig(SumConfig):
    kind: str = "total"


class Total(SumKind):
    name = "total"
    schema = TotalConfig


TOTAL = Total()
'''


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """2 datasets × 1 scan × 5 frames of a Pilatus100k (bitshuffle-LZ4 lima files of 2 frames)."""
    return small_experiment(tmp_path_factory.mktemp("sum"), n_datasets=2, n_scans=1, n_frames=N_FRAMES,
                            frames_per_file=2)


@pytest.fixture(scope="module")
def expected(experiment) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Entry name → (totals, maxima) by numpy from the raw frames and the mask."""
    mask = np.load(experiment.mask) != 0
    sums = {}
    for dataset in experiment.datasets:
        frames = bliss.read_frames(dataset, "1.1", experiment.detector, 0, N_FRAMES)
        bad = (frames == np.iinfo(frames.dtype).max) | (frames < 0) | mask
        masked = np.ma.masked_array(frames.astype(np.float64), bad)
        sums[f"{dataset.stem}_1.1"] = (masked.sum(axis=(1, 2)).filled(0), masked.max(axis=(1, 2)).filled(np.nan))
    return sums


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The environment of a process in which the sum kind is installed (its entry point only)."""
    folder = tmp_path_factory.mktemp("site")
    return plugin_env(plugin_distribution(folder, "xreduce_sum_test", {"sum": "reduction.sum.kind:SUM"}))


def overrides(exp, out: Path, *extra: str, kind: str = "sum") -> list[str]:
    return ["campaign=demo", f"campaign.raw_data={exp.raw_data}", f"reduction={kind}", f"reduction.mask={exp.mask}",
            "campaign.monitor=null", f"campaign.output={out}", f"partition.frames_per_chunk={FRAMES_PER_CHUNK}",
            *extra]


def xreduce(*args: str, env: dict[str, str], launcher: tuple[str, ...] = (),
            timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, sys.executable, "-m", "hpc.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_sums(out: Path, expected: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """The one master file of ``out`` holds numpy's totals and maxima, exactly, for every scan."""
    (master,) = out.glob("*.nxs")
    assert master.with_suffix(".png").is_file()
    with h5py.File(master, "r") as f:
        assert set(f) == set(expected)
        for name, (total, maximum) in expected.items():
            data = f[name][f[name].attrs["default"]]
            np.testing.assert_array_equal(data[data.attrs["signal"]][()], total, err_msg=name)
            np.testing.assert_array_equal(data["maximum"][()], maximum, err_msg=name)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


# -- every backend ---------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_local(experiment, expected, installed, tmp_path, workers) -> None:
    out = tmp_path / "out"
    printed = ok(xreduce("run", *overrides(experiment, out, f"backend.workers={workers}"), env=installed))
    assert f"{N_CHUNKS} chunks: 0 already done, {N_CHUNKS} to run" in printed
    assert_sums(out, expected)
    if workers == 1:  # is_done through hpc: nothing to redo
        assert f"{N_CHUNKS} already done, 0 to run" in ok(xreduce("run", *overrides(experiment, out), env=installed))


def test_dask_local_cluster(experiment, expected, installed, tmp_path) -> None:
    out = tmp_path / "out"
    ok(xreduce("run", *overrides(experiment, out, "backend=dask", "backend.workers=2"), env=installed))
    assert_sums(out, expected)


@pytest.mark.mpi
def test_mpi_ranks(experiment, expected, installed, tmp_path) -> None:
    if shutil.which("mpirun") is None:
        pytest.fail("Open MPI is not installed: as root `apt-get install openmpi-bin libopenmpi-dev`")
    out = tmp_path / "out"
    printed = ok(xreduce("run", *overrides(experiment, out, "backend=mpi"), env={**installed, **MPI_ENV},
                         launcher=("mpirun", "-n", "3", "--oversubscribe")))
    assert printed.count(f"{N_CHUNKS} chunks: 0 already done") == 1, "only rank 0 plans"
    assert_sums(out, expected)


@pytest.mark.slurm
def test_slurm_submit(experiment, expected, installed, tmp_path) -> None:
    require_slurm_cluster()
    out = tmp_path / "out"
    printed = ok(xreduce("submit", *overrides(experiment, out, "backend=slurm"), env=installed))
    sub = submission(out)
    assert f"{N_CHUNKS} to submit" in printed and sub["merge_job"] in printed
    assert wait_for(sub["merge_job"]) == "COMPLETED"
    assert all(wait_for(job) == "COMPLETED" for job in sub["array_jobs"])
    assert_sums(out, expected)


@pytest.mark.slurm
def test_submitit(experiment, expected, installed, tmp_path) -> None:
    require_slurm_cluster()
    out = tmp_path / "out"
    ok(xreduce("run", *overrides(experiment, out, "backend=submitit"), env=installed, timeout=600))
    assert_sums(out, expected)
    assert list((out / "submitit").glob("*/*_result.pkl")), "the chunks ran as Slurm jobs"


# -- a failing chunk, then a rerun -------------------------------------------------------------------
def test_a_failed_chunk_is_nan_and_listed_then_rerun(experiment, expected, installed, tmp_path) -> None:
    out = tmp_path / "out"
    dataset = experiment.datasets[0]
    lima = dataset.parent / "scan0001" / "pilatus_0001.h5"  # frames 2-3 of the first dataset
    hidden = lima.with_name("hidden.h5")
    lima.rename(hidden)
    try:
        done = xreduce("run", *overrides(experiment, out, "merge.mode=copy"), env=installed)
    finally:
        hidden.rename(lima)
    assert done.returncode == 1 and "1 of 6 chunks failed" in done.stdout and lima.name in done.stdout, done.stdout
    (master,) = out.glob("*.nxs")
    with h5py.File(master, "r") as f:
        entry = f[f"{dataset.stem}_1.1"]
        total = entry["data/total"]
        assert not total.is_virtual
        assert np.isnan(total[2:4]).all() and np.array_equal(total[[0, 1, 4]], expected[entry.name[1:]][0][[0, 1, 4]])
        assert entry["chunks/missing_frames"][()].tolist() == [[2, 4]]
    assert "5 already done, 1 to run" in ok(xreduce("run", *overrides(experiment, out, "merge.mode=copy"),
                                                    env=installed))
    assert_sums(out, expected)


# -- kinds of other distributions ------------------------------------------------------------------
def test_a_third_party_kind_plans_runs_and_merges(experiment, expected, tmp_path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "xtotal_kind.py").write_text(THIRD_PARTY, encoding="utf-8")
    env = plugin_env(plugin_distribution(site, "xtotal", {"total": "xtotal_kind:TOTAL"}))
    out = tmp_path / "out"
    assert f"({N_CHUNKS} chunks" in ok(xreduce("plan", *overrides(experiment, out, kind="total"), env=env))
    ok(xreduce("run", *overrides(experiment, out, kind="total"), env=env))
    assert_sums(out, expected)
    chunk = next((out / "chunks").glob("*.h5"))
    with h5py.File(chunk, "r") as f:
        assert f.attrs["kind"] == "total"
    assert re.search(r"ok +total +flat frames", xreduce("selftest", env=env).stdout)


def _broken_site(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "xbroken_kind.py").write_text('raise ImportError("xbroken needs libxbroken.so, which is not installed")\n',
                                          encoding="utf-8")
    plugin_distribution(site, "xbroken", {"broken": "xbroken_kind:KIND"})
    return plugin_env(plugin_distribution(site, "xreduce_sum_test", {"sum": "reduction.sum.kind:SUM"}))


def test_a_broken_kind_is_named_and_the_others_work(experiment, expected, tmp_path) -> None:
    env = _broken_site(tmp_path)
    reason = "ImportError: xbroken needs libxbroken.so, which is not installed"
    done = xreduce("selftest", env=env)
    assert done.returncode == 1
    assert re.search(rf"failed +kind broken +xbroken_kind:KIND: {reason}", done.stdout), done.stdout
    assert re.search(r"ok +sum ", done.stdout) and re.search(r"ok +azint1d numpy ", done.stdout)
    done = xreduce("plan", *overrides(experiment, tmp_path / "out", kind="broken"), env=env)
    assert done.returncode == 2 and "reduction=broken" in done.stderr, done.stderr
    done = xreduce("plan", *overrides(experiment, tmp_path / "out"), "reduction.kind=broken", env=env)
    assert done.returncode == 2 and "is installed but cannot be loaded" in done.stderr and reason in done.stderr
    out = tmp_path / "out"
    ok(xreduce("run", *overrides(experiment, out), env=env))
    assert_sums(out, expected)


def test_choosing_a_broken_kind_names_the_reason(experiment, tmp_path) -> None:
    done = xreduce("plan", *overrides(experiment, tmp_path / "out", kind="broken"), env=_broken_site(tmp_path))
    assert done.returncode == 2 and "xbroken needs libxbroken.so" in done.stderr, done.stderr
