"""The campaign configuration: Hydra structured-config schemas, loading and validation.

:func:`load_config` composes the shipped ``configs/`` tree (plus a user's ``--config-dir``, searched
first) with Hydra's compose API, validates every value against the dataclasses below, resolves
paths and the default output folder, and returns a **read-only, resolved** ``DictConfig`` whose
structure is :class:`Config` (Hydra's duck-typing idiom: annotate it as ``Config``)::

    cfg = load_config(["campaign=my_exp", "reduction.npt=2000"], config_dir="~/xreduce-configs")
    cfg.reduction.npt              # 2000 (int)
    cfg.campaign.raw_data          # "/data/visitor/.../RAW_DATA" (absolute path, a str)
    cfg.reduction.radial_range     # None or a read-only list [min, max]; tuple() it if needed
    OmegaConf.get_type(cfg.backend)   # LocalBackendConfig

Anything wrong raises :class:`hpc.errors.ConfigError` naming the key and the value, before anything
runs. :func:`config_hash` identifies the results a config produces; :func:`to_yaml`,
:func:`to_json`, :func:`to_dict` dump it for provenance and :func:`config_from_dict` reads a dump
back (what a worker does with the config stored in ``plan.json``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, version
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import (ConfigAttributeError, ConfigKeyError, InterpolationResolutionError,
                              MissingMandatoryValue, OmegaConfBaseException, ValidationError)

from .errors import ConfigError

__all__ = ["Config", "CampaignConfig", "ReductionConfig", "AzintConfig", "Azint1dConfig", "Azint2dConfig",
           "BackendConfig", "LocalBackendConfig", "PartitionConfig", "MergeConfig", "REDUCTION_SCHEMAS",
           "BACKEND_SCHEMAS", "MERGE_MODES", "load_config", "config_from_dict", "config_hash", "to_yaml",
           "to_json", "to_dict", "shipped_config_dir"]


# -- schemas ------------------------------------------------------------------------------------
@dataclass
class CampaignConfig:
    """``campaign``: which raw data to reduce and where the results go."""

    name: str = MISSING                     # a file-name-safe label, used in output paths
    raw_data: str = MISSING                 # a RAW_DATA folder, or any folder of BLISS dataset master files
    datasets: list[str] | None = None    # globs relative to raw_data; null: every dataset master file
    scans: str = "all"                      # "all" or scans: "1-20,25", "40-", "3.2" (reduction.bliss syntax)
    detector: str = MISSING                 # dataset name under /<scan>/measurement/
    monitor: str | None = None           # counter under measurement/ dividing each frame, or null
    output: str | None = None            # null: PROCESSED_DATA/xreduce/<name> beside RAW_DATA


@dataclass
class ReductionConfig:
    """``reduction``: keys every reduction kind has. Each kind extends it (one schema per kind)."""

    kind: str = MISSING
    step: str = "reduction.step.AzintStep"   # the step class ("module.Class") that runs this kind
    engine: str = "auto"                    # auto | numpy | opencl
    device: str = "auto"                    # OpenCL device: auto | cpu | gpu | "platform:device"


@dataclass
class AzintConfig(ReductionConfig):
    """Azimuthal integration keys shared by ``azint1d`` and ``azint2d``."""

    poni: str = MISSING                     # pyFAI PONI file
    mask: str | None = None              # .npy, or "file.h5::/dataset"; nonzero = masked
    dark: str | None = None
    flat: str | None = None
    unit: str = "q_nm^-1"
    radial_range: list[float] | None = None      # [min, max] in `unit`
    azimuth_range: list[float] | None = None     # [min, max] in degrees
    splitting: str = "bbox"
    polarization_factor: float | None = None     # in [-1, 1]; null: no polarisation correction
    solid_angle: bool = True
    error_model: str | None = "poisson"          # or null: no variance propagated


@dataclass
class Azint1dConfig(AzintConfig):
    """``reduction=azint1d``: one pattern I(radial) per frame."""

    kind: str = "azint1d"
    npt: int = 1000


@dataclass
class Azint2dConfig(AzintConfig):
    """``reduction=azint2d``: one cake I(χ, radial) per frame."""

    kind: str = "azint2d"
    unit: str = "2th_deg"
    npt_rad: int = 500
    npt_azim: int = 360


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
class SlurmBackendConfig(BackendConfig):
    """``backend=slurm``: one job array for the chunks and a dependent merge job (sbatch)."""

    name: str = "slurm"
    partition: str | None = None            # --partition; null: the cluster's default
    account: str | None = None              # --account
    qos: str | None = None                  # --qos
    time: str = "01:00:00"                  # --time of each array task (walltime)
    cpus_per_task: int = 2                  # --cpus-per-task (engine threads)
    mem: str | None = None                  # --mem, e.g. 16G
    gpus_per_task: int = 0                  # --gres=gpu:N
    array_parallelism: int | None = None    # --array=...%N: at most N tasks at once
    chunks_per_task: int = 1                # chunks packed into one array task
    max_array_size: int | None = None       # null: MaxArraySize from `scontrol show config`
    extra_directives: list[str] = field(default_factory=list)   # more "#SBATCH ..." options, e.g. ["--exclusive"]
    setup: list[str] = field(default_factory=list)   # shell lines before xreduce, e.g. ["module load xreduce"]
    container: str | None = None            # Apptainer image: jobs run `apptainer exec [--nv] --bind ... IMAGE xreduce`;
                                            #   null: $XREDUCE_IMAGE (the xreduce module) if set (hpc.container)
    binds: list[str] | None = None          # host paths bound into the image; null: raw data, output, input-file folders
                                            #   (either way plus $XREDUCE_BINDS)
    merge_time: str = "00:30:00"            # --time of the merge job
    mode: str = "array"                     # array: a job array + merge job | mpi: one job of `ntasks` MPI ranks
    ntasks: int = 4                         # mode=mpi: MPI ranks (rank 0 hands out chunks and merges)
    mpi_launcher: str = "srun --mpi=pmix"   # mode=mpi: how ranks start (site-dependent; or "mpirun")


@dataclass
class SubmititBackendConfig(BackendConfig):
    """``backend=submitit``: one Slurm job array through submitit, waited for with a progress bar."""

    name: str = "submitit"
    partition: str | None = None            # slurm_partition; null: the cluster's default
    time: str = "01:00:00"                  # walltime of each task (timeout_min); a timed-out task requeues
    cpus_per_task: int = 2
    mem_gb: float | None = None
    gpus_per_task: int = 0                  # gpus_per_node (one task per node)
    array_parallelism: int = 256            # slurm_array_parallelism
    chunks_per_task: int = 1
    folder: str | None = None               # submitit's job folder; null: <output>/submitit/<time stamp>
    extra: dict[str, str] = field(default_factory=dict)   # slurm_additional_parameters, e.g. {account: ab12}
    container: str | None = None            # Apptainer image the tasks' Python runs in (as backend=slurm)
    binds: list[str] | None = None          # host paths bound into it (as backend=slurm)


@dataclass
class DaskBackendConfig(BackendConfig):
    """``backend=dask``: Dask workers on a LocalCluster, a dask-jobqueue SLURMCluster or a running scheduler."""

    name: str = "dask"
    cluster: str = "local"                  # local | slurm
    scheduler_address: str | None = None    # use a running scheduler (tcp://host:8786) instead
    connect_timeout: int = 30               # seconds to reach scheduler_address
    retries: int = 2                        # a chunk whose worker died is retried on another worker
    workers: int = 2                        # cluster=local: worker processes
    threads_per_worker: int = 1             # cluster=local: Dask threads per worker
    cores: int = 2                          # cluster=slurm: cores per job
    memory: str = "8GB"                     # cluster=slurm: memory per job
    processes: int = 1                      # cluster=slurm: worker processes per job
    walltime: str = "01:00:00"              # cluster=slurm
    lifetime: str = "55m"                   # cluster=slurm: workers leave before the walltime (and are replaced)
    queue: str | None = None                # cluster=slurm: partition
    account: str | None = None
    interface: str | None = None            # network interface of the workers (e.g. ib0; lo for one node)
    job_extra_directives: list[str] = field(default_factory=list)   # e.g. ["--gres=gpu:1"]
    setup: list[str] = field(default_factory=list)   # shell lines before the worker starts
    container: str | None = None            # cluster=slurm: Apptainer image the worker jobs run in (as backend=slurm)
    binds: list[str] | None = None          # host paths bound into it (as backend=slurm)
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


@dataclass
class Config:
    """The whole configuration: one node per config group."""

    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    reduction: ReductionConfig = MISSING
    backend: BackendConfig = MISSING
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)


#: reduction.kind → schema. A new kind is a new step class (``reduction.step``) plus one schema here.
REDUCTION_SCHEMAS: dict[str, type[ReductionConfig]] = {"azint1d": Azint1dConfig, "azint2d": Azint2dConfig}
#: backend.name → schema. A new backend adds its dataclass (extending BackendConfig) here.
BACKEND_SCHEMAS: dict[str, type[BackendConfig]] = {"local": LocalBackendConfig, "slurm": SlurmBackendConfig,
                                                   "submitit": SubmititBackendConfig, "mpi": MPIBackendConfig,
                                                   "dask": DaskBackendConfig}
MERGE_MODES = ("vds", "copy")
#: Reduction keys naming a file whose content (not path) enters the config hash.
_FILE_KEYS = ("poni", "mask", "dark", "flat")
#: Reduction keys that do not change the numbers (engines agree within float32 tolerance).
_NOT_HASHED = ("engine", "device")
#: Example overrides shown when a mandatory value is missing.
_EXAMPLES = {"campaign.name": "campaign.name=lab6_2024",
             "campaign.raw_data": "campaign.raw_data=/data/visitor/ma1234/id11/20240101/RAW_DATA",
             "campaign.detector": "campaign.detector=pilatus",
             "reduction.poni": "reduction.poni=/path/to/geometry.poni"}


def _register_schemas() -> None:
    """Store the schemas as ``schema/...`` in Hydra's ConfigStore (the YAML files extend them)."""
    store = ConfigStore.instance()
    store.store(group="schema", name="xreduce", node=Config)
    for kind, schema in REDUCTION_SCHEMAS.items():
        store.store(group="schema/reduction", name=kind, node=schema)
    for name, schema in BACKEND_SCHEMAS.items():
        store.store(group="schema/backend", name=name, node=schema)


