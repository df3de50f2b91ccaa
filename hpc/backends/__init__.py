"""Backends run task groups of a plan somewhere. Registering one is one entry in ``BACKENDS``.

A backend module implements :class:`Backend`; the campaign runner never knows which one runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..errors import ConfigError
from ..plan import Plan
from ..worker import Outcome

__all__ = ["Backend", "get_backend", "BACKENDS"]


class Backend(Protocol):
    """Run chunks of a plan; ``on_outcome`` is called as each chunk finishes (for progress)."""

    name: str

    def run(self, plan: Plan, chunk_indices: Sequence[int], on_outcome: Callable[[Outcome], None]) -> None:
        ...


def _local(cfg: Any) -> Backend:
    from .local import LocalBackend

    return LocalBackend(workers=int(cfg.get("workers", 1) or 1))


def _submitit(cfg: Any) -> Backend:
    from .submitit import SubmititBackend

    return SubmititBackend(cfg)


def _dask(cfg: Any) -> Backend:
    from .dask import DaskBackend

    return DaskBackend(cfg)


def _mpi(cfg: Any) -> Backend:
    from .mpi import MPIBackend

    return MPIBackend(cfg)


def _slurm(cfg: Any) -> Backend:
    raise ConfigError("backend=slurm submits and returns: use `xreduce submit`, not `xreduce run` "
                      "(or backend=submitit to wait for the jobs here)")


#: backend name → factory taking the ``backend`` config group
BACKENDS: dict[str, Callable[[Any], Backend]] = {"local": _local, "submitit": _submitit, "slurm": _slurm,
                                                 "mpi": _mpi, "dask": _dask}


def get_backend(cfg: Any) -> Backend:
    """The backend named by ``backend.name``."""
    name = cfg.get("name", "local")
    if name not in BACKENDS:
        raise ConfigError(f"backend.name = {name!r} is not available; known: {', '.join(BACKENDS)}")
    return BACKENDS[name](cfg)
