"""Deterministic numbers: a campaign reduced with 1 or 2 local workers (2 or 1 engine threads
each on a 2-CPU machine), with either engine, gives bit-identical master data -- so a run resumed
with another worker count, thread count or backend never mixes two sets of numbers."""

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


@pytest.mark.parametrize("engine", ["numpy", "opencl"])
def test_same_master_for_one_or_two_workers(experiment, tmp_path, engine):
    masters = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        rc = main(["run", *campaign_overrides(experiment, out, "backend=local", f"backend.workers={workers}",
                                              f"reduction.engine={engine}", "merge.mode=copy",
                                              frames_per_chunk=5, npt=300)])
        assert rc == 0
        masters[workers] = master_data(out)
    assert any(name.endswith("/I") for name in masters[1]), sorted(masters[1])
    assert masters[1].keys() == masters[2].keys()
    differ = [name for name in masters[1] if masters[1][name] != masters[2][name]]
    assert not differ, f"datasets that differ between 1 and 2 workers ({engine} engine): {differ}"
