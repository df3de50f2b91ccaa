"""``backend=slurm``: an sbatch wrapper — one job array for the chunks, one dependent merge job.

``submit`` renders readable sbatch scripts from ``jobs/*.sbatch`` into
``<output>/slurm/<submission>/`` with a copy of the plan whose task groups are the chunks still
to do, submits them and returns at once. Array task i runs ``xreduce worker --plan ... --group
offset+i``; arrays are split so that no index reaches the cluster's MaxArraySize. The merge job
runs after all of them (``afterany``) and merges whatever is done.

With a container (``backend.container``, or the image of the xreduce module: see
:mod:`hpc.container`) every job runs ``apptainer exec [--nv] --bind ... IMAGE xreduce ...``
instead, ``--nv`` on the jobs that ask for GPUs; the rendered scripts show the exact line.

The files stay the source of truth for chunk state; Slurm is asked (``squeue``, ``sacct``) only
to tell chunks that are queued or running from those whose task died without a word (TIMEOUT,
OUT_OF_MEMORY, CANCELLED, NODE_FAIL).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import Any

from ..container import Container, container_for, running_image
from ..errors import BackendError
from ..plan import Plan, write_plan
from ..process import call

__all__ = ["Submission", "require", "submit", "active_jobs", "task_states", "cancel", "latest_submission"]



def jobs_dir() -> Path:
    """The sbatch templates: ``hpc/jobs`` in a wheel, ``jobs/`` in a checkout."""
    hpc_dir = Path(__file__).resolve().parents[1]
    for candidate in (hpc_dir / "jobs", hpc_dir.parent / "jobs"):
        if (candidate / "array.sbatch").is_file():
            return candidate
    raise BackendError(f"xreduce's jobs/ templates are missing (looked in {hpc_dir / 'jobs'} and "
                       f"{hpc_dir.parent / 'jobs'}): the installation is broken, reinstall xreduce")

_JOB_ID = re.compile(r"^(?P<job_id>\d+)(;\S+)?\s*$")
#: Slurm end states in which a task leaves no result and no error record of its own.
SILENT_DEATHS = {"TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
                 "FAILED"}
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def _not_found(command: str) -> BackendError:
    image = running_image()
    if image:
        return BackendError(f"`{command}` not found inside the Apptainer image {image}: the host's Slurm client "
                            "is not visible here. Run xreduce through the xreduce module's wrapper, which binds "
                            "it (XREDUCE_SLURM, docs/containers.md), or submit from a host installation")
    return BackendError(f"`{command}` not found: Slurm is not installed (or not on PATH) on this machine; "
                        "use backend=local to run here")


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices must stay below it)."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", call(["scontrol", "show", "config"]).stdout, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def pack_groups(indices: list[int], per_task: int) -> list[list[int]]:
    """Chunk indices → task groups of ``per_task`` chunks (short chunks share one array task)."""
    return [indices[i:i + per_task] for i in range(0, len(indices), per_task)]


def split_arrays(ngroups: int, limit: int) -> list[tuple[int, int]]:
    """(offset, count) of each array: every array indexed 0..count-1 with count ≤ ``limit``."""
    return [(offset, min(limit, ngroups - offset)) for offset in range(0, ngroups, limit)]


@dataclass
class Submission:
    """What one ``xreduce submit`` sent to Slurm, saved beside its scripts."""

    folder: str
    created: str
    array_jobs: list[str]
    arrays: list[tuple[int, int]]  # (group offset, count) per array job
    merge_job: str | None
    groups: list[list[str]]  # chunk ids of each task group
    container: str | None = None  # "IMAGE (from SOURCE)" when the jobs run in an Apptainer image

    def save(self) -> None:
        (Path(self.folder) / "submission.json").write_text(json.dumps(self.__dict__, indent=1), encoding="utf-8")

    @property
    def job_ids(self) -> list[str]:
        return [*self.array_jobs, *([self.merge_job] if self.merge_job else [])]

    def group_of(self, array_job: str, task: int) -> int:
        return self.arrays[self.array_jobs.index(array_job)][0] + task


def latest_submission(output: Path) -> Submission | None:
    """The last submission of a campaign, or None."""
    folders = sorted((output / "slurm").glob("*/submission.json"))
    if not folders:
        return None
    data = json.loads(folders[-1].read_text(encoding="utf-8"))
    data["arrays"] = [tuple(a) for a in data["arrays"]]
    return Submission(**data)


def active_jobs(output: Path) -> list[str]:
    """Job ids of the campaign's last submission still queued or running."""
    sub = latest_submission(output)
    if sub is None or shutil.which("squeue") is None:
        return []
    listed = call(["squeue", "-h", "-o", "%F %T"]).stdout.split()
    queued = {listed[i] for i in range(0, len(listed) - 1, 2) if listed[i + 1] in ACTIVE}
    return [job for job in sub.job_ids if job in queued]


def _xreduce(container: Container | None, gpu: bool) -> str:
    """How a job starts xreduce: in the image, or with the interpreter that submitted."""
    if container is not None:
        return container.command("xreduce", gpu=gpu)
    return f"{shlex.quote(sys.executable)} -m hpc.cli"


def _directives(backend: Any, *, for_array: bool) -> str:
    lines = [f"--partition={backend.partition}" if backend.partition else "",
             f"--account={backend.account}" if backend.account else "",
             f"--qos={backend.qos}" if backend.qos else ""]
    if for_array:
        lines += [f"--mem={backend.mem}" if backend.mem else "",
                  f"--gres=gpu:{backend.gpus_per_task}" if backend.gpus_per_task else ""]
    lines += list(backend.extra_directives or [])
    return "\n".join(f"#SBATCH {line}" for line in lines if line)


