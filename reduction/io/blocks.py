"""A chunk's frames as an overlapped pipeline: blocks read ahead in one thread, reduced here, written
behind in another, with bounded queues, and the time each stage took.

While block k is reduced, block k+1 is read (and decompressed, :mod:`reduction.io.direct`) and
block k-1 is written, so a chunk costs about its slowest stage instead of the sum. Memory stays
bounded whatever the chunk's length: at most ``1 + depth`` blocks of frames (the one reduced, those
read ahead) and ``1 + depth`` blocks of results (the one made, those being written) exist at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TypeVar

__all__ = ["StageTimes", "read_ahead", "write_behind"]

Frames = TypeVar("Frames")  # what a block read gives: an array of frames, or their compressed chunks


@dataclass
class StageTimes:
    """Seconds spent per stage of one chunk (the read and write stages run in their own threads, so
    the stages add up to more than the chunk's wall time when they overlap)."""

    read: float = 0.0  # reading and decompressing frames (reader thread)
    wait: float = 0.0  # the reducer waiting for frames: the reading the overlap did not hide
    reduce: float = 0.0  # the kernel (engine) on the blocks
    write: float = 0.0  # writing results (writer thread)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def read_ahead(read: Callable[[int, int], Frames], ranges: list[tuple[int, int]], times: StageTimes,
               depth: int = 1) -> Iterator[tuple[int, int, Frames]]:
    """Yield ``(start, stop, read(start, stop))`` for each range in order, ``depth`` ranges read ahead
    in a thread. An error reading a block is raised when that block is reached."""

    def timed(b0: int, b1: int) -> Frames:
        t0 = time.perf_counter()
        try:
            return read(b0, b1)
        finally:
            times.read += time.perf_counter() - t0

    with ThreadPoolExecutor(1, thread_name_prefix="xreduce-read") as reader:
        queued: list[Future[Frames]] = []
        for i, (b0, b1) in enumerate(ranges):
            while len(queued) <= depth and i + len(queued) < len(ranges):
                n0, n1 = ranges[i + len(queued)]
                queued.append(reader.submit(timed, n0, n1))
            t0 = time.perf_counter()
            try:
                frames = queued.pop(0).result()
            except BaseException:
                for job in queued:
                    job.cancel()
                raise
            times.wait += time.perf_counter() - t0
            yield b0, b1, frames


@contextmanager
def write_behind(write: Callable[..., None], times: StageTimes, depth: int = 1) -> Iterator[Callable[..., None]]:
    """A ``submit(*args)`` that runs ``write(*args)`` in a thread, in order, at most ``depth`` calls
    waiting; the first error is raised at the next submit or when the block ends (after every
    write has finished), so nothing is left half-done behind the caller's back."""

    def timed(*args: object) -> None:
        t0 = time.perf_counter()
        try:
            write(*args)
        finally:
            times.write += time.perf_counter() - t0

    with ThreadPoolExecutor(1, thread_name_prefix="xreduce-write") as writer:
        queued: list[Future[None]] = []

        def submit(*args: object) -> None:
            while len(queued) >= depth:
                queued.pop(0).result()
            queued.append(writer.submit(timed, *args))

        try:
            yield submit
        except BaseException:
            for job in queued:  # the caller's error wins; let the writes end before the file is closed
                job.exception()
            raise
        for job in queued:
            job.result()
