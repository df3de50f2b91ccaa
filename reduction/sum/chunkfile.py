"""The sum kind's chunk file: the per-frame sums of frames [start, stop) of one scan.

A chunk is done exactly when ``<chunk_id>.h5`` exists — it is written under a temporary name and
renamed into place complete (:func:`~reduction.io.files.atomic_output`) — and its root attributes
carry the chunk id and config hash it was made for (:func:`chunk_matches`). Layout::

    /  @format="xreduce-sum-chunk-1" @chunk_id @config_hash @kind @dataset @scan @frame_start
       @frame_stop @xreduce_version @created @config (the resolved config, JSON)
    /total, /maximum, /pixels      (n,) float64, one value per frame (reduction.sum.sums.FrameSums)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from reduction.errors import OutputError
from reduction.io.files import atomic_output
from reduction.io.merge import chunk_file_matches
from reduction.io.nexus import attr_value, now, read_result

from .sums import FIELDS, FrameSums

__all__ = ["FORMAT", "ChunkMeta", "write_chunk", "read_header", "chunk_matches"]

#: Written as the root attribute ``format``; a file without it is not a sum chunk file.
FORMAT = "xreduce-sum-chunk-1"


@dataclass(frozen=True)
class ChunkMeta:
    """What a chunk is: its id, the config it was made with, and which frames of which scan."""

    chunk_id: str
    config_hash: str
    kind: str
    dataset: str  # raw dataset master file (absolute path)
    scan: str
    frame_start: int
    frame_stop: int
    config_json: str


def write_chunk(path: Path | str, meta: ChunkMeta, sums: FrameSums) -> None:
    """Write the sums of the chunk's frames as the chunk file ``path``, atomically."""
    from reduction import __version__

    n = meta.frame_stop - meta.frame_start
    if any(np.shape(getattr(sums, name)) != (n,) for name in FIELDS):
        raise OutputError(f"chunk {meta.chunk_id}: expected the sums of {n} frames [{meta.frame_start}, "
                          f"{meta.frame_stop}), got {', '.join(f'{k} {np.shape(getattr(sums, k))}' for k in FIELDS)}")
    try:
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update({"format": FORMAT, "chunk_id": meta.chunk_id, "config_hash": meta.config_hash,
                            "kind": meta.kind, "dataset": meta.dataset, "scan": meta.scan,
                            "frame_start": int(meta.frame_start), "frame_stop": int(meta.frame_stop),
                            "xreduce_version": __version__, "created": now(), "config": meta.config_json})
            for name in FIELDS:
                f.create_dataset(name, data=np.asarray(getattr(sums, name), dtype=np.float64))
    except OSError as exc:
        raise OutputError(f"cannot write chunk file {path}: {exc}") from exc


def read_header(path: Path | str) -> dict[str, Any]:
    """The root attributes of a sum chunk file as Python values, once its datasets are checked
    to hold one value per frame. Raises :class:`OutputError` naming the file otherwise."""

    def read(f: h5py.File) -> dict[str, Any]:
        meta = {k: attr_value(v) for k, v in f.attrs.items()}
        if meta.get("format") != FORMAT:
            raise OutputError(f"{path} is not a sum chunk file (format {meta.get('format')!r}, expected {FORMAT!r})")
        n = int(meta["frame_stop"]) - int(meta["frame_start"])
        for name in FIELDS:
            if name not in f or f[name].shape != (n,):
                shape = f[name].shape if name in f else "absent"
                raise OutputError(f"{path}: {name} is {shape}, expected ({n},) for frames "
                                  f"[{meta['frame_start']}, {meta['frame_stop']})")
        return meta

    return read_result(path, read)


def chunk_matches(path: Path | str, chunk_id: str, config_hash: str) -> bool:
    """True when ``path`` is a complete sum chunk file made for ``chunk_id`` with ``config_hash``;
    never raises."""
    return chunk_file_matches(path, chunk_id, config_hash, read_header)
