"""Run chunks on this machine: in-process (workers=1) or in worker processes started here.

Each worker process keeps one step (geometry, matrix, engine) for its lifetime and is handed one
chunk at a time through its own pipe, so the parent always knows which chunk each worker holds.
A worker that dies (kill -9, the OOM killer, a crash in a library) loses only that chunk: it gets an
error record naming the worker and the signal, is retried once in a fresh worker, and the other
workers carry on. ``concurrent.futures.ProcessPoolExecutor`` cannot do this: one dead worker breaks
the whole executor, stops the chunks running in the others and does not say which chunk was lost.

Workers never outlive the command: on Linux the kernel kills them when it dies (``PR_SET_PDEATHSIG``),
elsewhere a watchdog thread notices the parent is gone; SIGINT is left to the parent, which ends them.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from reduction.step import remove_temporaries

from ..errors import BackendError
from ..plan import Plan
from ..state import ChunkPaths
from ..worker import STEPS, Outcome, StepCache, note_failure, process_chunk
from .base import Backend

__all__ = ["LocalBackend", "WorkerDied"]

log = logging.getLogger(__name__)

#: how many times a chunk whose worker died is tried again, in a fresh worker
RETRIES = 1
_PR_SET_PDEATHSIG = 1


class WorkerDied(BackendError):
    """A worker process ended while reducing a chunk (killed, out of memory, crashed)."""


# -- in the worker process ----------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` dies: the kernel's parent-death signal on Linux, and a
    watchdog on the parent pid everywhere (also covers the instant before prctl took effect)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl in this libc: the watchdog alone
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="xreduce-parent-watch", daemon=True).start()


def _serve(conn: Connection, plan: Plan, threads: int, parent: int) -> None:
    """A worker: reduce the chunk indices received until told to stop (None) or the pipe closes."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    os.environ.setdefault("XREDUCE_THREADS", str(threads))
    steps = StepCache()
    while True:
        try:
            index = conn.recv()
        except (EOFError, OSError):
            return
        if index is None:
            return
        conn.send(process_chunk(plan, plan.chunks[index], steps))


# -- in the parent -------------------------------------------------------------------------------
class _Worker:
    """One worker process, its end of the pipe, and the chunk it holds (None when idle)."""

    def __init__(self, context: Any, plan: Plan, threads: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, plan, threads, os.getpid()),
                                       name="xreduce-worker", daemon=True)
        self.process.start()
        child.close()
        self.index: int | None = None
        self.started = 0.0

    def give(self, index: int) -> None:
        self.index, self.started = index, time.perf_counter()
        self.conn.send(index)

    def death(self) -> str:
        """How the process ended, in words (it has ended or is ending)."""
        self.process.join(5)
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"worker process {self.process.pid} was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"worker process {self.process.pid} exited with code {code}"

    def stop(self, graceful: bool) -> None:
        if graceful and self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


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
        todo, tries = deque(chunk_indices), Counter[int]()
        workers: list[_Worker] = []
        graceful = False
        try:
            while todo or any(w.index is not None for w in workers):
                for worker in [w for w in workers if w.index is None]:
                    if todo:
                        worker.give(todo.popleft())
                while todo and len(workers) < self.workers:
                    workers.append(_Worker(context, plan, threads))
                    workers[-1].give(todo.popleft())
                busy = [w for w in workers if w.index is not None]
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    if worker.conn not in ready and worker.process.sentinel not in ready:
                        continue
                    try:
                        outcome = worker.conn.recv()
                    except (EOFError, OSError):  # the process is gone: its chunk is lost, the others go on
                        workers.remove(worker)
                        self._lost(plan, worker, tries, todo, on_outcome)
                        worker.stop(graceful=False)
                        continue
                    worker.index = None
                    on_outcome(outcome)
            graceful = True
        finally:
            for worker in workers:
                worker.stop(graceful)
                if worker.index is not None:  # stopped mid-chunk (Ctrl-C, SIGTERM): its temporary file goes
                    remove_temporaries(Path(plan.output) / "chunks", pid=worker.process.pid)

    @staticmethod
    def _lost(plan: Plan, worker: _Worker, tries: Counter[int], todo: deque[int],
              on_outcome: Callable[[Outcome], None]) -> None:
        """Record the chunk of a dead worker and queue it once more, or report it failed."""
        index = worker.index
        assert index is not None
        chunk = plan.chunks[index]
        paths = ChunkPaths(Path(plan.output), chunk.id)
        remove_temporaries(paths.folder, pid=worker.process.pid)  # its half-written chunk file
        error = WorkerDied(f"{worker.death()} while reducing this chunk (out of memory? see `dmesg`)")
        tries[index] += 1
        message = f"{type(error).__name__}: {error}{note_failure(paths, chunk, error)}"
        if tries[index] <= RETRIES:
            log.warning("chunk %s: %s; trying it again in a new worker", chunk.id, error)
            todo.append(index)
        else:
            on_outcome(Outcome(chunk.id, False, 0, time.perf_counter() - worker.started, message))
