"""Slurm jobs inside the image: the rendered scripts carry the exact ``apptainer exec`` line (binds,
``--nv`` on GPU jobs), and on the real single-node Slurm the jobs run through it — ``apptainer``
being the recording stand-in that runs the command on the host — with the same results as
``backend=local``."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np
import pytest
from campaign_helpers import (
    campaign_overrides,
    intensities,
    require_slurm_cluster,
    small_experiment,
    submission,
    wait_for,
)

from hpc.cli import main
from hpc.config import load_config, to_dict
from hpc.container import Container, campaign_binds, container_for, find_image, merge_binds, parse_binds
from hpc.errors import ConfigError


@pytest.fixture()
def experiment(tmp_path):
    return small_experiment(tmp_path, n_datasets=1, n_frames=6, frames_per_file=3)


def overrides(exp, out: Path, *extra: str) -> list[str]:
    return campaign_overrides(exp, out, *extra, frames_per_chunk=3)


# -- the command line, without Slurm ------------------------------------------------------------
def test_image_comes_from_config_then_module_then_the_running_image() -> None:
    assert find_image("/img/a.sif", {"XREDUCE_IMAGE": "/img/b.sif"}) == ("/img/a.sif", "backend.container")
    assert find_image(None, {"XREDUCE_IMAGE": "/img/b.sif", "APPTAINER_CONTAINER": "/img/c.sif"}) == \
        ("/img/b.sif", "XREDUCE_IMAGE")
    assert find_image(None, {"APPTAINER_CONTAINER": "/img/c.sif"}) == ("/img/c.sif", "APPTAINER_CONTAINER")
    assert find_image(None, {}) is None


def test_binds_default_to_what_the_jobs_read_and_write() -> None:
    config = {"campaign": {"raw_data": "/data/visitor/ma1/id11/RAW_DATA", "output": "/data/visitor/ma1/id11/PROC"},
              "reduction": {"kind": "azint1d", "poni": "/home/u/calib/lab6.poni",
                            "mask": "/home/u/calib/mask.h5::/entry/mask", "dark": None,
                            "flat": "/data/visitor/ma1/id11/RAW_DATA/flat.npy"}}
    assert campaign_binds(config) == ["/data/visitor/ma1/id11/RAW_DATA", "/data/visitor/ma1/id11/PROC",
                                      "/home/u/calib", "/home/u/calib", "/data/visitor/ma1/id11/RAW_DATA"]
    assert merge_binds([*campaign_binds(config), "/data/visitor", "/scratch:/scratch:ro", "/scratch/x"]) == \
        ["/home/u/calib", "/data/visitor", "/scratch:/scratch:ro", "/scratch/x"]
    assert parse_binds(" /a, ,/b:/c:ro ") == ["/a", "/b:/c:ro"]
    with pytest.raises(ConfigError, match="XREDUCE_BINDS: bind 'data' must be an absolute host path"):
        parse_binds("data")


def test_command_line_quotes_and_nv() -> None:
    box = Container("/cvmfs/sw/xreduce/0.1.0/xreduce.sif", "backend.container", ("/data", "/my data"))
    assert box.command(gpu=True) == ("apptainer exec --nv --bind '/data,/my data' "
                                     "/cvmfs/sw/xreduce/0.1.0/xreduce.sif xreduce")
    assert box.command("python3") == ("apptainer exec --bind '/data,/my data' /cvmfs/sw/xreduce/0.1.0/xreduce.sif "
                                      "python3")
    assert Container("docker://x/y:1", "XREDUCE_IMAGE").command() == "apptainer exec docker://x/y:1 xreduce"


def test_container_for_checks_image_and_binds(experiment, tmp_path, fake_image) -> None:
    cfg = load_config(overrides(experiment, tmp_path / "out", "backend=slurm", f"backend.container={fake_image}"))
    config = to_dict(cfg)
    box = container_for(cfg.backend, config, {"XREDUCE_BINDS": "/scratch", "XREDUCE_APPTAINER": "/opt/bin/apptainer"})
    assert box.image == str(fake_image) and box.apptainer == "/opt/bin/apptainer"
    assert box.binds == (str(experiment.raw_data), str(tmp_path / "out"), str(Path(experiment.poni).parent),
                         "/scratch")
    missing = load_config(overrides(experiment, tmp_path / "out", "backend=slurm",
                                    f"backend.container={tmp_path}/nope.sif"))
    with pytest.raises(ConfigError, match=r"backend.container=.*/nope.sif: no such image on this machine"):
        container_for(missing.backend, config, {})
    with pytest.raises(ConfigError, match="XREDUCE_IMAGE=rel.sif: give the image as an absolute path"):
        container_for(load_config(overrides(experiment, tmp_path / "out", "backend=slurm")).backend, config,
                      {"XREDUCE_IMAGE": "rel.sif"})
    # inside an image its own host path may be invisible: not checked there
    inside = container_for(missing.backend, config, {"APPTAINER_CONTAINER": "/cvmfs/sw/x.sif"})
    assert inside.image == f"{tmp_path}/nope.sif"
    chosen = load_config(overrides(experiment, tmp_path / "out", "backend=slurm", f"backend.container={fake_image}",
                                   "backend.binds=[/data,/scratch:/s:ro]"))
    assert container_for(chosen.backend, config, {}).binds == ("/data", "/scratch:/s:ro")
    bad = load_config(overrides(experiment, tmp_path / "out", "backend=slurm", f"backend.container={fake_image}",
                                "backend.binds=[relative/dir]"))
    with pytest.raises(ConfigError, match="backend.binds: bind 'relative/dir' must be an absolute host path"):
        container_for(bad.backend, config, {})


def test_slurm_scripts_outside_a_container_are_unchanged(experiment, tmp_path) -> None:
    from hpc.backends.sbatch import _xreduce

    assert _xreduce(None, gpu=True).endswith("-m hpc.cli")


def test_missing_sbatch_inside_an_image_says_how_to_reach_slurm(experiment, tmp_path, capsys, monkeypatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("APPTAINER_CONTAINER", "/cvmfs/sw/xreduce/0.1.0/xreduce.sif")
    assert main(["submit", *overrides(experiment, tmp_path / "out", "backend=slurm")]) == 1
    err = capsys.readouterr().err
    assert "`sbatch` not found inside the Apptainer image /cvmfs/sw/xreduce/0.1.0/xreduce.sif" in err
    assert "XREDUCE_SLURM" in err


# -- real Slurm -------------------------------------------------------------------------------
@pytest.fixture()
def slurm_cluster() -> None:
    require_slurm_cluster()


def _same_as_local(experiment, out: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    assert main(["run", *overrides(experiment, local)]) == 0
    theirs, ours = intensities(out), intensities(local)
    assert theirs.keys() == ours.keys()
    for name in ours:
        np.testing.assert_allclose(theirs[name], ours[name], rtol=1e-6)


@pytest.mark.slurm
def test_array_and_merge_jobs_run_in_the_image(slurm_cluster, experiment, tmp_path, fake_image, apptainer_stub,
                                               monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", f"{apptainer_stub.bin}:{os.environ['PATH']}")  # the jobs inherit it (sbatch)
    out = tmp_path / "out"
    assert main(["submit", *overrides(experiment, out, "backend=slurm", f"backend.container={fake_image}",
                                      "backend.gpus_per_task=1", "backend.partition=gpu",
                                      "backend.chunks_per_task=2")]) == 0
    assert f"jobs run in the Apptainer image {fake_image} (from backend.container)" in capsys.readouterr().out
    sub = submission(out)
    folder = Path(sub["folder"])
    binds = ",".join([str(experiment.raw_data), str(out), str(Path(experiment.poni).parent)])
    line = f"apptainer exec --nv --bind {binds} {fake_image} xreduce"
    array = (folder / "array_0.sbatch").read_text()
    assert f'exec {line} worker --plan {sub["plan"]} --group "${{GROUP}}"\n' in array
    merge = (folder / "merge.sbatch").read_text()
    assert f"exec {line.replace('--nv ', '')} worker --plan {sub['plan']} --merge\n" in merge, \
        "the merge job runs in the image too, without --nv (it asks for no GPU)"
    assert sub["container"] == f"{fake_image} (from backend.container)"
    assert wait_for(sub["merge_job"]) == "COMPLETED"
    calls = apptainer_stub.calls()
    workers = [c for c in calls if "--group" in c]
    assert len(workers) == len(sub["groups"]) == 2 and all(c[:4] == ["exec", "--nv", "--bind", binds] for c in workers)
    assert [c for c in calls if "--merge" in c] == [["exec", "--bind", binds, str(fake_image), "xreduce", "worker",
                                                     "--plan", sub["plan"], "--merge"]]
    _same_as_local(experiment, out, tmp_path)


@pytest.mark.slurm
def test_module_image_and_binds_reach_mpi_jobs(slurm_cluster, experiment, tmp_path, fake_image, apptainer_stub,
                                               monkeypatch) -> None:
    """No backend.container: the image of the loaded module (XREDUCE_IMAGE), with XREDUCE_BINDS."""
    extra = tmp_path / "scratch"
    extra.mkdir()
    monkeypatch.setenv("PATH", f"{apptainer_stub.bin}:{os.environ['PATH']}")
    monkeypatch.setenv("XREDUCE_IMAGE", str(fake_image))
    monkeypatch.setenv("XREDUCE_BINDS", str(extra))
    out = tmp_path / "out"
    assert main(["submit", *overrides(experiment, out, "backend=slurm", "backend.mode=mpi", "backend.ntasks=2",
                                      "backend.cpus_per_task=1")]) == 0
    sub = submission(out)
    script = (Path(sub["folder"]) / "mpi.sbatch").read_text()
    binds = ",".join([str(experiment.raw_data), str(out), str(Path(experiment.poni).parent), str(extra)])
    assert (f"exec srun --mpi=pmix apptainer exec --bind {binds} {fake_image} xreduce worker --plan "
            f"{sub['plan']} --mpi\n") in script, \
        "the hybrid model: the host's srun starts ranks in the image"
    assert sub["container"] == f"{fake_image} (from XREDUCE_IMAGE)"
    assert wait_for(sub["merge_job"]) == "COMPLETED"
    ranks = [c for c in apptainer_stub.calls() if "--mpi" in c]
    assert len(ranks) == 2, f"one apptainer exec per MPI rank, got {ranks}"
    _same_as_local(experiment, out, tmp_path)


@pytest.mark.slurm
def test_submitit_tasks_run_python_in_the_image(slurm_cluster, experiment, tmp_path, fake_image, apptainer_stub,
                                                monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{apptainer_stub.bin}:{os.environ['PATH']}")
    out = tmp_path / "out"
    assert main(["run", *overrides(experiment, out, "backend=submitit", f"backend.container={fake_image}",
                                   "backend.binds=[/tmp]", "backend.time=00:10:00")]) == 0
    calls = apptainer_stub.calls()
    assert calls and all(c[:5] == ["exec", "--bind", "/tmp", str(fake_image), "python3"] for c in calls)
    assert all(shlex.join(c[5:]).startswith("-u -m submitit.core._submit") for c in calls)
    _same_as_local(experiment, out, tmp_path)


@pytest.mark.slurm
def test_dask_worker_jobs_run_in_the_image(slurm_cluster, experiment, tmp_path, fake_image, apptainer_stub,
                                           monkeypatch) -> None:
    """backend=dask backend.cluster=slurm: dask-jobqueue's worker jobs start the worker with the
    image's python3; the scheduler (here) and the results are those of a plain run."""
    monkeypatch.setenv("PATH", f"{apptainer_stub.bin}:{os.environ['PATH']}")
    out = tmp_path / "out"
    assert main(["run", *overrides(experiment, out, "backend=dask", "backend.cluster=slurm", "backend.interface=lo",
                                   "backend.jobs=1", "backend.cpus_per_task=1", "backend.mem=2G",
                                   f"backend.container={fake_image}",
                                   f"backend.log_directory={tmp_path / 'logs'}")]) == 0
    calls = apptainer_stub.calls()
    binds = ",".join([str(experiment.raw_data), str(out), str(Path(experiment.poni).parent)])
    assert calls and all(c[:5] == ["exec", "--bind", binds, str(fake_image), "python3"] for c in calls), calls
    assert all(c[5:7] == ["-m", "distributed.cli.dask_worker"] for c in calls), calls
    _same_as_local(experiment, out, tmp_path)
