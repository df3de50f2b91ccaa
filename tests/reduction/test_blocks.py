"""The overlapped chunk pipeline (reduction.io.blocks): order, errors where they belong, and a bound
on the blocks alive at once however long the chunk."""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np
import pytest

from reduction.io.blocks import StageTimes, read_ahead, write_behind


class Tracker:
    """Blocks handed out and still referenced somewhere: the pipeline's memory, counted."""

    def __init__(self) -> None:
        self.alive = 0
        self.most = 0
        self.lock = threading.Lock()

    def block(self, start: int, stop: int) -> np.ndarray:
        frames = np.arange(start, stop, dtype=np.int64)
        with self.lock:
            self.alive += 1
            self.most = max(self.most, self.alive)
        weakref.finalize(frames, self._freed)
        return frames

    def _freed(self) -> None:
        with self.lock:
            self.alive -= 1


def test_blocks_come_in_order_and_memory_stays_bounded_on_a_long_chunk() -> None:
    tracker, times = Tracker(), StageTimes()
    ranges = [(b, b + 4) for b in range(0, 4 * 500, 4)]  # a 2000-frame chunk in 500 blocks
    results: list[np.ndarray] = []
    written = Tracker()

    def write(offset: int, result: np.ndarray) -> None:
        time.sleep(0.0005)  # a slow disk
        results.append(result)

    with write_behind(write, times, depth=1) as submit:
        for b0, b1, frames in read_ahead(tracker.block, ranges, times, depth=1):
            assert frames.tolist() == list(range(b0, b1))
            result = written.block(b0, b1) * 2  # a new array, as a kernel makes
            submit(b0, result)
            del frames
    assert [r[0] for r in results] == [2 * b for b, _ in ranges]
    # bound: the block reduced, the one read ahead, the one being read
    assert tracker.most <= 3, f"{tracker.most} blocks of frames alive at once"
    assert times.read > 0 and times.write > 0 and times.wait >= 0


def test_a_read_error_is_raised_at_its_block() -> None:
    def read(start: int, stop: int) -> np.ndarray:
        if start == 8:
            raise OSError("lima file truncated")
        return np.zeros(stop - start)

    seen = []
    with pytest.raises(OSError, match="truncated"):
        for b0, _, _ in read_ahead(read, [(0, 4), (4, 8), (8, 12), (12, 16)], StageTimes()):
            seen.append(b0)
    assert seen == [0, 4]


def test_a_write_error_is_raised_and_every_write_has_ended() -> None:
    done: list[int] = []

    def write(k: int) -> None:
        if k == 1:
            raise OSError("No space left on device")
        time.sleep(0.01)
        done.append(k)

    with pytest.raises(OSError, match="No space"):
        with write_behind(write, StageTimes(), depth=2) as submit:
            for k in range(4):
                submit(k)
    assert 0 in done


def test_the_callers_error_wins_over_a_write_error() -> None:
    def write(k: int) -> None:
        raise OSError("disk")

    with pytest.raises(ValueError, match="kernel"):
        with write_behind(write, StageTimes()) as submit:
            submit(0)
            raise ValueError("kernel failed")
