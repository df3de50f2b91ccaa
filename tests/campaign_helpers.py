"""What the end-to-end campaign tests share: a small generated experiment, its overrides, the
intensities of a master file, the real test Slurm cluster (its jobs as sacct sees them), and
reduction kinds installed as another distribution would install them (an entry point)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from reduction.demo.bliss_writer import write_demo_experiment

__all__ = ["small_experiment", "campaign_overrides", "intensities", "submission", "require_slurm_cluster",
           "job_state", "wait_for", "plugin_distribution", "plugin_env", "bench_rates"]

REPO = Path(__file__).resolve().parents[1]


def small_experiment(tmp_path: Path, *, n_datasets: int = 2, n_scans: int = 2, n_frames: int = 12,
                     frames_per_file: int = 4):
    """Datasets × scans × frames of a Pilatus100k in the BLISS layout (bitshuffle-LZ4 lima files)."""
    return write_demo_experiment(tmp_path / "data", n_datasets=n_datasets, n_scans=n_scans, n_frames=n_frames,
                                 detector="Pilatus100k", frames_per_file=frames_per_file)


def campaign_overrides(exp, out: Path, *extra: str, frames_per_chunk: int, npt: int = 100) -> list[str]:
    """The command-line overrides reducing ``exp`` into ``out`` with the demo campaign."""
    return ["campaign=demo", f"campaign.raw_data={exp.raw_data}", f"reduction.poni={exp.poni}",
            f"reduction.mask={exp.mask}", f"campaign.output={out}", f"partition.frames_per_chunk={frames_per_chunk}",
            f"reduction.npt={npt}", *extra]


def intensities(out: Path) -> dict[str, np.ndarray]:
    """Entry name → I of the one master file in ``out``."""
    (master,) = out.glob("*.nxs")
    with h5py.File(master, "r") as f:
        return {name: f[name]["data"]["I"][()] for name in f}


def submission(out: Path) -> dict:
    """The newest ``submission.json`` of a Slurm campaign."""
    files = sorted((out / "slurm").glob("*/submission.json"))
    return json.loads(files[-1].read_text())


def require_slurm_cluster() -> None:
    """The test cluster must be up: tests on it are the real thing, never skipped."""
    if shutil.which("sbatch") is None:
        pytest.fail("Slurm is not installed: run `make test` (installs and starts it) or, as root, "
                    "`bash tests/services/install-system-packages.sh test && bash tests/cluster/start-slurm.sh`")
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        pytest.fail(f"the test Slurm cluster is not running ({done.stderr.strip()}): as root, run "
                    "`bash tests/cluster/start-slurm.sh`")


def job_state(job: str) -> str:
    """The job's state in sacct ('' while sacct does not know it yet)."""
    done = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "State"], capture_output=True, text=True)
    return done.stdout.split("\n")[0].split(" ")[0].strip()


def wait_for(job: str, timeout: float = 180) -> str:
    """Poll until the job has ended in sacct (which lags squeue by a few seconds)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = job_state(job)
        if state and state not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
            return state
        time.sleep(1)
    raise AssertionError(f"job {job} did not end within {timeout} s (state {job_state(job)!r})")


def plugin_distribution(folder: Path, name: str, kinds: dict[str, str]) -> Path:
    """An installed distribution ``name`` in ``folder`` declaring reduction kinds (kind name →
    "module:OBJECT") in the ``xreduce.kinds`` entry-point group: ``folder`` on the path is an install."""
    info = folder / f"{name}-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0\n", encoding="utf-8")
    lines = [f"{kind} = {target}" for kind, target in kinds.items()]
    (info / "entry_points.txt").write_text("[xreduce.kinds]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return folder


def plugin_env(*folders: Path, **extra: str) -> dict[str, str]:
    """The environment of a process (and of the Slurm jobs and MPI ranks it starts) that sees the
    distributions in ``folders`` and this checkout's hpc and reduction."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = [str(f) for f in folders] + [str(REPO)] + inherited
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), **extra}


def bench_rates(text: str, stages: tuple[str, ...]) -> dict[str, tuple[int, float]]:
    """stage → (frames, frames/s) from the table `xreduce bench` prints."""
    rows = {}
    for stage in stages:
        match = re.search(rf"^{re.escape(stage)}\s+(\d+)\s+[\d.]+\s+([\d.]+)\s", text, re.M)
        assert match, f"no row {stage!r} in:\n{text}"
        rows[stage] = (int(match[1]), float(match[2]))
    return rows
