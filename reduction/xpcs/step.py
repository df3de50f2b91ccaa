"""The xpcs step: one whole scan in, one chunk file out.

Frames are read block by block (the next block read while this one is correlated,
:mod:`reduction.io.blocks`); only the pixels of the q partition are taken from each frame; the
multi-tau correlator streams over the blocks, so memory does not grow with the scan's length
(:func:`reduction.xpcs.multitau.state_bytes`). The two-time series of the bins asked for is kept
(frames × their pixels, float32) and correlated tile by tile as the chunk file is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from reduction.azint.geometry import Geometry
from reduction.errors import EngineUnavailable, IntegrationError, RawDataError
from reduction.io import bliss
from reduction.io.blocks import StageTimes, read_ahead
from reduction.io.images import load_image
from reduction.io.poni import read_poni_text

from .chunkfile import ChunkMeta, TwoTimeSpec, write_chunk
from .multitau import MultiTau
from .partition import QPartition, partition_from_config
from .twotime import Product, normalise_frames, twotime_tiles

if TYPE_CHECKING:
    from .opencl import OpenCLContext

__all__ = ["XpcsStep", "READ_BLOCK", "scan_timing"]

log = logging.getLogger(__name__)

#: Frames read and correlated per block.
READ_BLOCK = 64


def _plain(value: Any) -> Any:
    """A config node (OmegaConf or plain) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


_TO_SECONDS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


def _seconds(obj: Any) -> float | None:
    if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "iuf" or obj.size < 1:
        return None
    value = float(np.asarray(obj[()]).ravel()[0])
    units = obj.attrs.get("units", "s")
    units = (units.decode() if isinstance(units, bytes) else str(units)).strip().lower()
    factor = _TO_SECONDS.get(units)
    return value * factor if factor is not None and np.isfinite(value) and value > 0 else None


def scan_timing(dataset: str, scan: str, detector: str) -> tuple[float | None, float | None, str, str]:
    """(frame time s, count time s, where the frame time came from, start time) from the scan's
    metadata: ``instrument/<detector>/acq_parameters/acq_expo_time`` (+ ``acq_latency_time``) as
    BLISS writes for lima detectors, else the NXdetector's ``frame_time`` / ``count_time``."""
    with bliss.open_raw(dataset) as f:
        entry = f.get(scan)
        if not isinstance(entry, h5py.Group):
            raise RawDataError(f"{dataset}: no scan {scan}")
        start = entry.get("start_time")
        start_time = "" if start is None else np.asarray(start[()]).ravel()[0]
        start_time = start_time.decode() if isinstance(start_time, bytes) else str(start_time)
        det = entry.get(f"instrument/{detector}")
        if not isinstance(det, h5py.Group):
            return None, None, "", start_time
        acq = det.get("acq_parameters")
        expo = _seconds(acq.get("acq_expo_time")) if isinstance(acq, h5py.Group) else None
        if expo is not None:
            latency = _seconds(acq.get("acq_latency_time")) or 0.0
            return expo + latency, expo, f"/{scan}/instrument/{detector}/acq_parameters", start_time
        frame_time, count_time = _seconds(det.get("frame_time")), _seconds(det.get("count_time"))
        if frame_time is not None:
            return frame_time, count_time, f"/{scan}/instrument/{detector}/frame_time", start_time
        if count_time is not None:
            return count_time, count_time, f"/{scan}/instrument/{detector}/count_time", start_time
        return None, None, "", start_time


NUMPY = "numpy (float64)"


