"""What every backend runs for a chunk: the step, wrapped so a chunk ends as a result or an error record."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from reduction.errors import ScanLayoutError, is_permanent
from reduction.step import Step

from .plan import Chunk, Plan, read_plan
from .state import ChunkPaths, clear_failure, record_failure

__all__ = ["Outcome", "process_chunk", "StepCache", "STEPS", "chunk_task", "note_failure"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """The small summary a worker sends back (the data stay in the chunk file)."""

    chunk_id: str
    ok: bool
    nframes: int
    seconds: float
    message: str = ""
    engine: str = ""  # what the step ran on (e.g. "opencl on 0:0 'NVIDIA H100'"), when it says
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (read, wait, reduce, write)
    permanent: bool = False  # failed for good (reduction.errors.XReduceError.permanent): not retried


class StepCache:
    """One step per reduction config per process: geometry, matrix and engine are built once. The
    last few configs are kept (a notebook running campaign after campaign does not pile them up)."""

    def __init__(self, keep: int = 4) -> None:
        self._steps: OrderedDict[str, Step] = OrderedDict()
        self._keep = keep

    def get(self, plan: Plan) -> Step:
        if plan.config_hash not in self._steps:
            self.put(plan, plan.kind.open(plan.config["reduction"]))
        self._steps.move_to_end(plan.config_hash)
        return self._steps[plan.config_hash]

    def put(self, plan: Plan, step: Step) -> None:
        """Keep a step built already (e.g. while validating the config), so it is not built again."""
        self._steps[plan.config_hash] = step
        self._steps.move_to_end(plan.config_hash)
        while len(self._steps) > self._keep:
            self._steps.popitem(last=False)


def process_chunk(plan: Plan, chunk: Chunk, steps: StepCache) -> Outcome:
    """Reduce one chunk unless it is already done; never raises for a chunk's own failure."""
    paths = ChunkPaths(Path(plan.output), chunk.id)
    if plan.kind.is_done(paths.result, chunk.id, plan.config_hash):
        return Outcome(chunk.id, True, 0, 0.0, "already done")
    start = time.perf_counter()
    try:
        if chunk.problem:  # planning found the scan unreadable: no step can do anything with it
            raise ScanLayoutError(f"{chunk.dataset} scan {chunk.scan}: {chunk.problem}")
        step = steps.get(plan)
        nframes = step(asdict(chunk), paths.result, config_hash=plan.config_hash, config_json=plan.config_json)
    except Exception as exc:  # the chunk fails, the campaign goes on
        log.debug("chunk %s failed", chunk.id, exc_info=True)
        unrecorded = note_failure(paths, chunk, exc)
        return Outcome(chunk.id, False, 0, time.perf_counter() - start, f"{type(exc).__name__}: {exc}{unrecorded}",
                       permanent=is_permanent(exc))
    clear_failure(paths)
    return Outcome(chunk.id, True, nframes, time.perf_counter() - start, engine=step.engine_used,
                   stages=dict(step.stages))


def note_failure(paths: ChunkPaths, chunk: Chunk, exc: BaseException) -> str:
    """Write the chunk's error record; when even that fails (the disk is full, the folder read-only)
    return why, to append to the message: the failure is reported either way, never raised."""
    try:
        record_failure(paths, chunk, exc)
    except OSError as err:
        log.warning("chunk %s: cannot write its error record %s: %s", chunk.id, paths.error, err)
        return f" (error record not written: {err.strerror or err})"
    return ""


#: This process's steps: the command's own (``xreduce run`` keeps the step it built to check the config,
#: so that running in this process does not build it again), a pool worker's, an array task's.
STEPS = StepCache()
_PLANS: dict[str, Plan] = {}


def chunk_task(snapshot: str, chunk_id: str) -> Outcome:
    """Chunk ``chunk_id`` of the plan snapshot at ``snapshot`` (``<output>/plans/<hash12>.json``), for
    pool backends (Dask workers, MPI ranks).

    A snapshot is immutable and checked against the hash in its name when read, and the chunk is
    found by id, not by position: a plan written while the campaign runs cannot change this work.
    Module-level so that it is pickled by reference; the plan and the step are cached for the life
    of the worker process, so its integrator is built (or loaded) once.
    """
    if snapshot not in _PLANS:
        _PLANS[snapshot] = read_plan(Path(snapshot))
    plan = _PLANS[snapshot]
    return process_chunk(plan, plan.chunk(chunk_id), STEPS)
