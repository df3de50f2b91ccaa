"""The campaign configuration's schemas: one Hydra structured-config dataclass per config group.

Every key a YAML file or an override may set is a typed field, so an unknown key or a value of the
wrong type fails before anything runs. ``backend`` has one schema per backend (:data:`BACKEND_SCHEMAS`),
each extending a base dataclass holding the keys they share; ``reduction`` has the schema of the
chosen reduction kind, which the kind declares itself (:func:`reduction_schemas`, from the registry
of :mod:`reduction.step`). The schemas are registered in Hydra's ConfigStore as ``schema/xreduce``,
``schema/reduction/<kind>`` and ``schema/backend/<name>`` on import; the shipped YAML files extend
them in their ``defaults`` lists, and a kind without a shipped YAML file (another package's) is
registered as ``reduction/<kind>`` itself. :mod:`hpc.config` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from reduction.step import MERGE_MODES, ReductionConfig, kinds

from .errors import ConfigError

__all__ = ["Config", "CampaignConfig", "BackendConfig", "LocalBackendConfig", "SlurmBackendConfig",
           "SubmititBackendConfig", "BatchBackendConfig", "DaskBackendConfig", "MPIBackendConfig", "PartitionConfig",
           "MergeConfig", "BACKEND_SCHEMAS", "MERGE_MODES", "reduction_schemas", "shipped_config_dir"]


def shipped_config_dir() -> Path:
    """The ``configs/`` tree shipped with xreduce: ``hpc/configs`` in a wheel, ``configs/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(f"xreduce's configs/ tree is missing (looked in {here / 'configs'} and "
                      f"{here.parent / 'configs'}): the installation is broken, reinstall xreduce")


@dataclass
class CampaignConfig:
    """``campaign``: which raw data to reduce and where the results go."""

    name: str = MISSING                     # a file-name-safe label, used in output paths
    raw_data: str = MISSING                 # a RAW_DATA folder, or any folder of BLISS dataset master files
    datasets: list[str] | None = None    # globs relative to raw_data; null: every dataset master file
    scans: str = "all"                      # "all" or scans: "1-20,25", "40-", "3.2" (reduction.io.bliss syntax)
    detector: str = MISSING                 # dataset name under /<scan>/measurement/
    monitor: str | None = None           # counter under measurement/ dividing each frame, or null
    frame_band: Any = "all"                 # rank-4 detectors (points, band, ny, nx): all | sum | a band index
    output: str | None = None            # null: PROCESSED_DATA/xreduce/<name> beside RAW_DATA


@dataclass
class BackendConfig:
    """``backend``: keys every backend has. Each backend extends it (one schema per backend)."""

    name: str = MISSING


@dataclass
class LocalBackendConfig(BackendConfig):
    """``backend=local``: chunks run in worker processes on this machine."""

    name: str = "local"
    workers: int = 1


@dataclass
class BatchBackendConfig(BackendConfig):
    """Keys of every backend whose chunks run in Slurm jobs (slurm, submitit, dask with cluster=slurm),
    each spelt as the sbatch option it becomes; submitit and dask-jobqueue get them in their own names
    and units (:func:`hpc.backends.submitit.submitit_parameters`, :func:`hpc.backends.dask.jobqueue_parameters`)."""

    partition: str | None = None            # --partition; null: the cluster's default
    account: str | None = None              # --account
    qos: str | None = None                  # --qos
    time: str = "01:00:00"                  # --time of each job (walltime), e.g. 01:30:00 or 1-00:00:00
    cpus_per_task: int = 2                  # --cpus-per-task (engine threads)
    mem: str | None = None                  # --mem, e.g. 16G (K, M, G, T; no unit: M); null: the cluster's default
    gpus_per_task: int = 0                  # --gres=gpu:N
    extra_directives: list[str] = field(default_factory=list)   # more sbatch options, e.g. ["--exclusive"]
    setup: list[str] = field(default_factory=list)   # shell lines run first in each job, e.g. ["module load hdf5"]
    container: str | None = None            # Apptainer image the jobs run xreduce (or Python) in;
                                            #   null: $XREDUCE_IMAGE (the xreduce module) if set (hpc.container)
    binds: list[str] | None = None          # host paths bound into it; null: raw data, output, input-file folders
                                            #   (either way plus $XREDUCE_BINDS)


