"""The keys every batch backend shares (BatchBackendConfig: slurm, submitit, dask), spelt once as sbatch's
options, checked once, and handed to submitit and dask-jobqueue in their own names and units."""

from __future__ import annotations

import dataclasses
import doctest
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import hpc.backends.dask
import hpc.backends.submitit
from hpc.backends.dask import jobqueue_parameters
from hpc.backends.submitit import submitit_parameters
from hpc.config import BACKEND_SCHEMAS, BatchBackendConfig, DaskBackendConfig, SubmititBackendConfig, load_config
from hpc.errors import ConfigError

BATCH = ["slurm", "submitit", "dask"]
SHARED = ["partition", "account", "qos", "time", "cpus_per_task", "mem", "gpus_per_task", "extra_directives", "setup",
          "container", "binds"]


@pytest.fixture
def campaign(tmp_path: Path) -> list[str]:
    """Overrides of a campaign that loads (a raw-data folder and a PONI file; nothing is read)."""
    (tmp_path / "RAW_DATA").mkdir()
    (tmp_path / "geo.poni").write_text("Distance: 0.1\n")
    return ["campaign=example", f"campaign.raw_data={tmp_path / 'RAW_DATA'}", "campaign.detector=pilatus",
            f"reduction.poni={tmp_path / 'geo.poni'}"]


def error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(overrides)
    return str(info.value)


def test_the_batch_backends_share_one_spelling() -> None:
    assert [f.name for f in dataclasses.fields(BatchBackendConfig)] == ["name", *SHARED]
    for name in BATCH:
        assert issubclass(BACKEND_SCHEMAS[name], BatchBackendConfig), name
    assert not issubclass(BACKEND_SCHEMAS["local"], BatchBackendConfig)


@pytest.mark.parametrize("name", BATCH)
def test_the_shipped_yaml_sets_the_shared_keys(campaign, name: str) -> None:
    cfg = load_config([*campaign, f"backend={name}", "backend.mem=16G", "backend.time=1-00:00:00",
                       "backend.extra_directives=[--exclusive]"])
    assert set(SHARED) <= set(cfg.backend)
    assert (cfg.backend.mem, cfg.backend.time, list(cfg.backend.extra_directives)) == ("16G", "1-00:00:00",
                                                                                        ["--exclusive"])


@pytest.mark.parametrize(("name", "old", "new"), [("dask", "queue", "partition"), ("dask", "walltime", "time"),
                                                   ("dask", "memory", "mem"), ("submitit", "mem_gb", "mem"),
                                                   ("dask", "job_extra_directives", "extra_directives")])
def test_the_old_names_are_refused(campaign, name: str, old: str, new: str) -> None:
    message = error([*campaign, f"backend={name}", f"backend.{old}=1"])
    assert f"backend.{old}" in message and new in message


@pytest.mark.parametrize("name", BATCH)
@pytest.mark.parametrize(("key", "value", "said"), [
    ("time", "90min", "is not a Slurm time"), ("time", "1:2:3:4", "is not a Slurm time"),
    ("mem", "1.5G", "is not a Slurm memory size"), ("mem", "16GiB", "is not a Slurm memory size"),
    ("cpus_per_task", "0", "must be a positive integer"), ("gpus_per_task", "-1", "must be 0 or more"),
    ("extra_directives", "[-C v100]", "must be a long sbatch option"),
    ("extra_directives", "['--constraint v100']", "must be a long sbatch option"),
])
def test_each_shared_key_is_checked_for_every_batch_backend(campaign, name: str, key: str, value: str,
                                                            said: str) -> None:
    message = error([*campaign, f"backend={name}", f"backend.{key}={value}"])
    assert message.startswith(f"backend.{key}") and said in message


def test_dask_needs_the_memory_of_its_worker_jobs(campaign) -> None:
    assert "backend.mem" in error([*campaign, "backend=dask", "backend.mem=null"])


def submitit_config(**keys):
    return OmegaConf.merge(OmegaConf.structured(SubmititBackendConfig), keys)


def dask_config(**keys):
    return OmegaConf.merge(OmegaConf.structured(DaskBackendConfig), {"cluster": "slurm", **keys})


def test_submitit_parameters() -> None:
    assert submitit_parameters(submitit_config()) == {
        "name": "xreduce", "timeout_min": 60, "cpus_per_task": 2, "slurm_array_parallelism": 256}
    every = submitit_config(partition="gpu", account="ab12", qos="high", time="2-00:00:30", cpus_per_task=8,
                            mem="1500", gpus_per_task=2, setup=["module load cuda"], array_parallelism=10,
                            extra_directives=["--exclusive", "--constraint=v100&ib", "--mail-type=END"])
    assert submitit_parameters(every) == {
        "name": "xreduce", "timeout_min": 2881, "cpus_per_task": 8, "mem_gb": 1500 / 1024, "gpus_per_node": 2,
        "slurm_partition": "gpu", "slurm_account": "ab12", "slurm_qos": "high", "slurm_setup": ["module load cuda"],
        "slurm_array_parallelism": 10,
        "slurm_additional_parameters": {"exclusive": True, "constraint": "v100&ib", "mail-type": "END"}}


@pytest.mark.parametrize(("mem", "mem_gb", "sbatch"), [("16G", 16.0, "16GB"), ("1500M", 1500 / 1024, "1500MB"),
                                                       ("1T", 1024.0, "1024GB")])
def test_submitit_writes_back_the_memory_asked_for(mem: str, mem_gb: float, sbatch: str) -> None:
    from submitit.slurm.slurm import _convert_mem

    assert submitit_parameters(submitit_config(mem=mem))["mem_gb"] == mem_gb
    assert _convert_mem(mem_gb) == sbatch


def test_jobqueue_parameters() -> None:
    every = dask_config(partition="gpu", account="ab12", qos="high", time="02:00:00", cpus_per_task=8, mem="32G",
                        gpus_per_task=1, extra_directives=["--exclusive"], setup=["module load cuda"], processes=2,
                        interface="ib0", log_directory="/scratch/logs", lifetime="110m")
    assert jobqueue_parameters(every) == {
        "queue": "gpu", "account": "ab12", "walltime": "02:00:00", "cores": 8, "job_mem": "32G",
        "memory": "32768MiB", "processes": 2, "job_extra_directives": ["--exclusive", "--qos=high", "--gres=gpu:1"],
        "job_script_prologue": ["module load cuda"], "interface": "ib0", "local_directory": None,
        "log_directory": "/scratch/logs", "worker_extra_args": ["--lifetime", "110m", "--lifetime-stagger", "2m"]}


def test_dask_jobqueue_writes_the_memory_asked_for() -> None:
    """The worker jobs' script, as dask-jobqueue renders it (no job is submitted)."""
    from dask.utils import parse_bytes
    from dask_jobqueue.slurm import SLURMJob

    params = jobqueue_parameters(dask_config(mem="16G", partition="gpu", gpus_per_task=1))
    job = SLURMJob(scheduler="tcp://127.0.0.1:8786", name="x", **params)
    header = job.job_header
    assert "#SBATCH --mem=16G" in header and "#SBATCH -p gpu" in header and "#SBATCH --gres=gpu:1" in header
    assert "#SBATCH -t 01:00:00" in header and "#SBATCH --cpus-per-task=2" in header
    assert parse_bytes(params["memory"]) == 16 * 2**30


@pytest.mark.parametrize("module", [hpc.backends.submitit, hpc.backends.dask])
def test_docstring_examples(module) -> None:
    assert doctest.testmod(module).failed == 0
