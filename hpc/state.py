"""Chunk state lives in the filesystem: no database, no shared mutable file.

A chunk is *done* when its result file exists (renamed into place atomically) and carries the
chunk id and config hash it was made for; *failed* when an error record lies beside it, or when
planning found its scan (or its whole dataset file) unreadable; else *pending*. Thousands of
concurrent workers on a parallel filesystem only ever create and rename
their own files.
"""

from __future__ import annotations

import json
import os
import socket
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reduction.errors import is_permanent
from reduction.step import atomic_output

from .plan import Chunk, Plan

__all__ = ["ChunkPaths", "ChunkState", "chunk_states", "record_failure", "clear_failure"]

DONE, FAILED, PENDING = "done", "failed", "pending"


@dataclass(frozen=True)
class ChunkPaths:
    """Every artefact of one chunk, named from its id (like submitit's JobPaths)."""

    output: Path
    chunk_id: str

    @property
    def folder(self) -> Path:
        return self.output / "chunks"

    @property
    def result(self) -> Path:
        return self.folder / f"{self.chunk_id}.h5"

    @property
    def error(self) -> Path:
        return self.folder / f"{self.chunk_id}.error.json"


@dataclass(frozen=True)
class ChunkState:
    """What the files say about one chunk."""

    chunk: Chunk
    state: str
    reason: str = ""
    #: failed for good: the same inputs fail the same way, so runs skip it until the raw dataset file
    #: or the config (hence the chunk id) changes (reduction.errors.XReduceError.permanent)
    permanent: bool = False


def _inputs(chunk: Chunk) -> dict[str, list[int]]:
    """What a permanent failure depends on besides the config: the raw dataset file, as (mtime, size)."""
    try:
        stat = os.stat(chunk.dataset)
    except OSError:
        return {}
    return {chunk.dataset: [stat.st_mtime_ns, stat.st_size]}


def _read_error(path: Path, chunk: Chunk) -> tuple[str, bool]:
    """The reason an error record gives, and whether the failure is permanent for the inputs as they are."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        reason = f"{record.get('error', 'Error')}: {record.get('message', '')}"
    except (OSError, json.JSONDecodeError):
        return f"unreadable error record {path}", False
    permanent = bool(record.get("permanent")) and record.get("inputs") == _inputs(chunk)
    return reason, permanent


def chunk_states(plan: Plan, output: Path, *, quick: bool = False) -> list[ChunkState]:
    """The state of every chunk of ``plan``, from the files under ``output``. ``quick``: a chunk file
    counts as done on the kind's cheap check (``Kind.looks_done``: its name and integrity, not its
    content), for status and merge over thousands of chunks; running skips only what ``is_done``."""
    states = []
    kind = plan.kind
    done = kind.looks_done if quick else kind.is_done
    for chunk in plan.chunks:
        paths = ChunkPaths(output, chunk.id)
        if done(paths.result, chunk.id, plan.config_hash):
            states.append(ChunkState(chunk, DONE))
        elif chunk.problem:  # planning found it cannot be reduced: failed before any worker tries
            states.append(ChunkState(chunk, FAILED, f"{chunk.dataset} scan {chunk.scan}: {chunk.problem}",
                                     permanent=True))
        elif paths.error.exists():
            reason, permanent = _read_error(paths.error, chunk)
            states.append(ChunkState(chunk, FAILED, reason, permanent))
        else:
            states.append(ChunkState(chunk, PENDING))
    return states


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")


def record_failure(paths: ChunkPaths, chunk: Chunk, exc: BaseException, *, reason: str | None = None) -> None:
    """Write the error record of a failed chunk: exception, traceback, input file, scan, frames, and
    whether the failure is permanent (with the raw dataset file's state it holds for)."""
    permanent = is_permanent(exc)
    _write_json(paths.error, {
        "chunk_id": chunk.id, "dataset": chunk.dataset, "scan": chunk.scan, "frames": [chunk.start, chunk.stop],
        "error": type(exc).__name__, "message": reason or str(exc),
        "permanent": permanent, "inputs": _inputs(chunk) if permanent else {},
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": socket.gethostname(),
        "pid": os.getpid()})


def clear_failure(paths: ChunkPaths) -> None:
    """Remove a stale error record once the chunk succeeded."""
    paths.error.unlink(missing_ok=True)