_register_schemas()


# -- loading ------------------------------------------------------------------------------------
def shipped_config_dir() -> Path:
    """The ``configs/`` tree shipped with xreduce: ``hpc/configs`` in a wheel, ``configs/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(f"xreduce's configs/ tree is missing (looked in {here / 'configs'} and "
                      f"{here.parent / 'configs'}): the installation is broken, reinstall xreduce")


def load_config(overrides: list[str] | tuple[str, ...] = (), config_dir: str | Path | None = None) -> Config:
    """Compose, validate and resolve the configuration.

    Parameters
    ----------
    overrides : Hydra overrides, e.g. ``["campaign=my_exp", "reduction.npt=2000", "backend.workers=8"]``.
    config_dir : a user's folder of configs (``campaign/my_exp.yaml``, ``reduction/...``), searched
        before the shipped ``configs/``.

    Returns
    -------
    A read-only ``DictConfig`` with the structure of :class:`Config`: values typed, interpolations
    resolved, paths absolute, ``campaign.output`` filled in.

    Raises
    ------
    ConfigError : naming the key and value (or the override) at fault.

    Example
    -------
    >>> cfg = load_config(["campaign=example", "campaign.raw_data=/data/RAW_DATA", ...])
    >>> cfg.campaign.output
    '/data/PROCESSED_DATA/xreduce/example'
    """
    overrides = [str(o) for o in overrides]
    user_dir = None
    if config_dir is not None:
        user_dir = Path(config_dir).expanduser().absolute()
        if not user_dir.is_dir():
            raise ConfigError(f"--config-dir {config_dir}: no such directory")
    try:
        with _hydra(user_dir):
            composed = compose(config_name="config", overrides=overrides)
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err) from None
    except HydraException as err:
        raise _hydra_error(err, overrides) from None
    _check_choice_consistent(composed)
    return config_from_dict(_container(composed))


def config_from_dict(data: Mapping[str, Any], *, check_paths: bool = True) -> Config:
    """Validate a plain dict (e.g. ``plan.json``'s ``config``) into a config like :func:`load_config`'s.

    ``check_paths=False`` skips the existence checks (reading a plan on a machine without the data).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a mapping of groups, got {type(data).__name__}")
    reduction, backend = data.get("reduction"), data.get("backend")
    schema = Config(reduction=_schema("reduction", "kind", reduction, REDUCTION_SCHEMAS)(),
                    backend=_schema("backend", "name", backend, BACKEND_SCHEMAS)())
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), dict(data))
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err) from None
    _check_missing(cfg)
    _check_values(cfg, check_paths)
    OmegaConf.set_readonly(cfg, True)
    return typing.cast(Config, cfg)


