"""Run chunks on this machine: in-process (workers=1) or in a pool of worker processes.

Each worker process keeps one step (geometry, matrix, engine) for its lifetime. Chunks are
independent and idempotent, so a crash only loses the chunk that was running.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from ..plan import Plan
from ..worker import STEPS, Outcome, StepCache, process_chunk
from .base import Backend

__all__ = ["LocalBackend"]

_STEPS: StepCache | None = None
_PLAN: Plan | None = None


def _init(plan: Plan, threads: int) -> None:
    global _STEPS, _PLAN
    os.environ.setdefault("XREDUCE_THREADS", str(threads))
    _STEPS, _PLAN = StepCache(), plan


def _run_one(index: int) -> Outcome:
    assert _PLAN is not None and _STEPS is not None
    return process_chunk(_PLAN, _PLAN.chunks[index], _STEPS)


class LocalBackend(Backend):
    """``backend=local``: ``backend.workers`` processes (1 = run in this process)."""

    name = "local"
    waits = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.workers = max(1, int(cfg.workers))

    def run(self, plan: Plan, chunk_indices: Sequence[int], on_outcome: Callable[[Outcome], None]) -> None:
        if self.workers == 1 or len(chunk_indices) <= 1:
            for index in chunk_indices:
                on_outcome(process_chunk(plan, plan.chunks[index], STEPS))
            return
        # the worker processes share the cores: their engines get a slice each, not all of them
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init,
                                 initargs=(plan, threads)) as pool:
            futures = [pool.submit(_run_one, index) for index in chunk_indices]
            for future in as_completed(futures):
                on_outcome(future.result())
