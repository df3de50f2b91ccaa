"""Chunk state lives in the filesystem: no database, no shared mutable file.

A chunk is *done* when its result file exists (renamed into place atomically) and carries the
chunk id and config hash it was made for; *failed* when an error record lies beside it; else
*pending*. Thousands of concurrent workers on a parallel filesystem only ever create and rename
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


def _read_error(path: Path) -> str:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return f"{record.get('error', 'Error')}: {record.get('message', '')}"
    except (OSError, json.JSONDecodeError):
        return f"unreadable error record {path}"


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
        elif paths.error.exists():
            states.append(ChunkState(chunk, FAILED, _read_error(paths.error)))
        else:
            states.append(ChunkState(chunk, PENDING))
    return states


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")


def record_failure(paths: ChunkPaths, chunk: Chunk, exc: BaseException, *, reason: str | None = None) -> None:
    """Write the error record of a failed chunk: exception, traceback, input file, scan, frames."""
    _write_json(paths.error, {
        "chunk_id": chunk.id, "dataset": chunk.dataset, "scan": chunk.scan, "frames": [chunk.start, chunk.stop],
        "error": type(exc).__name__, "message": reason or str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": socket.gethostname(),
        "pid": os.getpid()})


def clear_failure(paths: ChunkPaths) -> None:
    """Remove a stale error record once the chunk succeeded."""
    paths.error.unlink(missing_ok=True)
