"""The backend protocol (hpc.backends.base): what each registered backend declares, what it says when
it cannot work here, and how the commands use the declarations. No scheduler is contacted."""

from __future__ import annotations

import sys

import pytest
from campaign_helpers import campaign_overrides, small_experiment
from omegaconf import OmegaConf

from hpc.backends import BACKENDS, Backend, get_backend, submitting, waiting
from hpc.backends.dask import DaskBackend
from hpc.backends.mpi import MPIBackend
from hpc.cli import main
from hpc.config_schema import BACKEND_SCHEMAS
from hpc.errors import ConfigError

#: name → (waits, submits, spmd)
DECLARED = {"local": (True, False, False), "slurm": (False, True, False), "submitit": (True, False, False),
            "dask": (True, False, False), "mpi": (True, False, True)}


def backend(name: str, **keys) -> Backend:
    return get_backend(OmegaConf.merge(OmegaConf.structured(BACKEND_SCHEMAS[name]), keys))


@pytest.fixture()
def no_slurm(tmp_path, monkeypatch) -> None:
    """A PATH without Slurm's commands, outside any image."""
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for name in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(name, raising=False)


def test_every_backend_declares_what_it_can_do() -> None:
    assert set(BACKENDS) == set(BACKEND_SCHEMAS) == set(DECLARED)
    for name, cls in BACKENDS.items():
        assert issubclass(cls, Backend) and cls.name == name
        assert (cls.waits, cls.submits, cls.spmd) == DECLARED[name], name
        assert cls.waits != cls.submits, f"{name} either runs and waits or submits and returns"
    assert list(waiting()) == ["local", "submitit", "mpi", "dask"] and list(submitting()) == ["slurm"]


def test_an_unknown_backend_is_named() -> None:
    with pytest.raises(ConfigError, match="backend.name = 'pbs' is not available; known: local, slurm"):
        get_backend(OmegaConf.create({"name": "pbs"}))


def test_a_notebook_client_makes_a_dask_backend_whatever_the_name() -> None:
    client = object()
    made = get_backend(OmegaConf.structured(BACKEND_SCHEMAS["local"]), client=client)
    assert isinstance(made, DaskBackend) and made.client is client and made.available() is None


def test_without_slurm_the_slurm_backends_say_which_command_is_missing(no_slurm) -> None:
    reason = ("`sbatch` not found: Slurm is not installed (or not on PATH) on this machine; "
              "use backend=local to run here")
    assert backend("slurm").available() == reason
    assert backend("submitit").available() == reason
    assert backend("dask", cluster="slurm").available() == reason
    # these need no Slurm
    assert backend("local").available() is None
    assert backend("dask").available() is None
    assert backend("dask", cluster="slurm", scheduler_address="tcp://login1:8786").available() is None


def test_inside_an_image_the_reason_says_how_to_reach_the_hosts_slurm(no_slurm, monkeypatch) -> None:
    monkeypatch.setenv("APPTAINER_CONTAINER", "/cvmfs/sw/xreduce.sif")
    assert backend("slurm").available().startswith("`sbatch` not found inside the Apptainer image "
                                                   "/cvmfs/sw/xreduce.sif")


def test_a_missing_package_is_named_with_its_extra(monkeypatch) -> None:
    for module in ("mpi4py", "submitit", "distributed"):
        monkeypatch.setitem(sys.modules, module, None)  # find_spec() answers None: not installed
    assert backend("mpi").available() == "backend=mpi needs mpi4py (and an MPI library): pip install 'xreduce[mpi]'"
    assert "pip install 'xreduce[slurm]'" in backend("submitit").available()
    assert "pip install 'xreduce[dask]'" in backend("dask").available()


def test_making_the_mpi_backend_does_not_start_mpi() -> None:
    made = backend("mpi")
    assert isinstance(made, MPIBackend) and "comm" not in vars(made)


def test_defaults_of_a_backend_without_a_scheduler(tmp_path) -> None:
    local = backend("local", workers=3)
    assert local.is_root and local.serve() is None and local.workers == 3
    assert local.overlay(tmp_path, []) == [] and local.active_jobs(tmp_path) == local.cancel(tmp_path) == []
    with pytest.raises(NotImplementedError, match="backend=local does not submit"):
        local.submit(None, [])


def test_a_campaign_without_a_submission_asks_no_scheduler(tmp_path, no_slurm) -> None:
    for cls in submitting().values():  # squeue, sacct are not even on PATH
        assert cls.active_jobs(tmp_path) == cls.cancel(tmp_path) == [] and cls.overlay(tmp_path, []) == []


def test_run_and_submit_refuse_a_backend_without_the_capability(tmp_path, capsys) -> None:
    exp = small_experiment(tmp_path, n_datasets=1, n_scans=1, n_frames=4)
    args = campaign_overrides(exp, tmp_path / "out", frames_per_chunk=4)
    assert main(["run", *args, "backend=slurm"]) == 2
    assert ("backend=slurm submits and returns: use `xreduce submit`, not `xreduce run` (backends that run here "
            "and wait: local, submitit, mpi, dask)") in capsys.readouterr().err
    assert main(["submit", *args]) == 2
    assert ("xreduce submit needs a backend that submits and returns (backend=slurm); backend.name is 'local'"
            in capsys.readouterr().err)