@contextmanager
def _hydra(user_dir: Path | None) -> Iterator[None]:
    """Hydra initialised on the shipped configs, with ``user_dir`` searched first.

    Like ``hydra.initialize_config_dir``, but prepending the user's folder as Hydra's own
    ``--config-dir`` does (the public initialisers can only append after the primary folder).
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    try:
        version.setbase("1.3")
        search_path = create_config_search_path(str(shipped_config_dir()))
        if user_dir is not None:
            search_path.prepend(provider="xreduce --config-dir", path=f"file://{user_dir}")
        Hydra.create_main_hydra2(task_name="xreduce", config_search_path=search_path)
        yield
    finally:
        restore_gh_from_backup(backup)


def _container(cfg: DictConfig) -> dict[str, Any]:
    """Plain, resolved values (``???`` kept, so that missing values are reported with their key)."""
    try:
        return typing.cast(dict, OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err) from None


def _schema(group: str, key: str, node: Any, schemas: Mapping[str, type]) -> type:
    """The schema of a group whose kind is chosen by ``<group>.<key>`` (reduction.kind, backend.name)."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{group} must be a mapping of keys (choose it with {group}="
                          f"{next(iter(schemas))}), got {node!r}")
    value = node.get(key, MISSING)
    if value in (MISSING, None):
        raise ConfigError(f"{group}.{key} is not set; choose one of {', '.join(schemas)} "
                          f"(e.g. {group}={next(iter(schemas))})")
    if value not in schemas:
        raise ConfigError(f"{group}.{key}={value!r} is not allowed{_did_you_mean(str(value), schemas)}; "
                          f"allowed: {', '.join(schemas)}")
    return schemas[value]


