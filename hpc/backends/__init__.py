"""Backends run or submit the chunks of a plan. Registering one is one entry in ``BACKENDS``.

Each backend is a :class:`Backend` subclass declaring what it can do (``waits``, ``submits``,
``spmd``; see :mod:`hpc.backends.base`), so the commands never ask which one runs.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from ..config_schema import DaskBackendConfig
from ..errors import ConfigError
from .base import Backend, Submitted
from .dask import DaskBackend
from .local import LocalBackend
from .mpi import MPIBackend
from .slurm import SlurmBackend
from .submitit import SubmititBackend

__all__ = ["Backend", "Submitted", "BACKENDS", "get_backend", "waiting", "submitting"]

#: backend.name → backend class, made from the ``backend`` config group
BACKENDS: dict[str, type[Backend]] = {"local": LocalBackend, "slurm": SlurmBackend, "submitit": SubmititBackend,
                                      "mpi": MPIBackend, "dask": DaskBackend}


def get_backend(cfg: Any, *, client: Any = None) -> Backend:
    """The backend named by ``backend.name``; with a Dask ``client`` (a notebook's), one running the
    chunks on that client's workers, whatever the name (backend.* keys apply when it is dask)."""
    if client is not None:
        return DaskBackend(cfg if cfg.name == "dask" else OmegaConf.structured(DaskBackendConfig), client=client)
    name = cfg.get("name", "local")
    if name not in BACKENDS:
        raise ConfigError(f"backend.name = {name!r} is not available; known: {', '.join(BACKENDS)}")
    return BACKENDS[name](cfg)


def waiting() -> dict[str, type[Backend]]:
    """The backends that run the chunks and wait (``xreduce run``), by name."""
    return {name: backend for name, backend in BACKENDS.items() if backend.waits}


def submitting() -> dict[str, type[Backend]]:
    """The backends that submit and return (``xreduce submit``), by name; ``status`` and ``cancel`` ask
    each of them about an output folder."""
    return {name: backend for name, backend in BACKENDS.items() if backend.submits}
