"""The xpcs kind's chunk file: one whole scan's multi-tau sums, partition and (optionally) two-time.

Done exactly when ``<chunk_id>.h5`` exists (written under a temporary name and renamed into place,
:func:`~reduction.io.files.atomic_output`) with the chunk id and config hash in its root attributes.
Layout::

    /  @format="xreduce-xpcs-chunk-1" @chunk_id @config_hash @kind @dataset @scan @frame_start
       @frame_stop @xreduce_version @created @config @poni @engine @frame_time (s, NaN: unknown)
       @frame_time_source @count_time @start_time @wavelength (m)
    /multitau/delay, level, products (K,); G2, IP, IF, g2_pix, g2_pix2 (K, S); pixels (S,)
    /multitau/intensity (N, S)          counts of each static bin per frame
    /frame_sum (ny, nx)                 counts per pixel over the scan (NaN outside the partition)
    /partition/dynamic_roi_map, static_roi_map (ny, nx); dynamic_q (D,), static_q (S,) @units;
              [dynamic_phi (D,)]
    /twotime/C (n_bins, n, n) float32, upper triangle (NaN below); q_bins (1-based), frames [start, stop)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from reduction.errors import OutputError
from reduction.io.files import atomic_output
from reduction.io.merge import chunk_file_matches
from reduction.io.nexus import attr_value, now, read_result

from .multitau import MultiTauSums
from .partition import QPartition

__all__ = ["FORMAT", "ChunkMeta", "TwoTimeSpec", "write_chunk", "read_header", "chunk_matches", "read_sums",
           "read_partition"]

FORMAT = "xreduce-xpcs-chunk-1"
_SUMS = tuple(f.name for f in fields(MultiTauSums) if f.name != "frame_sum")
_GZIP = {"compression": "gzip", "compression_opts": 1}


@dataclass(frozen=True)
class ChunkMeta:
    chunk_id: str
    config_hash: str
    kind: str
    dataset: str
    scan: str
    frame_start: int
    frame_stop: int
    config_json: str
    poni: str
    engine: str
    frame_time: float | None
    frame_time_source: str
    count_time: float | None
    start_time: str
    wavelength: float | None


@dataclass(frozen=True)
class TwoTimeSpec:
    """Which dynamic bins (1-based) and frames [start, stop) the two-time tiles are for."""

    q_bins: list[int]
    start: int
    stop: int


Tiles = Callable[[], Iterable[tuple[int, int, int, int, int, np.ndarray]]]  # (bin, i0, i1, j0, j1, C)


def write_chunk(path: Path | str, meta: ChunkMeta, sums: MultiTauSums, partition: QPartition,
                twotime: TwoTimeSpec | None = None, tiles: Tiles | None = None) -> None:
    """Write the chunk file ``path`` atomically; two-time tiles are written as ``tiles()`` yields them."""
    from reduction import __version__

    try:
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update({"format": FORMAT, "chunk_id": meta.chunk_id, "config_hash": meta.config_hash,
                            "kind": meta.kind, "dataset": meta.dataset, "scan": meta.scan,
                            "frame_start": int(meta.frame_start), "frame_stop": int(meta.frame_stop),
                            "xreduce_version": __version__, "created": now(), "config": meta.config_json,
                            "poni": meta.poni, "engine": meta.engine,
                            "frame_time": np.nan if meta.frame_time is None else float(meta.frame_time),
                            "frame_time_source": meta.frame_time_source,
                            "count_time": np.nan if meta.count_time is None else float(meta.count_time),
                            "start_time": meta.start_time,
                            "wavelength": np.nan if meta.wavelength is None else float(meta.wavelength)})
            mt = f.create_group("multitau")
            for name in _SUMS:
                mt.create_dataset(name, data=getattr(sums, name))
            image = np.full(partition.dynamic_map.size, np.nan)  # pixels outside the partition are never read
            image[partition.pixels] = sums.frame_sum
            f.create_dataset("frame_sum", data=image.reshape(partition.dynamic_map.shape), **_GZIP)
            part = f.create_group("partition")
            part.create_dataset("dynamic_roi_map", data=partition.dynamic_map, **_GZIP)
            part.create_dataset("static_roi_map", data=partition.static_map, **_GZIP)
            for name in ("dynamic_q", "static_q"):
                part.create_dataset(name, data=getattr(partition, name)).attrs["units"] = partition.unit
            if partition.dynamic_phi is not None:
                part.create_dataset("dynamic_phi", data=partition.dynamic_phi).attrs["units"] = "deg"
            if twotime is not None and tiles is not None:
                n = twotime.stop - twotime.start
                group = f.create_group("twotime")
                group["q_bins"] = np.asarray(twotime.q_bins, dtype=np.int64)
                group["frames"] = np.asarray([twotime.start, twotime.stop], dtype=np.int64)
                tile = min(n, 1024)
                c = group.create_dataset("C", shape=(len(twotime.q_bins), n, n), dtype=np.float32, fillvalue=np.nan,
                                         chunks=(1, tile, tile), **_GZIP)
                for b, i0, i1, j0, j1, block in tiles():
                    c[b, i0:i1, j0:j1] = block
    except OSError as exc:
        raise OutputError(f"cannot write chunk file {path}: {exc}") from exc


def read_header(path: Path | str) -> dict[str, Any]:
    """The root attributes of an xpcs chunk file, once its sums are checked to fit together; raises
    OutputError naming the file otherwise."""

    def read(f: h5py.File) -> dict[str, Any]:
        meta = {k: attr_value(v) for k, v in f.attrs.items()}
        if meta.get("format") != FORMAT:
            raise OutputError(f"{path} is not an xpcs chunk file (format {meta.get('format')!r}, expected {FORMAT!r})")
        if "multitau" not in f or "partition" not in f:
            raise OutputError(f"{path}: no /multitau or /partition group")
        mt = f["multitau"]
        missing = [name for name in _SUMS if name not in mt]
        if missing:
            raise OutputError(f"{path}: /multitau lacks {', '.join(missing)}")
        K, S = len(mt["delay"]), len(mt["pixels"])
        n = int(meta["frame_stop"]) - int(meta["frame_start"])
        for name, shape in {"G2": (K, S), "IP": (K, S), "IF": (K, S), "g2_pix": (K, S), "g2_pix2": (K, S),
                            "intensity": (n, S)}.items():
            if mt[name].shape != shape:
                raise OutputError(f"{path}: /multitau/{name} is {mt[name].shape}, expected {shape}")
        return meta

    return read_result(path, read)


def chunk_matches(path: Path | str, chunk_id: str, config_hash: str) -> bool:
    """True when ``path`` is a complete xpcs chunk file for ``chunk_id`` and ``config_hash``; never raises."""
    return chunk_file_matches(path, chunk_id, config_hash, read_header)


def read_sums(f: h5py.File) -> MultiTauSums:
    """The multi-tau sums of an open chunk file."""
    mt = f["multitau"]
    return MultiTauSums(**{name: mt[name][()] for name in _SUMS}, frame_sum=f["frame_sum"][()].ravel())



def read_partition(f: h5py.File) -> QPartition:
    """The q partition of an open chunk file."""
    p = f["partition"]
    unit = p["dynamic_q"].attrs.get("units", "q_nm^-1")
    return QPartition(p["dynamic_roi_map"][()], p["static_roi_map"][()], p["dynamic_q"][()], p["static_q"][()],
                      unit.decode() if isinstance(unit, bytes) else str(unit),
                      p["dynamic_phi"][()] if "dynamic_phi" in p else None)
