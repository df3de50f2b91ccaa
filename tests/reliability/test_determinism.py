"""Deterministic numbers: a campaign reduced with 1 or 2 local workers (2 or 1 engine threads
each on a 2-CPU machine), with either engine, or on Dask workers, gives bit-identical master data --
so a run resumed with another worker count, thread count or backend never mixes two sets of numbers."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from hpc.cli import main
from tests.campaign_helpers import campaign_overrides, small_experiment


def master_data(out: Path) -> dict[str, bytes]:
    """Every numeric dataset of the master file's NXdata groups (the results), as bytes."""
    (master,) = out.glob("*.nxs")
    found: dict[str, bytes] = {}
    with h5py.File(master, "r") as f:
        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset) and "/data/" in f"/{name}" and obj.dtype.kind in "fiu":
                found[name] = np.ascontiguousarray(obj[()]).tobytes()
        f.visititems(visit)
    return found


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return small_experiment(tmp_path_factory.mktemp("det"), n_datasets=1, n_scans=2, n_frames=12)


def reduce(experiment, out: Path, *backend: str, engine: str) -> dict[str, bytes]:
    rc = main(["run", *campaign_overrides(experiment, out, *backend, f"reduction.engine={engine}", "merge.mode=copy",
                                          frames_per_chunk=5, npt=300)])
    assert rc == 0
    return master_data(out)


def assert_same(first: dict[str, bytes], second: dict[str, bytes], what: str) -> None:
    assert any(name.endswith("/I") for name in first), sorted(first)
    assert first.keys() == second.keys()
    differ = [name for name in first if first[name] != second[name]]
    assert not differ, f"datasets that differ between {what}: {differ}"


@pytest.mark.parametrize("engine", ["numpy", "opencl"])
def test_same_master_for_one_or_two_workers(experiment, tmp_path, engine):
    one = reduce(experiment, tmp_path / "w1", "backend=local", "backend.workers=1", engine=engine)
    two = reduce(experiment, tmp_path / "w2", "backend=local", "backend.workers=2", engine=engine)
    assert_same(one, two, f"1 and 2 workers ({engine} engine)")


def test_same_master_on_dask_as_in_process(experiment, tmp_path):
    here = reduce(experiment, tmp_path / "local", "backend=local", "backend.workers=1", engine="numpy")
    dask = reduce(experiment, tmp_path / "dask", "backend=dask", "backend.workers=2", engine="numpy")
    assert_same(here, dask, "backend=local (1 worker, 2 threads) and backend=dask (2 workers)")
