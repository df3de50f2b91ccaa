"""``backend=dask``: chunks as Dask tasks on a LocalCluster, a dask-jobqueue SLURMCluster, or an
existing scheduler (``backend.scheduler_address``, or a ``Client`` passed from a notebook).

Each worker process keeps one integrator per reduction config for its lifetime (a module-level
cache), results are the chunk files the workers write, and the client only gathers the small
outcomes, as they complete, for the progress bar. A worker that dies takes only its running
chunk with it: Dask retries the task elsewhere, and the chunk files make a retry idempotent.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..container import container_for
from ..errors import BackendError
from ..plan import Plan, write_snapshot
from ..slurm_units import mebibytes
from ..state import ChunkPaths, record_failure
from ..worker import Outcome, chunk_task
from .base import Backend
from .slurm_cluster import missing

__all__ = ["DaskBackend", "jobqueue_parameters"]

log = logging.getLogger(__name__)


def _task(snapshot: str, chunk_id: str, threads: int) -> Outcome:
    """One chunk of a plan snapshot on a Dask worker, with the worker's share of the cores for the engine."""
    os.environ.setdefault("XREDUCE_THREADS", str(threads))
    return chunk_task(snapshot, chunk_id)


def jobqueue_parameters(cfg: Any) -> dict[str, Any]:
    """The worker jobs of ``cluster=slurm`` in dask-jobqueue's names: SLURMCluster's arguments but ``python``.

    Slurm's texts go into the job script as they are: partition → ``queue``, time → ``walltime``, mem
    → ``job_mem`` (its --mem). ``memory``, the workers' own limit, is mem in MiB, which dask reads in
    powers of 1024 as Slurm does, so both sides agree on "16G". cpus_per_task → ``cores``; qos and
    gpus_per_task become directives after extra_directives; setup → ``job_script_prologue``.

    >>> from omegaconf import OmegaConf
    >>> from hpc.config_schema import DaskBackendConfig
    >>> cfg = OmegaConf.merge(OmegaConf.structured(DaskBackendConfig), {"cluster": "slurm", "mem": "16G",
    ...                       "partition": "gpu", "gpus_per_task": 1, "extra_directives": ["--exclusive"]})
    >>> params = jobqueue_parameters(cfg)
    >>> params["memory"], params["job_mem"], params["queue"], params["walltime"], params["cores"]
    ('16384MiB', '16G', 'gpu', '01:00:00', 2)
    >>> params["job_extra_directives"]
    ['--exclusive', '--gres=gpu:1']
    """
    extra = [*cfg.extra_directives, *([f"--qos={cfg.qos}"] if cfg.qos else []),
             *([f"--gres=gpu:{cfg.gpus_per_task}"] if cfg.gpus_per_task else [])]
    return dict(queue=cfg.partition, account=cfg.account, walltime=cfg.time, cores=int(cfg.cpus_per_task),
                job_mem=cfg.mem, memory=f"{mebibytes(cfg.mem)}MiB", processes=int(cfg.processes),
                job_extra_directives=extra, job_script_prologue=list(cfg.setup), interface=cfg.interface,
                local_directory=cfg.local_directory, log_directory=cfg.log_directory,
                # workers leave before the time limit, and are replaced while work remains
                worker_extra_args=["--lifetime", cfg.lifetime, "--lifetime-stagger", "2m"])