class XpcsStep:
    """``reduction=xpcs``: multi-tau (and two-time) correlation of a whole scan."""

    def __init__(self, reduction: Mapping[str, Any]) -> None:
        self.cfg = _plain(reduction)
        self.kind = str(self.cfg.get("kind", "xpcs"))
        self.engine = str(self.cfg.get("engine") or "auto")
        self.context = self._open_device()
        #: the correlator that runs (provenance, run summaries)
        self.engine_used = NUMPY if self.context is None else f"opencl on {self.context} (float64)"
        self.poni_text = read_poni_text(self.cfg["poni"])
        self.geometry = Geometry.from_poni(self.cfg["poni"], text=self.poni_text)
        self.mask = None if not self.cfg.get("mask") else load_image(self.cfg["mask"], what="mask",
                                                                     shape=self.geometry.shape)
        dpl = int((self.cfg.get("multitau") or {}).get("dpl", 4))
        if not 1 <= dpl <= 64:
            raise IntegrationError(f"reduction.multitau.dpl={dpl} must be between 1 and 64")
        self.dpl = dpl
        self.stages: dict[str, float] = {}
        self._partitions: dict[float | None, QPartition] = {}
        self.partition = self._partition_for(self.geometry.wavelength)
        self.twotime = _plain(self.cfg.get("twotime") or {})
        if self.twotime.get("enabled"):
            bins = [int(b) for b in self.twotime.get("q_bins") or []]
            bad = [b for b in bins if not 1 <= b <= self.partition.n_dynamic]
            if not bins or bad:
                raise IntegrationError(f"reduction.twotime.q_bins={bins} must name dynamic bins 1 … "
                                       f"{self.partition.n_dynamic}")
            frames = self.twotime.get("frames")
            if frames is not None and (len(frames) != 2 or not 0 <= int(frames[0]) < int(frames[1])):
                raise IntegrationError(f"reduction.twotime.frames={frames} must be [start, stop) with "
                                       "0 <= start < stop")

    def _open_device(self) -> OpenCLContext | None:
        """The OpenCL device of ``engine=opencl`` (EngineUnavailable if none works) or ``auto`` (None,
        with a warning naming the reason, where none works: the numpy correlator)."""
        if self.engine == "numpy":
            return None
        from .opencl import open_context

        try:
            return open_context(str(self.cfg.get("device") or "auto"))
        except EngineUnavailable as exc:
            if self.engine == "opencl":
                raise EngineUnavailable(f"reduction.engine=opencl: {exc}") from None
            log.warning("engine auto: using the numpy correlator, the OpenCL one is unavailable: %s", exc)
            return None

    def correlator(self, static_index: np.ndarray, n_static: int, nframes: int) -> MultiTau:
        """The multi-tau correlator of one scan on this step's engine."""
        if self.context is None:
            return MultiTau(static_index, n_static, nframes, self.dpl)
        from .opencl import OpenCLMultiTau

        return OpenCLMultiTau(self.context, static_index, n_static, nframes, self.dpl)

    def twotime_product(self, x: np.ndarray) -> Product | None:
        """The two-time tile product on this step's engine (None: numpy's)."""
        return None if self.context is None else self.context.twotime_product(x)

    def _wavelength(self, chunk: Mapping[str, Any]) -> float:
        if chunk.get("energy_kev"):
            return bliss.HC_KEV_ANGSTROM / float(chunk["energy_kev"]) * 1e-10
        raise IntegrationError(f"{chunk['dataset']} scan {chunk['scan']}: the PONI has no wavelength and the scan no "
                               "monochromator energy: q cannot be computed")

    def chunk_partition(self, chunk: Mapping[str, Any]) -> QPartition:
        """The q partition of ``chunk``'s scan (its energy where the PONI has no wavelength)."""
        if self.geometry.wavelength is not None:
            return self.partition
        return self._partition_for(self._wavelength(chunk))

    def _partition_for(self, wavelength: float | None) -> QPartition:
        if wavelength not in self._partitions:
            geometry = replace(self.geometry, wavelength=wavelength)
            self._partitions[wavelength] = partition_from_config(self.cfg, geometry, self.mask)
        return self._partitions[wavelength]

    def __call__(self, chunk: Mapping[str, Any], out: Path, *, config_hash: str, config_json: str) -> int:
        """Correlate the whole scan of ``chunk`` into ``out``; return the frame count. Under
        ``engine=auto`` a device that fails mid-scan hands the scan (and the next) to numpy."""
        try:
            return self._correlate(chunk, out, config_hash=config_hash, config_json=config_json)
        except EngineUnavailable as exc:
            if self.engine != "auto" or self.context is None:
                raise
            log.warning("engine auto: the OpenCL correlator failed (%s); correlating with numpy from now on", exc)
            self.context, self.engine_used = None, NUMPY
            return self._correlate(chunk, out, config_hash=config_hash, config_json=config_json)

    def _correlate(self, chunk: Mapping[str, Any], out: Path, *, config_hash: str, config_json: str) -> int:
        dataset, scan, detector = str(chunk["dataset"]), str(chunk["scan"]), str(chunk["detector"])
        start, stop = int(chunk["start"]), int(chunk["stop"])
        partition = self.chunk_partition(chunk)
        wavelength = self.geometry.wavelength if self.geometry.wavelength is not None else self._wavelength(chunk)
        frame_time, count_time, source, start_time = scan_timing(dataset, scan, detector)
        if self.cfg.get("frame_time"):
            frame_time, source = float(self.cfg["frame_time"]), "reduction.frame_time"
        pixels, static_index = partition.pixels, partition.static_index
        n = stop - start
        mt = self.correlator(static_index, partition.n_static, n)
        pixel_count = np.bincount(static_index, minlength=partition.n_static).astype(np.float64)
        tt = self._twotime_spec(n, dataset, scan)
        tt_cols, series = self._twotime_columns(partition, tt)
        times = StageTimes()
        blocks = [(b, min(b + READ_BLOCK, stop)) for b in range(start, stop, READ_BLOCK)]
        read = partial(bliss.read_frames, dataset, scan, detector, frame_band=chunk.get("frame_band", "all"))
        for b0, b1, frames in read_ahead(read, blocks, times):
            if frames.shape[1:] != partition.dynamic_map.shape:
                raise RawDataError(f"{dataset} scan {scan}: frames of /{scan}/measurement/{detector} are "
                                   f"{frames.shape[1:]}, but the PONI's detector is {partition.dynamic_map.shape}")
            t0 = time.perf_counter()
            selected = frames.reshape(len(frames), -1)[:, pixels]
            static_sum = mt.add(selected)
            if tt is not None and series is not None:
                lo, hi = max(b0 - start, tt.start), min(b1 - start, tt.stop)
                if lo < hi:
                    rows = slice(lo - (b0 - start), hi - (b0 - start))
                    series[lo - tt.start:hi - tt.start] = normalise_frames(
                        selected[rows][:, tt_cols], static_index[tt_cols], static_sum[rows], pixel_count)
            times.reduce += time.perf_counter() - t0
        t0 = time.perf_counter()
        sums = mt.result()
        times.reduce += time.perf_counter() - t0
        meta = ChunkMeta(chunk_id=str(chunk["id"]), config_hash=config_hash, kind=self.kind, dataset=dataset, scan=scan,
                         frame_start=start, frame_stop=stop, config_json=config_json, poni=self.poni_text,
                         engine=self.engine_used, frame_time=frame_time, frame_time_source=source,
                         count_time=count_time, start_time=start_time, wavelength=wavelength)
        t0 = time.perf_counter()
        tiles = None if tt is None or series is None else partial(self._tiles, partition, tt, tt_cols, series)
        write_chunk(out, meta, sums, partition, tt, tiles)
        times.write += time.perf_counter() - t0
        self.stages = times.as_dict()
        return n

    def _twotime_spec(self, n: int, dataset: str, scan: str) -> TwoTimeSpec | None:
        if not self.twotime.get("enabled"):
            return None
        frames = self.twotime.get("frames")
        lo, hi = (0, n) if frames is None else (int(frames[0]), min(int(frames[1]), n))
        if lo >= hi:
            raise IntegrationError(f"{dataset} scan {scan}: reduction.twotime.frames={frames} selects none of its "
                                   f"{n} frames")
        return TwoTimeSpec([int(b) for b in self.twotime["q_bins"]], lo, hi)

    @staticmethod
    def _twotime_columns(partition: QPartition, tt: TwoTimeSpec | None) -> tuple[np.ndarray, np.ndarray | None]:
        if tt is None:
            return np.zeros(0, dtype=np.int64), None
        dyn = partition.dynamic_map.ravel()[partition.pixels]
        cols = np.flatnonzero(np.isin(dyn, tt.q_bins))
        return cols, np.zeros((tt.stop - tt.start, len(cols)), dtype=np.float32)

    def _tiles(self, partition: QPartition, tt: TwoTimeSpec, cols: np.ndarray,
               series: np.ndarray) -> Iterator[tuple[int, int, int, int, int, np.ndarray]]:
        dyn = partition.dynamic_map.ravel()[partition.pixels][cols]
        for b, q_bin in enumerate(tt.q_bins):
            x = np.ascontiguousarray(series[:, dyn == q_bin])
            if not x.shape[1]:
                continue  # an empty bin stays NaN
            for i0, i1, j0, j1, c in twotime_tiles(x, product=self.twotime_product(x)):
                yield b, i0, i1, j0, j1, c
