"""One chunk result file: the integrated frames [start, stop) of one scan, with their accumulators.

The file is the chunk's state: it is written under a temporary name and renamed into place only
once every frame is in it, so a chunk is done exactly when ``<chunk_id>.h5`` exists and its root
attributes carry the chunk id and config hash it was made for (:func:`chunk_matches`). The layout
is fixed in docs/internals.md ("Chunk result file"); the merge (:mod:`reduction.azint.nexus`) maps these
datasets into the NeXus master file, by HDF5 virtual datasets or by copy.

Frames can be written block by block as they are integrated (:class:`ChunkWriter`), so memory
stays bounded for long chunks of 2-D cakes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from reduction.errors import OutputError
from reduction.io.bands import BANDS_GROUP, BandLayout, write_band_indices
from reduction.io.files import PendingFile, why
from reduction.io.merge import chunk_file_matches
from reduction.io.nexus import attr_value, read_result

from .result import IntegrationResult

__all__ = ["ChunkMeta", "ChunkWriter", "read_chunk_meta", "read_chunk_header",
           "chunk_matches", "FORMAT", "KINDS", "FRAME_FIELDS"]

#: Written as the root attribute ``format``; a file without it is not a chunk file.
FORMAT = "xreduce-chunk-1"
KINDS = ("azint1d", "azint2d")
#: Per-frame datasets, (n, nRad) or (n, nEta, nRad); sigma and variance only with an error model.
FRAME_FIELDS = ("intensity", "sigma", "signal", "variance", "normalization", "count")
_AXES_1D = ("radial", "radial_edges")
_AXES_2D = _AXES_1D + ("azimuthal", "azimuthal_edges")
#: bytes reserved beyond the header text and the data, for HDF5's object headers and heaps
_SLACK = 64 << 10
_FLAGS = ("solid_angle_applied", "polarization_applied", "normalization_applied", "monitor_applied")


@dataclass(frozen=True)
class ChunkMeta:
    """What a chunk is (identity, frames) and how it was made (config, PONI, corrections)."""

    chunk_id: str
    config_hash: str
    kind: str  # "azint1d" | "azint2d"
    dataset: str  # raw dataset master file (absolute path)
    scan: str  # "1.1"
    frame_start: int
    frame_stop: int
    poni: str  # PONI text
    config_json: str  # the full resolved config, JSON
    wavelength: float | None  # metres
    energy_kev: float | None
    solid_angle_applied: bool
    polarization_applied: bool
    flat_applied: bool  # stored as normalization_applied (NXazint's name for it)
    monitor_applied: bool
    monitor: np.ndarray | None = None  # (n,) monitor values when a monitor counter was used
    bands: BandLayout | None = None  # a rank-4 detector dataset: which (point, band) each frame is

    @property
    def nframes(self) -> int:
        return self.frame_stop - self.frame_start


def _check_meta(meta: ChunkMeta) -> None:
    if meta.kind not in KINDS:
        raise OutputError(f"chunk {meta.chunk_id}: kind {meta.kind!r} is not one of {', '.join(KINDS)}")
    if not (0 <= meta.frame_start < meta.frame_stop):
        raise OutputError(f"chunk {meta.chunk_id}: frame range [{meta.frame_start}, {meta.frame_stop}) is empty "
                          "or negative")
    if meta.monitor is not None and np.shape(meta.monitor) != (meta.nframes,):
        raise OutputError(f"chunk {meta.chunk_id}: monitor has shape {np.shape(meta.monitor)}, expected "
                          f"({meta.nframes},) for frames [{meta.frame_start}, {meta.frame_stop})")
    if meta.monitor_applied and meta.monitor is None:
        raise OutputError(f"chunk {meta.chunk_id}: monitor_applied is set but no monitor values were given")


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


class ChunkWriter:
    """Write a chunk file block by block; rename it into place when every frame is written.

    ::

        with ChunkWriter(path, meta) as writer:
            for offset, result in blocks:        # offset: first frame of the block, from frame_start
                writer.write(offset, result)

    The file has a temporary name (:class:`~reduction.io.files.PendingFile`) until the ``with``
    block ends without an exception and all ``meta.nframes`` frames were written; then it is
    renamed to ``path`` (atomic, replacing an older result). On an exception, or if frames are
    missing, the temporary file is removed and ``path`` is left untouched.
    """

    def __init__(self, path: Path | str, meta: ChunkMeta) -> None:
        _check_meta(meta)
        self.path = Path(path)
        self.meta = meta
        self._pending: PendingFile | None = None
        self._file: h5py.File | None = None
        self._written = np.zeros(meta.nframes, dtype=bool)
        self._axes: dict[str, np.ndarray] | None = None

    # -- context ---------------------------------------------------------------------------
    def __enter__(self) -> ChunkWriter:
        from reduction import __version__

        try:
            self._pending = PendingFile(self.path)
            self._file = h5py.File(self._pending.tmp, "w")
            self._pending.reserve(self._header_bytes())  # a full disk fails here, not in an HDF5 write
            self._write_header(__version__)
        except BaseException as exc:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._pending is not None:
                self._pending.discard()
            if isinstance(exc, OSError):
                raise OutputError(f"cannot create chunk file {self.path}: {why(exc)}") from exc
            raise
        return self

    def _header_bytes(self) -> int:
        """Room for the header (attributes, monitor) and HDF5's own bookkeeping, generously."""
        meta = self.meta
        return _SLACK + 2 * (len(meta.poni) + len(meta.config_json)) + 8 * meta.nframes

    def _write_header(self, version: str) -> None:
        meta, f = self.meta, self._file
        assert f is not None
        f.attrs.update({
            "format": FORMAT, "chunk_id": meta.chunk_id, "config_hash": meta.config_hash, "kind": meta.kind,
            "dataset": str(meta.dataset), "scan": str(meta.scan), "frame_start": int(meta.frame_start),
            "frame_stop": int(meta.frame_stop), "xreduce_version": version,
            "created": datetime.now(timezone.utc).astimezone().isoformat(), "poni": meta.poni,
            "config": meta.config_json, "wavelength": _nan_if_none(meta.wavelength),
            "energy": _nan_if_none(meta.energy_kev),
            "solid_angle_applied": bool(meta.solid_angle_applied),
            "polarization_applied": bool(meta.polarization_applied),
            "normalization_applied": bool(meta.flat_applied), "monitor_applied": bool(meta.monitor_applied),
        })
        if meta.monitor is not None:
            f.create_dataset("monitor", data=np.asarray(meta.monitor, dtype=np.float64))
        if meta.bands is not None:  # root attributes too: the merge checks that a scan's chunks agree
            f.attrs.update({"frame_band": str(meta.bands.selection), "nbands": int(meta.bands.nbands or 1)})
            write_band_indices(f.create_group(BANDS_GROUP), meta.bands, meta.frame_start, meta.frame_stop)

    @property
    def tmp(self) -> Path:
        """Where the file is written until it is complete."""
        assert self._pending is not None, "ChunkWriter used outside of its `with` block"
        return self._pending.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None and self._pending is not None
        file, self._file = self._file, None
        try:
            try:
                file.close()
            except Exception as close_exc:  # noqa: BLE001 - e.g. disk full while flushing
                if exc_type is None:
                    raise OutputError(f"cannot write chunk file {self.tmp}: {why(close_exc)}") from close_exc
                return
            if exc_type is not None:
                return
            if not self._written.all():
                missing = np.flatnonzero(~self._written)
                raise OutputError(f"chunk {self.meta.chunk_id}: {len(missing)} of {self.meta.nframes} frames were "
                                  f"never written (first: frame {self.meta.frame_start + int(missing[0])}); "
                                  f"{self.path} not written")
            try:
                self._pending.commit()  # on disk before it counts as done: a node may die right after
            except OSError as err:
                raise OutputError(f"cannot rename {self.tmp} to {self.path}: {why(err)}") from err
        finally:
            self._pending.discard()

    # -- data ------------------------------------------------------------------------------
    def note_engine(self, engine: str) -> None:
        """Record what reduced the frames (``"opencl on 0:0 'NVIDIA H100 …'"``): provenance only,
        known once frames went through the engine, and carried into the master's NXprocess."""
        if self._file is None:
            raise OutputError(f"chunk file {self.tmp} is not open")
        self._file.attrs["engine"] = str(engine)

    def write(self, offset: int, result: IntegrationResult) -> None:
        """Write the frames of ``result`` (a stack) at frames ``offset ...`` of this chunk."""
        if self._file is None:
            raise OutputError("ChunkWriter.write() outside of its `with` block")
        meta = self.meta
        ndim = 1 if meta.kind == "azint1d" else 2
        if result.ndim != ndim:
            raise OutputError(f"chunk {meta.chunk_id} is {meta.kind} but the result is {result.ndim}-D")
        intensity = np.asarray(result.intensity)
        if intensity.ndim != ndim + 1:
            raise OutputError(f"chunk {meta.chunk_id}: the result must be a stack of frames (B, ...), got intensity "
                              f"of shape {intensity.shape}")
        n = intensity.shape[0]
        if offset < 0 or offset + n > meta.nframes:
            raise OutputError(f"chunk {meta.chunk_id}: frames [{offset}, {offset + n}) of the block fall outside the "
                              f"chunk's {meta.nframes} frames")
        axes = {name: np.asarray(getattr(result, name), dtype=np.float64)
                for name in (_AXES_1D if ndim == 1 else _AXES_2D)}
        if self._axes is None:
            self._create(result, axes, intensity.shape[1:])
        elif any(axes[k].shape != v.shape or not np.array_equal(axes[k], v) for k, v in self._axes.items()):
            raise OutputError(f"chunk {meta.chunk_id}: the block at frame {offset} has other bins than the first block")
        for name in FRAME_FIELDS:
            if name in self._file:
                array = getattr(result, name)
                if array is None or np.shape(array) != intensity.shape:
                    raise OutputError(f"chunk {meta.chunk_id}: {name} of the block at frame {offset} is "
                                      f"{'missing' if array is None else np.shape(array)}, expected {intensity.shape}")
                self._file[name][offset:offset + n] = array
        self._written[offset:offset + n] = True

    def _create(self, result: IntegrationResult, axes: dict[str, np.ndarray], frame_shape: tuple[int, ...]) -> None:
        f = self._file
        assert f is not None
        fields = [name for name in FRAME_FIELDS if getattr(result, name) is not None]
        data = 8 * (len(fields) * self.meta.nframes * math.prod(frame_shape) + sum(a.size for a in axes.values()))
        try:
            self._pending.reserve(self._header_bytes() + data)  # type: ignore[union-attr]
        except OSError as err:
            raise OutputError(f"no room for chunk file {self.path} ({self._header_bytes() + data} bytes): "
                              f"{err.strerror}") from err
        f.attrs.update({"unit": result.unit, "splitting": result.splitting,
                        "error_model": "none" if result.variance is None else "poisson"})
        for name, values in axes.items():
            f.create_dataset(name, data=values)
        for name in fields:
            # contiguous, uncompressed: read through virtual datasets by the master file, fast both ways
            f.create_dataset(name, shape=(self.meta.nframes, *frame_shape), dtype=np.float64, fillvalue=np.nan)
        self._axes = axes


