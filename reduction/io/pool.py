"""Metadata work over thousands of HDF5 files, spread over processes: planning reads every dataset
file's scans, a merge every chunk file's header.

Both are bound by HDF5 calls, which hold h5py's lock, so threads do not help; processes do (one per
CPU this process may use). The pool forks where that is safe and free (Linux, no other thread
running); with threads running it starts its processes from a fork server; under MPI (``mpi4py``
loaded: forking an MPI process is unsafe) or off Linux the work runs in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["process_map", "process_count", "MAX_PROCESSES"]

T = TypeVar("T")

#: Never more processes than this (a login node may show hundreds of CPUs).
MAX_PROCESSES = 32


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def process_count(items: int, per_process: int) -> int:
    """How many processes :func:`process_map` uses for ``items`` items, at least ``per_process`` each
    (1: in this process)."""
    if sys.platform != "linux" or "mpi4py.MPI" in sys.modules:
        return 1
    return max(1, min(_cpus(), items // max(1, per_process), MAX_PROCESSES))


def process_map(fn: Callable[..., T], args: Sequence[tuple[Any, ...]], *, per_process: int) -> list[T]:
    """``[fn(*a) for a in args]``, computed by a pool of processes when every process gets at least
    ``per_process`` items (fewer are done here: a process costs more than it saves). ``fn`` and the
    arguments and results must pickle (``fn`` a module-level function or a ``functools.partial`` of one);
    an exception of ``fn`` is raised here."""
    processes = process_count(len(args), per_process)
    if processes < 2:
        return [fn(*a) for a in args]
    context = multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        return list(pool.map(fn, *zip(*args), chunksize=max(1, len(args) // (4 * processes))))
