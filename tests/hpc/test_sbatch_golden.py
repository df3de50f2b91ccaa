"""The sbatch scripts ``xreduce submit`` writes, byte for byte against ``tests/hpc/golden/*.sbatch``
(as submitit's ``_sbatch_test_record.txt``), rendered without Slurm (:mod:`hpc.backends.sbatch`) from a
fixed plan, backend config and container (none from the environment).

The parts that change from one machine or run to the next are normalised before comparing: the
submission folder (its name holds a time stamp) becomes ``<folder>``, the test's temporary folder
``<tmp>``, the Python interpreter the jobs start ``<python>``, the content hash naming the plan snapshot
(it covers the temporary folder) ``<hash12>``. After a deliberate change to
``jobs/*.sbatch`` or to the rendering, regenerate the files and review their diff:

    XREDUCE_UPDATE_GOLDEN=1 python -m pytest tests/hpc/test_sbatch_golden.py
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from hpc.backends import sbatch
from hpc.config_schema import SlurmBackendConfig
from hpc.container import Container, container_for
from hpc.plan import Plan, snapshot_path

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("XREDUCE_UPDATE_GOLDEN") == "1"

ARRAY = dict(partition="short", account="ab12", qos="high", mem="16G", time="00:20:00", cpus_per_task=4,
             array_parallelism=2, extra_directives=["--exclusive"],
             setup=["module load hdf5", "export HDF5_USE_FILE_LOCKING=FALSE"])
MPI = dict(mode="mpi", ntasks=3, cpus_per_task=1, partition="short", mem="4G", setup=["module load openmpi"])
CONTAINER_GPU = dict(partition="gpu", gpus_per_task=1)


def fixed_plan(output: Path) -> Plan:
    """A plan as the scripts see it: its campaign's name, and the folders that enter the binds."""
    config = {"campaign": {"raw_data": "/data/visitor/ma1234/id11/RAW_DATA", "output": str(output)},
              "reduction": {"kind": "azint1d", "poni": "/data/calib/lab6.poni", "mask": None, "dark": None,
                            "flat": None}}
    return Plan(campaign="golden", output=str(output), config_hash="0" * 64, config=config, chunks=[])


def backend_config(**keys):
    return OmegaConf.merge(OmegaConf.structured(SlurmBackendConfig), keys)


def normalise(text: str, folder: Path, tmp: Path) -> str:
    text = re.sub(r"/plans/[0-9a-f]{12}\.json", "/plans/<hash12>.json", text)
    return (text.replace(str(folder), "<folder>").replace(str(tmp), "<tmp>")
            .replace(shlex.quote(sys.executable), "<python>"))


def inputs(tmp_path: Path, container: bool = False, **keys) -> tuple[Plan, Any, Path, Container | None]:
    """What the renderers take: the plan, the backend config, a submission folder, the container."""
    plan, cfg = fixed_plan(tmp_path / "out"), backend_config(**keys)
    if container:
        (tmp_path / "xreduce.sif").write_text("")
        cfg.container = str(tmp_path / "xreduce.sif")
    return plan, cfg, tmp_path / "out" / "slurm" / "20240101T000000000000Z", container_for(cfg, plan.config, env={})


def check(name: str, text: str) -> None:
    golden = GOLDEN / name
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.read_text(encoding="utf-8") == text, f"{name} differs from {golden}"


def test_array_and_merge_scripts(tmp_path) -> None:
    """The second of two arrays (tasks 0-1 run task groups 3-4, two at a time) and their merge job."""
    plan, cfg, folder, container = inputs(tmp_path, **ARRAY)
    array = sbatch.array_script(plan, cfg, folder, container, 3, 2)
    assert f"--plan {snapshot_path(plan)} " in array, "the tasks read the plan's immutable snapshot"
    check("array.sbatch", normalise(array, folder, tmp_path))
    merge = sbatch.merge_script(plan, cfg, folder, container, ["1001", "1002"])
    check("merge.sbatch", normalise(merge, folder, tmp_path))


def test_mpi_script(tmp_path) -> None:
    plan, cfg, folder, container = inputs(tmp_path, **MPI)
    check("mpi.sbatch", normalise(sbatch.mpi_script(plan, cfg, folder, container), folder, tmp_path))


def test_container_and_gpu_scripts(tmp_path) -> None:
    """Array tasks start xreduce in the image with ``--nv``; the merge job without (it asks for no GPU)."""
    plan, cfg, folder, container = inputs(tmp_path, container=True, **CONTAINER_GPU)
    array = sbatch.array_script(plan, cfg, folder, container, 0, 2)
    check("container_gpu_array.sbatch", normalise(array, folder, tmp_path))
    merge = sbatch.merge_script(plan, cfg, folder, container, ["1001"])
    check("container_gpu_merge.sbatch", normalise(merge, folder, tmp_path))