# -- reading ---------------------------------------------------------------------------------
def _meta_from(f: h5py.File, path: Path | str) -> dict[str, Any]:
    attrs = {k: attr_value(v) for k, v in f.attrs.items()}
    if attrs.get("format") != FORMAT:
        raise OutputError(f"{path} is not an xreduce chunk file (format {attrs.get('format')!r}, "
                          f"expected {FORMAT!r})")
    for key in ("wavelength", "energy"):
        if key in attrs and not math.isfinite(attrs[key]):
            attrs[key] = None
    for key in _FLAGS:
        attrs[key] = bool(attrs.get(key, False))
    if "intensity" not in f:
        raise OutputError(f"{path}: no intensity dataset")
    attrs["nframes"] = int(attrs["frame_stop"]) - int(attrs["frame_start"])
    attrs["frame_shape"] = tuple(f["intensity"].shape[1:])
    if f["intensity"].shape[0] != attrs["nframes"]:
        raise OutputError(f"{path}: intensity holds {f['intensity'].shape[0]} frames, the attributes say "
                          f"{attrs['nframes']}")
    attrs["fields"] = [name for name in FRAME_FIELDS if name in f]
    attrs["has_monitor"] = "monitor" in f
    return attrs


def read_chunk_meta(path: Path | str) -> dict[str, Any]:
    """The root attributes of a chunk file as Python values, plus ``nframes``, ``frame_shape``,
    ``fields`` (per-frame datasets present) and ``has_monitor``. Wavelength/energy unknown → None.
    Raises :class:`OutputError` when the file is missing, unreadable or not a chunk file."""
    return read_result(path, lambda f: _meta_from(f, path))


def _header_from(f: h5py.File, path: Path | str) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray | None]:
    meta = _meta_from(f, path)
    axes = {name: f[name][()] for name in _AXES_2D if name in f}
    count = np.asarray(f["count"][0], dtype=np.float64) if "count" in meta["fields"] else None
    return meta, axes, count


def read_chunk_header(path: Path | str) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray | None]:
    """:func:`read_chunk_meta`, the bins (``radial``, ``radial_edges``, + ``azimuthal``,
    ``azimuthal_edges`` in 2-D) and the first frame's ``count`` (None without one), in one opening of
    the file: what a merge needs to check a chunk and to write the entry's ``data/norm``."""
    return read_result(path, lambda f: _header_from(f, path))


def chunk_matches(path: Path | str, chunk_id: str, config_hash: str) -> bool:
    """True when ``path`` is a complete azint chunk file made for ``chunk_id`` with ``config_hash``;
    never raises."""
    return chunk_file_matches(path, chunk_id, config_hash, read_chunk_meta)
