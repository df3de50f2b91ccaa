"""``backend=submitit``: the campaign as one Slurm job array through submitit, waited for here.

For users who prefer a Python-native flow (a notebook, or ``xreduce run backend=submitit``): the
chunks still to do are packed into task groups, ``map_array`` submits them as one array
(``slurm_array_parallelism`` throttles it), and the caller gets each group's outcomes as its task
ends, for the progress bar. Tasks are ``Checkpointable``: a task that times out or is preempted
is requeued with the same group, and the chunks it had finished are skipped (they are files).
What submitit ships is a small callable holding a plan snapshot's path and chunk ids — no closures.
With ``backend.container`` (or the xreduce module's image) the tasks' Python runs inside the
Apptainer image (submitit's ``python`` command), with the binds of :mod:`hpc.container`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..container import container_for
from ..plan import Plan, read_plan, write_snapshot
from ..slurm_units import mebibytes, minutes
from ..state import ChunkPaths, record_failure
from ..worker import Outcome, StepCache, process_chunk
from .base import Backend
from .slurm_cluster import max_array_size, missing, pack_groups, split_arrays

__all__ = ["SubmititBackend", "GroupTask", "submitit_parameters"]


def _as_mapping(options: Sequence[str]) -> dict[str, str | bool]:
    """Long sbatch options as submitit's ``slurm_additional_parameters``: "--exclusive" → {"exclusive": True}."""
    mapping: dict[str, str | bool] = {}
    for option in options:
        name, equals, value = option.removeprefix("--").partition("=")
        mapping[name] = value if equals else True
    return mapping


def submitit_parameters(cfg: Any) -> dict[str, Any]:
    """The backend's keys in submitit's names: AutoExecutor.update_parameters' arguments (null keys left out).

    time → ``timeout_min`` (whole minutes, rounded up); mem → ``mem_gb``, its MiB / 1024 (submitit
    writes a whole number back as "16GB", else as MB: --mem is what was asked); gpus_per_task →
    ``gpus_per_node`` (one task per node); partition, account, qos, setup → ``slurm_partition``,
    ``slurm_account``, ``slurm_qos``, ``slurm_setup``; extra_directives → ``slurm_additional_parameters``.

    >>> from omegaconf import OmegaConf
    >>> from hpc.config_schema import SubmititBackendConfig
    >>> cfg = OmegaConf.merge(OmegaConf.structured(SubmititBackendConfig), {"time": "1:30:00", "mem": "1500M",
    ...                       "extra_directives": ["--exclusive", "--constraint=v100"]})
    >>> params = submitit_parameters(cfg)
    >>> params["timeout_min"], params["mem_gb"], params["slurm_additional_parameters"]
    (90, 1.46484375, {'exclusive': True, 'constraint': 'v100'})
    >>> submitit_parameters(OmegaConf.merge(cfg, {"mem": "16G"}))["mem_gb"]
    16.0
    """
    params = dict(name="xreduce", timeout_min=minutes(cfg.time), cpus_per_task=int(cfg.cpus_per_task),
                  mem_gb=mebibytes(cfg.mem) / 1024 if cfg.mem else None, gpus_per_node=int(cfg.gpus_per_task) or None,
                  slurm_partition=cfg.partition, slurm_account=cfg.account, slurm_qos=cfg.qos,
                  slurm_setup=list(cfg.setup) or None, slurm_array_parallelism=int(cfg.array_parallelism),
                  slurm_additional_parameters=_as_mapping(cfg.extra_directives) or None)
    return {key: value for key, value in params.items() if value is not None}


class GroupTask:
    """What an array task runs: ``task(chunk_ids)`` reduces those chunks of the plan snapshot at
    ``snapshot`` (immutable, checked against the hash in its name: see :func:`hpc.plan.write_snapshot`)."""

    def __init__(self, snapshot: str) -> None:
        self.snapshot = snapshot

    def __call__(self, chunk_ids: list[str]) -> list[Outcome]:
        if os.environ.get("SLURM_CPUS_PER_TASK"):  # the engine uses the cores Slurm gave the task
            os.environ.setdefault("XREDUCE_THREADS", os.environ["SLURM_CPUS_PER_TASK"])
        plan = read_plan(Path(self.snapshot))
        steps = StepCache()
        return [process_chunk(plan, plan.chunk(chunk_id), steps) for chunk_id in chunk_ids]

    def checkpoint(self, chunk_ids: list[str]) -> Any:
        """Requeue the same group on timeout or preemption: finished chunks are skipped as files."""
        import submitit

        return submitit.helpers.DelayedSubmission(GroupTask(self.snapshot), chunk_ids)


class SubmititBackend(Backend):
    """Submit through submitit's AutoExecutor (Slurm) and wait, reporting outcomes as tasks end."""

    name = "submitit"
    waits = True

    def available(self) -> str | None:
        if importlib.util.find_spec("submitit") is None:
            return "backend=submitit needs the submitit package: pip install 'xreduce[slurm]'"
        return missing("sbatch", "srun", "sacct", "scontrol", "scancel")

    def _executor(self, folder: Path, plan: Plan) -> Any:
        import submitit

        container = container_for(self.cfg, plan.config)
        python = {} if container is None else {
            "slurm_python": container.command("python3", gpu=bool(self.cfg.gpus_per_task))}
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", **python)
        executor.update_parameters(**submitit_parameters(self.cfg))
        return executor

    def run(self, plan: Plan, chunk_indices: Sequence[int], on_outcome: Callable[[Outcome], None]) -> None:
        import submitit

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = Path(self.cfg.folder) if self.cfg.folder else Path(plan.output) / "submitit" / stamp
        folder.mkdir(parents=True, exist_ok=True)
        groups = pack_groups(list(chunk_indices), int(self.cfg.chunks_per_task))
        snapshot = write_snapshot(replace(plan, groups=groups))  # the tasks' immutable work order
        executor = self._executor(folder, plan)
        id_groups = [[plan.chunks[i].id for i in group] for group in groups]
        # map_array makes one array: keep each below the cluster's MaxArraySize, as backend=slurm does
        jobs = []
        for offset, count in split_arrays(len(groups), max_array_size()):
            jobs += executor.map_array(GroupTask(str(snapshot)), id_groups[offset:offset + count])
        group_of = {job.job_id: group for job, group in zip(jobs, groups)}
        for job in submitit.helpers.as_completed(jobs, poll_frequency=1):
            group = group_of[job.job_id]
            try:
                outcomes = job.result()
            except Exception as exc:  # the task died (cancelled, node lost, out of memory ...)
                outcomes = []
                for index in group:
                    chunk = plan.chunks[index]
                    paths = ChunkPaths(Path(plan.output), chunk.id)
                    if not paths.result.exists():
                        reason = f"submitit job {job.job_id} ended without a result: {exc}".splitlines()[0]
                        record_failure(paths, chunk, exc, reason=reason)
                        outcomes.append(Outcome(chunk.id, False, 0, 0.0, reason))
                    else:
                        outcomes.append(Outcome(chunk.id, True, 0, 0.0, "done before the task died"))
            for outcome in outcomes:
                on_outcome(outcome)
