"""The sbatch scripts of ``backend=slurm``, rendered from the templates in ``jobs/*.sbatch``.

Pure functions of the plan, the backend config, the submission folder and the container: nothing
is written or submitted here, so the scripts are checked without Slurm against golden files
(``tests/hpc/golden``). :mod:`hpc.backends.slurm` writes them and runs sbatch.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from string import Template
from typing import Any

from ..container import Container
from ..errors import BackendError
from ..plan import Plan, snapshot_path

__all__ = ["array_script", "merge_script", "mpi_script", "jobs_dir"]


def jobs_dir() -> Path:
    """The sbatch templates: ``hpc/jobs`` in a wheel, ``jobs/`` in a checkout."""
    hpc_dir = Path(__file__).resolve().parents[1]
    for candidate in (hpc_dir / "jobs", hpc_dir.parent / "jobs"):
        if (candidate / "array.sbatch").is_file():
            return candidate
    raise BackendError(f"xreduce's jobs/ templates are missing (looked in {hpc_dir / 'jobs'} and "
                       f"{hpc_dir.parent / 'jobs'}): the installation is broken, reinstall xreduce")


def _render(template: str, **values: Any) -> str:
    """Fill a jobs/*.sbatch template (``${name}`` placeholders; ``$$`` is a literal ``$``)."""
    return Template((jobs_dir() / template).read_text(encoding="utf-8")).substitute(values)


def _xreduce(container: Container | None, gpu: bool) -> str:
    """How a job starts xreduce: in the image, or with the interpreter that submitted."""
    if container is not None:
        return container.command("xreduce", gpu=gpu)
    return f"{shlex.quote(sys.executable)} -m hpc.cli"


def _directives(backend: Any, *, for_array: bool) -> str:
    """The ``#SBATCH`` lines of the backend's keys; memory and GPUs only for jobs that reduce."""
    lines = [f"--partition={backend.partition}" if backend.partition else "",
             f"--account={backend.account}" if backend.account else "",
             f"--qos={backend.qos}" if backend.qos else ""]
    if for_array:
        lines += [f"--mem={backend.mem}" if backend.mem else "",
                  f"--gres=gpu:{backend.gpus_per_task}" if backend.gpus_per_task else ""]
    lines += list(backend.extra_directives or [])
    return "\n".join(f"#SBATCH {line}" for line in lines if line)


def _common(plan: Plan, folder: Path, backend: Any) -> dict[str, str]:
    """What every script of a submission shares: its log folder, plan snapshot (the immutable work
    order, :func:`hpc.plan.snapshot_path`) and setup lines."""
    return dict(log_dir=shlex.quote(str(folder / "logs")), plan=shlex.quote(str(snapshot_path(plan))),
                setup="\n".join(backend.setup or []))


def array_script(plan: Plan, backend: Any, folder: Path, container: Container | None, offset: int,
                 count: int) -> str:
    """The job array whose task i reduces task group ``offset + i`` of ``plan`` (its snapshot)."""
    throttle = f"%{backend.array_parallelism}" if backend.array_parallelism else ""
    return _render("array.sbatch", job_name=f"xreduce-{plan.campaign}", array=f"0-{count - 1}{throttle}",
                   time=backend.time, cpus_per_task=backend.cpus_per_task, group_offset=offset,
                   directives=_directives(backend, for_array=True),
                   xreduce=_xreduce(container, bool(backend.gpus_per_task)), **_common(plan, folder, backend))


def merge_script(plan: Plan, backend: Any, folder: Path, container: Container | None, array_jobs: list[str]) -> str:
    """The merge job, run after every task of ``array_jobs`` has ended (afterany)."""
    return _render("merge.sbatch", job_name=f"xreduce-{plan.campaign}-merge", array_jobs=":".join(array_jobs),
                   merge_time=backend.merge_time, directives=_directives(backend, for_array=False),
                   xreduce=_xreduce(container, False), **_common(plan, folder, backend))


def mpi_script(plan: Plan, backend: Any, folder: Path, container: Container | None) -> str:
    """backend.mode=mpi: one job of ``ntasks`` MPI ranks over ``plan`` (its snapshot), rank 0 merging."""
    return _render("mpi.sbatch", job_name=f"xreduce-{plan.campaign}", ntasks=backend.ntasks, time=backend.time,
                   cpus_per_task=backend.cpus_per_task, launcher=backend.mpi_launcher,
                   directives=_directives(backend, for_array=True),
                   xreduce=_xreduce(container, bool(backend.gpus_per_task)), **_common(plan, folder, backend))
