"""The sbatch scripts ``xreduce submit`` writes, byte for byte against ``tests/hpc/golden/*.sbatch``
(as submitit's ``_sbatch_test_record.txt``), rendered without Slurm from a fixed plan and backend config.

The parts that change from one machine or run to the next are normalised before comparing: the
submission folder (its name holds a time stamp) becomes ``<folder>``, the test's temporary folder
``<tmp>``, the Python interpreter the jobs start ``<python>``. After a deliberate change to
``jobs/*.sbatch`` or to the rendering, regenerate the files and review their diff:

    XREDUCE_UPDATE_GOLDEN=1 python -m pytest tests/hpc/test_sbatch_golden.py
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hpc.config_schema import SlurmBackendConfig
from hpc.plan import Chunk, Plan

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("XREDUCE_UPDATE_GOLDEN") == "1"

ARRAY = dict(partition="short", account="ab12", qos="high", mem="16G", time="00:20:00", cpus_per_task=4,
             array_parallelism=2, chunks_per_task=2, max_array_size=3, extra_directives=["--exclusive"],
             setup=["module load hdf5", "export HDF5_USE_FILE_LOCKING=FALSE"])
MPI = dict(mode="mpi", ntasks=3, cpus_per_task=1, partition="short", mem="4G", setup=["module load openmpi"])
CONTAINER_GPU = dict(partition="gpu", gpus_per_task=1, chunks_per_task=5, binds=None)


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch) -> None:
    """No image or binds from the environment of whoever runs the tests."""
    for name in ("XREDUCE_IMAGE", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER", "XREDUCE_BINDS",
                 "XREDUCE_APPTAINER"):
        monkeypatch.delenv(name, raising=False)


def fixed_plan(output: Path) -> Plan:
    """Ten chunks of two scans; the campaign's folders are fixed host paths (they enter the binds)."""
    chunks = [Chunk(id=f"c-{i:016x}", dataset="/data/visitor/ma1234/id11/RAW_DATA/s1/s1_0001.h5",
                    experiment="ma1234/id11/20240101", scan=f"{1 + i // 5}.1", detector="pilatus", monitor=None,
                    start=4 * (i % 5), stop=4 * (i % 5) + 4, nframes_scan=20) for i in range(10)]
    config = {"campaign": {"raw_data": "/data/visitor/ma1234/id11/RAW_DATA", "output": str(output)},
              "reduction": {"poni": "/data/calib/lab6.poni", "mask": None, "dark": None, "flat": None}}
    return Plan(campaign="golden", output=str(output), config_hash="0" * 64, config=config, chunks=chunks,
                groups=[[i] for i in range(10)], created="2024-01-01T00:00:00+00:00")


def backend_config(**keys):
    return OmegaConf.merge(OmegaConf.structured(SlurmBackendConfig), keys)


def normalise(text: str, folder: Path, tmp: Path) -> str:
    return (text.replace(str(folder), "<folder>").replace(str(tmp), "<tmp>")
            .replace(shlex.quote(sys.executable), "<python>"))


def submitted_scripts(tmp_path: Path, monkeypatch, todo: list[int], **keys) -> dict[str, str]:
    """Every script one submission writes (sbatch answering job ids 1001, 1002, ...), normalised."""
    from hpc.backends import slurm

    answers = iter(range(1001, 2000))
    monkeypatch.setattr(slurm, "require", lambda: None)
    monkeypatch.setattr(slurm, "call", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 0, f"{next(answers)}\n" if cmd[0] == "sbatch" else "", ""))
    sub = slurm.submit(fixed_plan(tmp_path / "out"), todo, backend_config(**keys))
    folder = Path(sub.folder)
    return {path.name: normalise(path.read_text(encoding="utf-8"), folder, tmp_path)
            for path in sorted(folder.glob("*.sbatch"))}


def check(name: str, text: str) -> None:
    golden = GOLDEN / name
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.read_text(encoding="utf-8") == text, f"{name} differs from {golden}"


def test_array_and_merge_scripts(tmp_path, monkeypatch) -> None:
    """Nine chunks to do, two per task: five groups in arrays of at most three, throttled to two."""
    scripts = submitted_scripts(tmp_path, monkeypatch, [0, 1, 2, 3, 4, 5, 6, 8, 9], **ARRAY)
    assert sorted(scripts) == ["array_0.sbatch", "array_1.sbatch", "merge.sbatch"]
    check("array.sbatch", scripts["array_1.sbatch"])  # the second array: its tasks start at group 3
    check("merge.sbatch", scripts["merge.sbatch"])


def test_mpi_script(tmp_path, monkeypatch) -> None:
    scripts = submitted_scripts(tmp_path, monkeypatch, list(range(10)), **MPI)
    check("mpi.sbatch", scripts["mpi.sbatch"])


def test_container_and_gpu_scripts(tmp_path, monkeypatch) -> None:
    """Array tasks start xreduce in the image with ``--nv``; the merge job without (it asks for no GPU)."""
    image = tmp_path / "xreduce.sif"
    image.write_text("")
    scripts = submitted_scripts(tmp_path, monkeypatch, list(range(10)), container=str(image), **CONTAINER_GPU)
    check("container_gpu_array.sbatch", scripts["array_0.sbatch"])
    check("container_gpu_merge.sbatch", scripts["merge.sbatch"])
