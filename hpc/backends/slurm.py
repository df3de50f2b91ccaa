"""``backend=slurm``: an sbatch wrapper — one job array for the chunks, one dependent merge job.

``submit`` writes readable sbatch scripts (:mod:`hpc.backends.sbatch`) into
``<output>/slurm/<submission>/``, and the plan whose task groups are the chunks still to do as an
immutable snapshot (``<output>/plans/<hash12>.json``, which the scripts name), submits them and
returns at once. Array task i runs ``xreduce worker --plan ... --group
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
import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from reduction.step import atomic_output

from ..container import container_for
from ..errors import BackendError
from ..plan import Plan, write_snapshot
from ..process import call
from ..state import FAILED, PENDING, ChunkState
from . import sbatch
from .base import Backend
from .slurm_cluster import max_array_size, missing, pack_groups, split_arrays

__all__ = ["SlurmBackend", "Submission", "latest_submission", "task_states"]

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^(?P<job_id>\d+)(;\S+)?\s*$")
#: Slurm's client commands this backend runs
COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel")
#: Slurm end states in which a task leaves no result and no error record of its own.
SILENT_DEATHS = {"TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
                 "FAILED"}
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


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
    ranks: int = 0  # mode=mpi: the MPI ranks of the one job (merge_job)
    plan: str = ""  # the plan snapshot the jobs read (<output>/plans/<hash12>.json)

    def save(self) -> None:
        """Write ``submission.json`` atomically: ``status`` may read it while it is written."""
        with atomic_output(Path(self.folder) / "submission.json") as tmp:
            tmp.write_text(json.dumps(self.__dict__, indent=1), encoding="utf-8")

    @property
    def job_ids(self) -> list[str]:
        return [*self.array_jobs, *([self.merge_job] if self.merge_job else [])]

    def group_of(self, array_job: str, task: int) -> int:
        return self.arrays[self.array_jobs.index(array_job)][0] + task

    def summary(self) -> str:
        if self.array_jobs:
            arrays = ", ".join(f"{job} ({count} tasks)" for job, (_, count) in zip(self.array_jobs, self.arrays))
            lines = [f"submitted array job(s) {arrays} and merge job {self.merge_job}"]
        else:
            lines = [f"submitted MPI job {self.merge_job} ({self.ranks} ranks; rank 0 merges)"]
        if self.container:
            lines.append(f"jobs run in the Apptainer image {self.container}")
        return "\n".join([*lines, f"scripts and logs: {self.folder}"])


def latest_submission(output: Path) -> Submission | None:
    """The last submission of a campaign, or None."""
    folders = sorted((output / "slurm").glob("*/submission.json"))
    if not folders:
        return None
    data = json.loads(folders[-1].read_text(encoding="utf-8"))
    data["arrays"] = [tuple(a) for a in data["arrays"]]
    return Submission(**data)


def _sbatch(script: Path) -> str:
    out = call(["sbatch", "--parsable", str(script)]).stdout
    match = _JOB_ID.match(out.strip())
    if not match:
        raise BackendError(f"cannot read a job id in sbatch's answer for {script}: {out!r} "
                           f"(expected {_JOB_ID.pattern})")
    return match.group("job_id")


def _write(folder: Path, name: str, text: str) -> Path:
    script = folder / name
    with atomic_output(script) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return script


def task_states(sub: Submission) -> dict[int, tuple[str, str]]:
    """Task group → (Slurm state, job id) for the array tasks of a submission (sacct + squeue)."""
    states: dict[int, tuple[str, str]] = {}
    if not sub.array_jobs:  # mode=mpi: one job holds every chunk; the files say what it did
        return states
    ids = ",".join(sub.array_jobs)
    for line in call(["sacct", "-n", "-P", "-X", "-j", ids, "-o", "JobID,State"]).stdout.splitlines():
        job, _, state = line.partition("|")
        array_job, _, task = job.partition("_")
        if task.isdigit() and array_job in sub.array_jobs:
            states[sub.group_of(array_job, int(task))] = (state.split()[0] if state else "UNKNOWN", job)
    # pending tasks appear here one by one (-r), sacct only as ranges
    for line in call(["squeue", "-h", "-r", "-j", ids, "-o", "%i %T"]).stdout.splitlines():
        job, _, state = line.partition(" ")
        array_job, _, task = job.partition("_")
        if task.isdigit() and array_job in sub.array_jobs:
            states[sub.group_of(array_job, int(task))] = (state.strip(), job)
    return states


class SlurmBackend(Backend):
    """Submit job arrays plus a dependent merge job (or one MPI job) with sbatch, and return."""

    name = "slurm"
    submits = True

    def available(self) -> str | None:
        return missing(*COMMANDS)

    def submit(self, plan: Plan, todo: list[int]) -> Submission:
        """Submit the ``todo`` chunks of ``plan`` as job arrays plus a dependent merge job."""
        backend = self.cfg
        container = container_for(backend, plan.config)  # a bad image or bind fails before anything is written
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = Path(plan.output) / "slurm" / stamp
        (folder / "logs").mkdir(parents=True)
        described = f"{container.image} (from {container.source})" if container else None
        if backend.mode == "mpi":
            plan = replace(plan, groups=[todo])
            snapshot = write_snapshot(plan)  # the job's immutable work order, named in its script
            job = _sbatch(_write(folder, "mpi.sbatch", sbatch.mpi_script(plan, backend, folder, container)))
            sub = Submission(str(folder), stamp, [], [], job, [[plan.chunks[i].id for i in todo]], described,
                             int(backend.ntasks), str(snapshot))
            sub.save()
            return sub
        groups = pack_groups(todo, int(backend.chunks_per_task))
        plan = replace(plan, groups=groups)
        snapshot = write_snapshot(plan)  # the jobs' immutable work order, named in their scripts
        arrays = split_arrays(len(groups), int(backend.max_array_size or max_array_size()))
        submitted: list[str] = []
        try:
            for k, (offset, count) in enumerate(arrays):
                script = sbatch.array_script(plan, backend, folder, container, offset, count)
                submitted.append(_sbatch(_write(folder, f"array_{k}.sbatch", script)))
            script = sbatch.merge_script(plan, backend, folder, container, submitted)
            merge_job = _sbatch(_write(folder, "merge.sbatch", script))
        except BackendError:
            if submitted:  # nothing half-submitted: the arrays without their merge job are withdrawn
                call(["scancel", *submitted])
            raise
        sub = Submission(str(folder), stamp, submitted, arrays, merge_job,
                         [[plan.chunks[i].id for i in group] for group in groups], described, plan=str(snapshot))
        sub.save()
        return sub

    @classmethod
    def overlay(cls, output: Path, states: list[ChunkState]) -> list[ChunkState]:
        """Chunks the files call pending, as Slurm sees them: queued, running, or died silently."""
        sub = latest_submission(output)
        if sub is None:
            return states
        try:
            tasks = task_states(sub)
        except BackendError as exc:  # a status must still work when the controller is down
            log.warning("Slurm cannot be asked about jobs %s (%s): states below come from the files only",
                        ", ".join(sub.job_ids), str(exc).splitlines()[0])
            return states
        group_of = {cid: g for g, ids in enumerate(sub.groups) for cid in ids}
        out = []
        for st in states:
            group = group_of.get(st.chunk.id)
            if st.state == PENDING and group is not None and group in tasks:
                state, job = tasks[group]
                if state in ACTIVE:
                    st = ChunkState(st.chunk, "running" if state == "RUNNING" else "queued",
                                    f"Slurm job {job} {state}")
                elif state in SILENT_DEATHS:
                    log_file = Path(sub.folder) / "logs" / f"{job}.err"
                    st = ChunkState(st.chunk, FAILED, f"Slurm: {state} (job {job}; log {log_file})")
            out.append(st)
        return out

    @classmethod
    def active_jobs(cls, output: Path) -> list[str]:
        """Job ids of the campaign's last submission still queued or running."""
        sub = latest_submission(output)
        if sub is None:
            return []
        listed = call(["squeue", "-h", "-o", "%F %T"]).stdout.split()
        queued = {listed[i] for i in range(0, len(listed) - 1, 2) if listed[i + 1] in ACTIVE}
        return [job for job in sub.job_ids if job in queued]

    @classmethod
    def cancel(cls, output: Path) -> list[str]:
        """scancel what the campaign still has queued or running; return those job ids."""
        jobs = cls.active_jobs(output)
        if jobs:
            call(["scancel", *jobs])
        return jobs