@dataclass
class SlurmBackendConfig(BatchBackendConfig):
    """``backend=slurm``: one job array for the chunks and a dependent merge job (sbatch)."""

    name: str = "slurm"
    array_parallelism: int | None = None    # --array=...%N: at most N tasks at once
    chunks_per_task: int = 1                # chunks packed into one array task
    max_array_size: int | None = None       # null: MaxArraySize from `scontrol show config`
    merge_time: str = "00:30:00"            # --time of the merge job
    mode: str = "array"                     # array: a job array + merge job | mpi: one job of `ntasks` MPI ranks
    ntasks: int = 4                         # mode=mpi: MPI ranks (rank 0 hands out chunks and merges)
    mpi_launcher: str = "srun --mpi=pmix"   # mode=mpi: how ranks start (site-dependent; or "mpirun")


@dataclass
class SubmititBackendConfig(BatchBackendConfig):
    """``backend=submitit``: one Slurm job array through submitit, waited for with a progress bar."""

    name: str = "submitit"
    array_parallelism: int = 256            # at most N array tasks at once; a timed-out task requeues
    chunks_per_task: int = 1
    folder: str | None = None               # submitit's job folder; null: <output>/submitit/<time stamp>


@dataclass
class DaskBackendConfig(BatchBackendConfig):
    """``backend=dask``: Dask workers on a LocalCluster, a dask-jobqueue SLURMCluster or a running scheduler.
    The batch keys describe each worker job of ``cluster=slurm``."""

    name: str = "dask"
    cluster: str = "local"                  # local | slurm
    scheduler_address: str | None = None    # use a running scheduler (tcp://host:8786) instead
    connect_timeout: int = 30               # seconds to reach scheduler_address
    retries: int = 2                        # a chunk whose worker died is retried on another worker
    workers: int = 2                        # cluster=local: worker processes
    threads_per_worker: int = 1             # cluster=local: Dask threads per worker
    mem: str = "8G"                         # cluster=slurm: --mem of each worker job, shared by its processes
    processes: int = 1                      # cluster=slurm: worker processes per job
    lifetime: str = "55m"                   # cluster=slurm: workers leave before the time limit (and are replaced)
    interface: str | None = None            # network interface of the workers (e.g. ib0; lo for one node)
    local_directory: str | None = None
    log_directory: str | None = None
    jobs: int = 0                           # cluster=slurm: a fixed number of jobs; 0: adapt between
    minimum_jobs: int = 1                   #   minimum_jobs and maximum_jobs
    maximum_jobs: int = 4


@dataclass
class MPIBackendConfig(BackendConfig):
    """``backend=mpi``: under ``mpirun -n N`` / ``srun -n N``, rank 0 plans, hands out chunks and merges."""

    name: str = "mpi"


@dataclass
class PartitionConfig:
    """``partition``: how scans are cut into chunks."""

    frames_per_chunk: int = 500


@dataclass
class MergeConfig:
    """``merge``: how chunk files become one master file per experiment."""

    mode: str = "vds"                       # vds: virtual datasets to the chunk files; copy: self-contained
    export: list[str] = field(default_factory=list)   # ASCII files per scan beside the master: xye, dat
    export_frames: str = "sum"              # export the sum of each scan's frames, or each frame


@dataclass
class Config:
    """The whole configuration: one node per config group."""

    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    reduction: ReductionConfig = MISSING     # the chosen kind's schema (reduction.step.kinds())
    backend: BackendConfig = MISSING
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)


#: backend.name → schema. A new backend adds its dataclass (extending BackendConfig) here.
BACKEND_SCHEMAS: dict[str, type[BackendConfig]] = {"local": LocalBackendConfig, "slurm": SlurmBackendConfig,
                                                   "submitit": SubmititBackendConfig, "mpi": MPIBackendConfig,
                                                   "dask": DaskBackendConfig}


def reduction_schemas() -> dict[str, type]:
    """reduction.kind → schema, for every registered kind (:func:`reduction.step.kinds`)."""
    return {name: kind.schema for name, kind in kinds().items()}


def _register_schemas() -> None:
    """Store the schemas as ``schema/...`` in Hydra's ConfigStore (the YAML files extend them)."""
    store = ConfigStore.instance()
    store.store(group="schema", name="xreduce", node=Config)
    shipped = shipped_config_dir() / "reduction"
    for kind, schema in reduction_schemas().items():
        store.store(group="schema/reduction", name=kind, node=schema)
        if not (shipped / f"{kind}.yaml").is_file():  # a kind of another package: `reduction=<kind>` as is
            store.store(group="reduction", name=kind, node=schema)
    for name, schema in BACKEND_SCHEMAS.items():
        store.store(group="schema/backend", name=name, node=schema)


_register_schemas()
