"""The backend protocol: what :mod:`hpc.commands` may ask of any backend, and what each declares it can do.

A backend either runs chunks here and returns when they are done (``waits``: local, dask, mpi,
submitit), or hands them to a scheduler and returns at once (``submits``: slurm). ``xreduce run``
and ``xreduce submit`` read the declaration, never the name. What a scheduler knows about a
submission (its overlay on the chunk states, its active jobs, cancelling them) is asked of the
backend class with nothing but the output folder, since ``xreduce status DIR`` has no config.
SPMD backends (mpi) start the same command on every rank: only the root plans, runs and merges,
and the other ranks ``serve()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..errors import BackendError
from ..plan import Plan
from ..state import ChunkState
from ..worker import Outcome

__all__ = ["Backend", "Submitted"]


class Submitted(Protocol):
    """What a submitting backend returns: where its scripts and logs are, and a summary to print."""

    folder: str

    @property
    def job_ids(self) -> list[str]:
        """The scheduler's ids of the jobs submitted (they hold the campaign lock while queued or running)."""
        ...

    def summary(self) -> str:
        """The jobs submitted, in a few lines for the terminal."""
        ...


class Backend:
    """Base of every backend: its declared capabilities, and the defaults of a backend without them."""

    name: ClassVar[str]
    #: ``run`` reduces the chunks (here or on workers it starts) and returns when they are done
    waits: ClassVar[bool] = False
    #: ``submit`` hands the chunks to a scheduler and returns; ``overlay``/``active_jobs``/``cancel`` follow them
    submits: ClassVar[bool] = False
    #: every rank runs the same command; the root also runs with no chunk to do, so that the others stop serving
    spmd: ClassVar[bool] = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def available(self) -> str | None:
        """None when the backend can work here, else why not; cheap (nothing is started or contacted)."""
        return None

    def require(self) -> None:
        """Raise BackendError with the reason :meth:`available` gives, if any."""
        reason = self.available()
        if reason is not None:
            raise BackendError(reason)

    @property
    def is_root(self) -> bool:
        """Whether this process plans and merges: always, except on the non-root ranks of an SPMD backend."""
        return True

    def serve(self) -> None:
        """What a non-root SPMD rank does instead of planning: run the chunks the root hands out."""

    def run(self, plan: Plan, chunk_indices: Sequence[int], on_outcome: Callable[[Outcome], None]) -> None:
        """Reduce these chunks of the plan, calling ``on_outcome`` as each ends (``waits`` backends)."""
        raise NotImplementedError(f"backend={self.name} does not run chunks and wait")

    def submit(self, plan: Plan, todo: list[int]) -> Submitted:
        """Hand the ``todo`` chunks of the plan to the scheduler and return (``submits`` backends)."""
        raise NotImplementedError(f"backend={self.name} does not submit")

    @classmethod
    def overlay(cls, output: Path, states: list[ChunkState]) -> list[ChunkState]:
        """The chunk states of ``output``, with what the scheduler knows of those the files call pending."""
        return states

    @classmethod
    def active_jobs(cls, output: Path) -> list[str]:
        """Ids of the jobs of the campaign in ``output`` still queued or running."""
        return []

    @classmethod
    def cancel(cls, output: Path) -> list[str]:
        """Cancel the campaign's queued or running jobs; return their ids."""
        return []
