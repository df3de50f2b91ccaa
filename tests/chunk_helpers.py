"""Whole azint chunk files in one call, for tests: write a result stack, read a chunk back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from reduction.azint.chunkfile import _AXES_2D, FRAME_FIELDS, ChunkMeta, ChunkWriter, _meta_from
from reduction.azint.result import IntegrationResult
from reduction.errors import OutputError
from reduction.io.nexus import open_readonly

__all__ = ["write_chunk", "read_chunk"]


def write_chunk(path: Path | str, result: IntegrationResult, meta: ChunkMeta) -> None:
    """Write ``result`` (a stack of ``meta.nframes`` frames) as the chunk file ``path``, atomically."""
    n = np.shape(result.intensity)[0] if np.ndim(result.intensity) == (result.ndim + 1) else None
    if n != meta.nframes:
        raise OutputError(f"chunk {meta.chunk_id}: expected a stack of {meta.nframes} frames "
                          f"[{meta.frame_start}, {meta.frame_stop}), got intensity of shape "
                          f"{np.shape(result.intensity)}")
    with ChunkWriter(path, meta) as writer:
        writer.write(0, result)


def read_chunk(path: Path | str) -> tuple[IntegrationResult, dict[str, Any]]:
    """The whole chunk: its frames as an :class:`IntegrationResult` stack and its metadata
    (:func:`read_chunk_meta`, plus ``monitor``: (n,) array or None, and ``config_dict``)."""
    try:
        with open_readonly(path) as f:
            meta = _meta_from(f, path)
            data = {name: f[name][()] if name in f else None
                    for name in FRAME_FIELDS + _AXES_2D + ("monitor",)}
    except OutputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise OutputError(f"cannot read chunk file {path}: {exc}") from exc
    meta["monitor"] = data.pop("monitor")
    try:
        meta["config_dict"] = json.loads(meta.get("config") or "null")
    except json.JSONDecodeError:
        meta["config_dict"] = None
    result = IntegrationResult(unit=str(meta.get("unit")), splitting=str(meta.get("splitting")), **data)
    return result, meta