def _check_choice_consistent(cfg: DictConfig) -> None:
    """``reduction.kind`` / ``backend.name`` must match the group config chosen (its schema)."""
    for group, key, schemas in (("reduction", "kind", REDUCTION_SCHEMAS), ("backend", "name", BACKEND_SCHEMAS)):
        node = cfg.get(group)
        chosen = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        value = node.get(key) if isinstance(node, DictConfig) else None
        if chosen not in schemas.values() or value not in schemas:
            continue                     # untyped or unknown: reported by config_from_dict
        expected = _field_default(chosen, key)
        if value != expected:
            raise ConfigError(f"{group}.{key}={value} does not match the {group} config chosen ({expected}); "
                              f"choose the {group} group instead: {group}={value}")


# -- value checks -------------------------------------------------------------------------------
def _check_missing(cfg: DictConfig) -> None:
    missing = [f"{group}.{key}" for group in cfg for key in cfg[group]
               if OmegaConf.is_missing(cfg[group], key)]
    if missing:
        key = missing[0]
        others = f" (also not set: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ConfigError(f"{key} is mandatory and not set{others}: set it in your campaign file or on the "
                          f"command line, e.g. {_EXAMPLES.get(key, key + '=<value>')}")


def _check_values(cfg: DictConfig, check_paths: bool) -> None:
    """Apply each check of :data:`_CHECKS` whose key is present, storing its normalised value."""
    for dotted, check in _CHECKS:
        group, key = dotted.split(".")
        if key in cfg[group]:
            value = check(dotted, cfg[group][key], check_paths)
            if value is not _UNCHANGED:
                cfg[group][key] = value
    if cfg.campaign.output is None:
        cfg.campaign.output = str(_default_output(Path(cfg.campaign.raw_data), cfg.campaign.name))