def render(template: str, **values: Any) -> str:
    """Fill a jobs/*.sbatch template (``${name}`` placeholders; ``$$`` is a literal ``$``)."""
    return Template((jobs_dir() / template).read_text(encoding="utf-8")).substitute(values)


def _sbatch(script: Path) -> str:
    out = call(["sbatch", "--parsable", str(script)]).stdout
    match = _JOB_ID.match(out.strip())
    if not match:
        raise BackendError(f"cannot read a job id in sbatch's answer for {script}: {out!r} "
                           f"(expected {_JOB_ID.pattern})")
    return match.group("job_id")


def require() -> None:
    """Fail early, naming the command, where Slurm's client commands are missing."""
    for command in ("sbatch", "squeue", "sacct", "scontrol", "scancel"):
        if shutil.which(command) is None:
            raise _not_found(command)


def submit(plan: Plan, todo: list[int], backend: Any) -> Submission:
    """Submit the ``todo`` chunks of ``plan`` as job arrays plus a dependent merge job."""
    require()
    container = container_for(backend, plan.config)  # a bad image or bind fails before anything is written
    output = Path(plan.output)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    folder = output / "slurm" / stamp
    logs = folder / "logs"
    logs.mkdir(parents=True)
    described = f"{container.image} (from {container.source})" if container else None
    if backend.mode == "mpi":
        return _submit_mpi(plan, todo, backend, folder, stamp, container, described)
    groups = pack_groups(todo, int(backend.chunks_per_task))
    plan_path = write_plan(replace(plan, groups=groups), folder)
    limit = int(backend.max_array_size or max_array_size())
    arrays = split_arrays(len(groups), limit)
    common = dict(log_dir=shlex.quote(str(logs)), plan=shlex.quote(str(plan_path)),
                  setup="\n".join(backend.setup or []))
    submitted: list[str] = []
    try:
        for k, (offset, count) in enumerate(arrays):
            throttle = f"%{backend.array_parallelism}" if backend.array_parallelism else ""
            script = folder / f"array_{k}.sbatch"
            script.write_text(render("array.sbatch", job_name=f"xreduce-{plan.campaign}", array=f"0-{count - 1}{throttle}",
                                     time=backend.time, cpus_per_task=backend.cpus_per_task, group_offset=offset,
                                     directives=_directives(backend, for_array=True),
                                     xreduce=_xreduce(container, bool(backend.gpus_per_task)), **common),
                              encoding="utf-8")
            submitted.append(_sbatch(script))
        script = folder / "merge.sbatch"
        script.write_text(render("merge.sbatch", job_name=f"xreduce-{plan.campaign}-merge",
                                 array_jobs=":".join(submitted), merge_time=backend.merge_time,
                                 directives=_directives(backend, for_array=False),
                                 xreduce=_xreduce(container, False), **common), encoding="utf-8")
        merge_job = _sbatch(script)
    except BackendError:
        if submitted:  # nothing half-submitted: the arrays without their merge job are withdrawn
            call(["scancel", *submitted])
        raise
    sub = Submission(str(folder), stamp, submitted, arrays, merge_job,
                     [[plan.chunks[i].id for i in group] for group in groups], described)
    sub.save()
    return sub


def _submit_mpi(plan: Plan, todo: list[int], backend: Any, folder: Path, stamp: str,
                container: Container | None, described: str | None) -> Submission:
    """backend.mode=mpi: one job of ``ntasks`` MPI ranks runs the MPI backend, rank 0 merging."""
    plan_path = write_plan(replace(plan, groups=[todo]), folder)
    script = folder / "mpi.sbatch"
    script.write_text(render("mpi.sbatch", job_name=f"xreduce-{plan.campaign}", ntasks=backend.ntasks,
                             time=backend.time, cpus_per_task=backend.cpus_per_task,
                             log_dir=shlex.quote(str(folder / "logs")), plan=shlex.quote(str(plan_path)),
                             setup="\n".join(backend.setup or []), launcher=backend.mpi_launcher,
                             directives=_directives(backend, for_array=True),
                             xreduce=_xreduce(container, bool(backend.gpus_per_task))), encoding="utf-8")
    job = _sbatch(script)
    sub = Submission(str(folder), stamp, [], [], job, [[plan.chunks[i].id for i in todo]], described)
    sub.save()
    return sub


def task_states(sub: Submission) -> dict[int, tuple[str, str]]:
    """Task group → (Slurm state, job id) for the array tasks of a submission (sacct + squeue)."""
    states: dict[int, tuple[str, str]] = {}
    if not sub.array_jobs:  # mode=mpi: one job holds every chunk; the files say what it did
        return states
    ids = ",".join(sub.array_jobs)
    if shutil.which("sacct"):
        for line in call(["sacct", "-n", "-P", "-X", "-j", ids, "-o", "JobID,State"]).stdout.splitlines():
            job, _, state = line.partition("|")
            array_job, _, task = job.partition("_")
            if task.isdigit() and array_job in sub.array_jobs:
                states[sub.group_of(array_job, int(task))] = (state.split()[0] if state else "UNKNOWN", job)
    if shutil.which("squeue"):  # pending tasks appear here one by one (-r), sacct only as ranges
        for line in call(["squeue", "-h", "-r", "-j", ids, "-o", "%i %T"]).stdout.splitlines():
            job, _, state = line.partition(" ")
            array_job, _, task = job.partition("_")
            if task.isdigit() and array_job in sub.array_jobs:
                states[sub.group_of(array_job, int(task))] = (state.strip(), job)
    return states


def cancel(output: Path) -> list[str]:
    """scancel what the campaign still has queued or running; return those job ids."""
    jobs = active_jobs(output)
    if jobs:
        call(["scancel", *jobs])
    return jobs