class DaskBackend(Backend):
    """Run chunks on Dask workers; builds the cluster from ``backend.*`` unless given a client."""

    name = "dask"
    waits = True

    def __init__(self, cfg: Any, client: Any = None) -> None:
        super().__init__(cfg)
        self.client = client

    @property
    def _on_slurm(self) -> bool:
        """Whether the workers are Slurm jobs this backend submits (dask-jobqueue)."""
        return self.cfg.cluster == "slurm" and not self.cfg.scheduler_address and self.client is None

    def available(self) -> str | None:
        if importlib.util.find_spec("distributed") is None:
            return "backend=dask needs dask.distributed: pip install 'xreduce[dask]'"
        if not self._on_slurm:
            return None
        if importlib.util.find_spec("dask_jobqueue") is None:
            return "backend.cluster=slurm needs dask-jobqueue: pip install 'xreduce[dask]'"
        return missing("sbatch", "squeue", "scancel")

    def _engine_threads(self) -> int:
        cfg = self.cfg
        if self._on_slurm:
            return max(1, int(cfg.cpus_per_task) // max(1, int(cfg.processes)))
        return max(1, (os.cpu_count() or 1) // max(1, int(cfg.workers)))

    def _slurm_cluster(self, plan_config: Mapping[str, Any]) -> Any:
        from dask_jobqueue import SLURMCluster

        cfg = self.cfg
        # in an image, the worker jobs start `apptainer exec ... IMAGE python3 -m distributed.cli.dask_worker`;
        # the scheduler runs here, so submit from the same image (the module's wrapper does) to match versions
        container = container_for(cfg, plan_config)
        python = container.command("python3", gpu=bool(cfg.gpus_per_task)) if container else None
        cluster = SLURMCluster(python=python, **jobqueue_parameters(cfg))
        if cfg.jobs:
            cluster.scale(jobs=cfg.jobs)
        else:
            cluster.adapt(minimum_jobs=cfg.minimum_jobs, maximum_jobs=cfg.maximum_jobs)
        return cluster

    def _connect(self, plan_config: Mapping[str, Any]) -> tuple[Any, Any]:
        """(client, cluster we own or None)."""
        import distributed

        if self.client is not None:
            return self.client, None
        cfg = self.cfg
        if cfg.scheduler_address:
            try:
                return distributed.Client(cfg.scheduler_address, timeout=f"{cfg.connect_timeout}s"), None
            except (OSError, TimeoutError) as exc:
                raise BackendError(f"cannot reach the Dask scheduler at backend.scheduler_address="
                                   f"{cfg.scheduler_address} within {cfg.connect_timeout} s: {exc}") from None
        if self._on_slurm:
            cluster = self._slurm_cluster(plan_config)
        else:
            cluster = distributed.LocalCluster(n_workers=cfg.workers, threads_per_worker=cfg.threads_per_worker,
                                               processes=True, dashboard_address=":0")
        return distributed.Client(cluster), cluster

    def run(self, plan: Plan, chunk_indices: Sequence[int], on_outcome: Callable[[Outcome], None]) -> None:
        import distributed

        if logging.getLogger().getEffectiveLevel() >= logging.WARNING:  # keep Dask's chatter out of the bar
            logging.getLogger("distributed").setLevel(logging.WARNING)
        client, cluster = self._connect(plan.config)
        try:
            if getattr(client, "dashboard_link", None):
                log.warning("Dask dashboard: %s", client.dashboard_link)
            snapshot = str(write_snapshot(plan))  # the workers' work order: immutable, whatever is planned meanwhile
            threads = self._engine_threads()
            index_of = {client.submit(_task, snapshot, plan.chunks[index].id, threads,
                                      key=f"xreduce-{plan.chunks[index].id}",
                                      retries=int(self.cfg.retries), pure=False): index for index in chunk_indices}
            for future in distributed.as_completed(list(index_of)):
                try:
                    outcome = future.result()
                except Exception as exc:  # the task's workers kept dying (KilledWorker) past the retries
                    chunk = plan.chunks[index_of[future]]
                    record_failure(ChunkPaths(Path(plan.output), chunk.id), chunk, exc,
                                   reason=f"Dask gave up on the chunk: {type(exc).__name__}: {exc}")
                    outcome = Outcome(chunk.id, False, 0, 0.0, f"{type(exc).__name__}: {exc}")
                on_outcome(outcome)
        finally:
            if cluster is not None:
                client.close()
                cluster.close()