_UNCHANGED = object()
_Check = Callable[[str, Any, bool], Any]


def _positive(key: str, value: int, check_paths: bool) -> Any:
    if value <= 0:
        raise ConfigError(f"{key}={value} must be a positive integer (> 0)")
    return _UNCHANGED


def _choice(allowed: Callable[[], tuple[Any, ...]]) -> _Check:
    def check(key: str, value: Any, check_paths: bool) -> Any:
        options = allowed()
        if value not in options:
            shown = ", ".join("null" if o is None else str(o) for o in options)
            raise ConfigError(f"{key}={value!r} is not allowed{_did_you_mean(str(value), options)}; "
                              f"allowed: {shown}")
        return _UNCHANGED
    return check


def _units() -> tuple[str, ...]:
    from reduction.units import RADIAL_UNITS
    return tuple(RADIAL_UNITS)


def _splittings() -> tuple[str, ...]:
    from reduction.integrator import SPLITTINGS
    return tuple(SPLITTINGS)


def _error_models() -> tuple[str | None, ...]:
    from reduction.integrator import ERROR_MODELS
    return tuple(ERROR_MODELS)


def _engines() -> tuple[str, ...]:
    from reduction.integrator import ENGINES
    return ("auto", *ENGINES)


def _device(key: str, value: Any, check_paths: bool) -> Any:
    if not re.fullmatch(r"auto|cpu|gpu|\d+:\d+", str(value)):
        raise ConfigError(f"{key}={value!r} must be auto, cpu, gpu or 'platform:device' indices such as '0:1' "
                          "(see `xreduce selftest` for the devices found here)")
    return _UNCHANGED


def _pair(key: str, value: Any, check_paths: bool) -> Any:
    if value is None:
        return _UNCHANGED
    if len(value) != 2 or not value[0] < value[1] or not all(map(_finite, value)):
        raise ConfigError(f"{key}={list(value)} must be a pair [min, max] of finite numbers with min < max")
    return _UNCHANGED


def _finite(x: float) -> bool:
    return x - x == 0


def _polarization(key: str, value: float | None, check_paths: bool) -> Any:
    if value is not None and not -1.0 <= value <= 1.0:
        raise ConfigError(f"{key}={value} must be between -1 and 1 (or null for no polarisation correction)")
    return _UNCHANGED


def _name(key: str, value: str, check_paths: bool) -> Any:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", value):
        raise ConfigError(f"{key}={value!r} must be a file-name-safe label (letters, digits, '.', '_', '+', '-'; "
                          f"no '/' or spaces): it names the output folder")
    return _UNCHANGED


def _text(key: str, value: str | None, check_paths: bool) -> Any:
    if value is not None and not value.strip():
        raise ConfigError(f"{key} is empty: give a name under /<scan>/measurement/ (or null where allowed)")
    return _UNCHANGED


