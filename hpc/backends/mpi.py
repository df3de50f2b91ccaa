"""``backend=mpi``: chunks spread over MPI ranks with mpi4py.futures, rank 0 merging at the end.

    mpirun -n 8 xreduce run campaign=my_exp backend=mpi        # or: srun -n 8 xreduce run ...

Every rank starts the same command (an SPMD backend). Rank 0 plans, hands chunks out dynamically
through an ``MPICommExecutor`` (a chunk at a time, so fast ranks take more) and merges; the other
ranks only serve tasks, each keeping its integrator (geometry, matrix, engine) for its lifetime. A
chunk that raises ends as an error record like anywhere else; the other ranks carry on. MPI starts
on the first question about the ranks (``is_root``), not when the backend is made.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, cast

from ..errors import BackendError
from ..plan import Plan, write_snapshot
from ..worker import Outcome, chunk_task
from .base import Backend

__all__ = ["MPIBackend"]


class MPIBackend(Backend):
    """Rank 0 distributes chunks to the other ranks; the other ranks serve until it is done."""

    name = "mpi"
    waits = True
    spmd = True

    def available(self) -> str | None:
        if importlib.util.find_spec("mpi4py") is None:
            return "backend=mpi needs mpi4py (and an MPI library): pip install 'xreduce[mpi]'"
        return None

    @cached_property
    def comm(self) -> Any:
        """MPI's world communicator (MPI starts here); this rank's engine gets its share of the node's cores."""
        self.require()
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if comm.Get_size() < 2:
            raise BackendError("backend=mpi needs several MPI ranks, but this process is alone: start it with "
                               "`mpirun -n 4 xreduce run backend=mpi ...` (or `srun -n 4 ...` in an allocation); "
                               "rank 0 plans and merges, the others reduce")
        # ranks sharing a node share its cores: each engine gets its slice, not all of them
        local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        os.environ.setdefault("XREDUCE_THREADS", str(max(1, (os.cpu_count() or 1) // local)))
        return comm

    @property
    def is_root(self) -> bool:
        return self.comm.Get_rank() == 0

    def serve(self) -> None:
        """Non-root ranks: execute tasks until rank 0 closes the executor."""
        from mpi4py.futures import MPICommExecutor

        with MPICommExecutor(self.comm, root=0) as executor:
            assert executor is None  # only the root gets an executor

    def run(self, plan: Plan, chunk_indices: Sequence[int], on_outcome: Callable[[Outcome], None]) -> None:
        from concurrent.futures import as_completed

        from mpi4py.futures import MPICommExecutor, MPIPoolExecutor

        snapshot = str(write_snapshot(plan))  # the ranks' work order: immutable, whatever is planned meanwhile
        with MPICommExecutor(self.comm, root=0) as executor:
            # run() is called on the root, which gets an MPIPoolExecutor (mpi4py types it Self | None)
            pool = cast(MPIPoolExecutor, executor)
            futures = [pool.submit(chunk_task, snapshot, plan.chunks[index].id) for index in chunk_indices]
            for future in as_completed(futures):
                on_outcome(future.result())