def _globs(key: str, value: list[str] | None, check_paths: bool) -> Any:
    if value is None:
        return _UNCHANGED
    if not value:
        raise ConfigError(f"{key} is empty: give globs relative to campaign.raw_data, e.g. ['sample*/*/*.h5'], "
                          f"or null for every dataset master file")
    for pattern in value:
        if not isinstance(pattern, str) or not pattern or os.path.isabs(pattern) or ".." in Path(pattern).parts:
            raise ConfigError(f"{key}: {pattern!r} must be a glob relative to campaign.raw_data, "
                              f"e.g. 'sample*/**/*.h5'")
    return _UNCHANGED


def _scans(key: str, value: str, check_paths: bool) -> Any:
    """The syntax the planner reads (one grammar: :func:`reduction.bliss.parse_scan_selection`)."""
    from reduction.bliss import ScanSelectionError, parse_scan_selection
    try:
        parse_scan_selection(value)
    except ScanSelectionError as err:
        raise ConfigError(f"{key}: {err}") from None
    return _UNCHANGED


def _absolute(path: str) -> Path:
    return Path(os.path.normpath(Path(path).expanduser().absolute()))


def _directory(key: str, value: str, check_paths: bool) -> Any:
    path = _absolute(value)
    if check_paths and not path.is_dir():
        raise ConfigError(f"{key}={value}: no such directory ({path}; relative paths are taken from the "
                          f"current directory {Path.cwd()})")
    return str(path)


def _file(key: str, value: str | None, check_paths: bool) -> Any:
    """An existing file, optionally followed by ``::/dataset`` inside it (HDF5)."""
    if value is None:
        return _UNCHANGED
    file, sep, inner = value.partition("::")
    path = _absolute(file)
    if check_paths and not path.is_file():
        raise ConfigError(f"{key}={value}: no such file ({path}; relative paths are taken from the "
                          f"current directory {Path.cwd()})")
    return f"{path}{sep}{inner}"


def _output(key: str, value: str | None, check_paths: bool) -> Any:
    if value is None:
        return _UNCHANGED
    path = _absolute(value)
    if check_paths and path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={value}: exists and is not a directory")
    return str(path)


def _default_output(raw_data: Path, name: str) -> Path:
    """``<PROCESSED_DATA beside RAW_DATA>/xreduce/<name>``, else ``<raw_data>/../xreduce_output/<name>``."""
    parts = raw_data.parts
    if "RAW_DATA" in parts:
        index = len(parts) - 1 - parts[::-1].index("RAW_DATA")
        return Path(*parts[:index], "PROCESSED_DATA", "xreduce", name)
    return raw_data.parent / "xreduce_output" / name


_SLURM_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2})$")


def _slurm_time(key: str, value: str, check_paths: bool) -> Any:
    """Slurm's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    if not _SLURM_TIME.match(str(value)):
        raise ConfigError(f"{key}={value!r} is not a Slurm time: use minutes, HH:MM:SS or D-HH:MM:SS "
                          f"(e.g. {key}=01:30:00)")
    return _UNCHANGED


def _optional_positive(key: str, value: int | None, check_paths: bool) -> Any:
    return _UNCHANGED if value is None else _positive(key, value, check_paths)


def _not_negative(key: str, value: int, check_paths: bool) -> Any:
    if value < 0:
        raise ConfigError(f"{key}={value} must be 0 or more")
    return _UNCHANGED


#: (key, check) in order; a check runs when its key exists in the chosen schema.
_CHECKS: list[tuple[str, _Check]] = [
    ("campaign.name", _name),
    ("campaign.raw_data", _directory),
    ("campaign.datasets", _globs),
    ("campaign.scans", _scans),
    ("campaign.detector", _text),
    ("campaign.monitor", _text),
    ("campaign.output", _output),
    ("reduction.engine", _choice(_engines)),
    ("reduction.device", _device),
    *((f"reduction.{key}", _file) for key in _FILE_KEYS),
    ("reduction.unit", _choice(_units)),
    ("reduction.npt", _positive),
    ("reduction.npt_rad", _positive),
    ("reduction.npt_azim", _positive),
    ("reduction.radial_range", _pair),
    ("reduction.azimuth_range", _pair),
    ("reduction.splitting", _choice(_splittings)),
    ("reduction.polarization_factor", _polarization),
    ("reduction.error_model", _choice(_error_models)),
    ("backend.workers", _positive),
    ("backend.time", _slurm_time),
    ("backend.mode", _choice(lambda: ("array", "mpi"))),
    ("backend.ntasks", _positive),
    ("backend.walltime", _slurm_time),
    ("backend.cluster", _choice(lambda: ("local", "slurm"))),
    ("backend.threads_per_worker", _positive),
    ("backend.connect_timeout", _positive),
    ("backend.cores", _positive),
    ("backend.processes", _positive),
    ("backend.merge_time", _slurm_time),
    ("backend.cpus_per_task", _positive),
    ("backend.chunks_per_task", _positive),
    ("backend.array_parallelism", _optional_positive),
    ("backend.max_array_size", _optional_positive),
    ("backend.gpus_per_task", _not_negative),
    ("partition.frames_per_chunk", _positive),
    ("merge.mode", _choice(lambda: MERGE_MODES)),
]


# -- error messages -----------------------------------------------------------------------------
def _did_you_mean(value: str, options: typing.Iterable[Any]) -> str:
    close = difflib.get_close_matches(value, [str(o) for o in options if o is not None], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _field_default(schema: type, key: str) -> Any:
    return next(f.default for f in dataclasses.fields(schema) if f.name == key)


def _describe(annotation: Any) -> str:
    """A type annotation in words: ``list[float] | None`` → "a list of numbers or null"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{' or '.join(_describe(a) for a in inner)} or null"
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if annotation in words:
        return words[annotation]
    if dataclasses.is_dataclass(annotation):
        return f"a mapping of keys ({', '.join(f.name for f in dataclasses.fields(annotation))})"
    return getattr(annotation, "__name__", str(annotation))


_OMEGACONF_TYPES = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "string": "a string"}


def _omegaconf_error(err: OmegaConfBaseException, where: str = "") -> ConfigError:
    """An OmegaConf error as a ConfigError that names the key, the value and what was expected."""
    key = err.full_key or str(err.key or "")
    schema = getattr(err, "object_type", None)
    schema = schema if dataclasses.is_dataclass(schema) else None
    where = f" {where}" if where else ""
    if isinstance(err, MissingMandatoryValue):
        return ConfigError(f"{key} is mandatory and not set{where}: e.g. {_EXAMPLES.get(key, key + '=<value>')}")
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and schema is not None:
        valid = [f.name for f in dataclasses.fields(schema)]
        group = key.rpartition(".")[0]
        hint = ""
        if schema in (ReductionConfig, BackendConfig):
            first = next(iter(REDUCTION_SCHEMAS if schema is ReductionConfig else BACKEND_SCHEMAS))
            hint = (f"; a {group} config of your own must extend a shipped one: start it with "
                    f"`defaults: [{first}, _self_]`")
        return ConfigError(f"unknown key {key}{where}{_did_you_mean(str(err.key), valid)}; valid keys of "
                           f"{group or 'the config'}: {', '.join(valid)}{hint}")
    if isinstance(err, ValidationError) and not isinstance(err, InterpolationResolutionError) and key:
        expected = err.msg.split("\n")[0]
        converted = re.search(r"converted to (\w+)|Cannot convert '\w+' to (string)", expected)
        if converted:
            expected = f"expected {_OMEGACONF_TYPES.get(converted[1] or converted[2], converted[1])}"
        if schema is not None and err.key is not None:
            hints = typing.get_type_hints(schema)
            if str(err.key) in hints:
                expected = f"expected {_describe(hints[str(err.key)])}"
        shown = "null" if err.value is None else repr(err.value)
        return ConfigError(f"{key}={shown}{where}: wrong type, {expected}")
    message = err.msg.split("\n")[0] if err.msg else str(err).split("\n")[0]
    return ConfigError(f"{key}{where}: {message}" if key else f"{message}{where}")


def _hydra_error(err: HydraException, overrides: list[str]) -> ConfigError:
    """A Hydra composition or override error as a one-line ConfigError naming the override."""
    cause = err.__cause__ or err.__context__
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    first_line = str(err).split("\n")[0]
    if isinstance(cause, OmegaConfBaseException):
        source = re.match(r"In '([^']+)'", first_line)
        override = re.match(r"Error merging override (.+)", first_line)
        where = f"in {source[1]}.yaml" if source else f"in override {override[1]!r}" if override else ""
        return _omegaconf_error(cause, where)
    if isinstance(err, OverrideParseException):
        bad = next((o for o in overrides if not _parses(o)), None)
        return ConfigError(f"cannot parse override {bad!r}: {first_line} (syntax: key=value, group=option, "
                           f"+key=value; see docs/config.md)" if bad else f"bad override: {first_line}")
    ambiguous = re.match(r"Ambiguous value for argument '(([^=]+)=.*)'", first_line)
    if ambiguous:
        return ConfigError(f"override {ambiguous[1]!r} is ambiguous (a comma means a sweep to Hydra): quote the "
                           f"value: '{ambiguous[2]}=\"{ambiguous[1].partition('=')[2]}\"'")
    if isinstance(err, MissingConfigException) and first_line.startswith("Cannot find primary config"):
        return ConfigError(f"no config.yaml found: {first_line}")
    if first_line.startswith("You must specify 'campaign'"):
        options = str(err).split("Available options:")[-1].split()
        return ConfigError(f"no campaign chosen: add campaign=<name> (shipped: {', '.join(options)}; or your own "
                           f"DIR/campaign/<name>.yaml with --config-dir DIR)")
    if isinstance(err, MissingConfigException):
        missing = re.search(r"Could not find '([^']+)'", str(err))
        options = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)*)", str(err))
        listed = ", ".join(options[1].split()) if options else "none"
        if missing:
            group, _, name = missing[1].rpartition("/")
            return ConfigError(f"{group}={name}: no such config {missing[1]}.yaml"
                               f"{_did_you_mean(name, listed.split(', '))}; available: {listed} "
                               f"(add your own with --config-dir DIR)")
    return ConfigError(" ".join(str(err).split("\n")[:2]).strip())


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    try:
        OverridesParser.create().parse_overrides([override])
    except Exception:
        return False
    return True


# -- identity and provenance --------------------------------------------------------------------
def config_hash(cfg: Config) -> str:
    """sha256 (hex) of what determines the numbers of a result.

    It covers the reduction group (resolved; all keys but ``engine`` and ``device``), the *content* of the PONI,
    mask, dark and flat files (not their paths: editing a file in place changes the hash, moving it
    does not), and ``campaign.detector`` / ``campaign.monitor`` (they choose the frames and their
    normalisation). Not the backend, partition, merge or campaign output.
    """
    reduction = to_dict(cfg)["reduction"]
    for key in _NOT_HASHED:
        reduction.pop(key, None)
    for key in _FILE_KEYS:
        if reduction.get(key):
            file, _, inner = reduction[key].partition("::")
            reduction[key] = {"sha256": _file_digest(key, file), "dataset": inner or None}
    payload = {"format": "xreduce-config-hash-1", "reduction": reduction,
               "detector": cfg.campaign.detector, "monitor": cfg.campaign.monitor}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_digest(key: str, path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise ConfigError(f"reduction.{key}={path}: cannot read it ({err.strerror})") from None
    return digest.hexdigest()


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain Python containers (JSON-serialisable)."""
    return typing.cast(dict, OmegaConf.to_container(typing.cast(DictConfig, cfg), resolve=True))


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what ``config_from_dict(yaml.safe_load(...))`` reads back)."""
    return OmegaConf.to_yaml(typing.cast(DictConfig, cfg), resolve=True)


def to_json(cfg: Config, indent: int | None = 2) -> str:
    """The resolved config as JSON, for plan and chunk files."""
    return json.dumps(to_dict(cfg), indent=indent)
