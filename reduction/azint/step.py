"""The azimuthal-integration step: one chunk of frames in, one chunk result file out.

Built once per worker process from the resolved ``reduction`` config (geometry, mask, dark,
flat and the integrator — whose matrix comes from the on-disk cache after the first process),
then called for each chunk. Frames are read block by block while the previous block is being
integrated, and written into the chunk file as they come, so memory stays bounded for 2-D
cakes too. It is the :class:`reduction.step.Step` of the azint kinds (:mod:`reduction.azint.kind`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from reduction.errors import IntegrationError, RawDataError
from reduction.io import bliss
from reduction.io.blocks import StageTimes, read_ahead, write_behind
from reduction.io.direct import CompressedFrames
from reduction.io.images import load_image
from reduction.io.poni import read_poni_text

from .chunkfile import ChunkMeta, ChunkWriter
from .engines.bslz4_opencl import CorruptChunk
from .geometry import Geometry
from .integrator import Integrator
from .units import r_mm_problem

__all__ = ["AzintStep"]

log = logging.getLogger(__name__)

#: Frames read and integrated per block (reading the next block and writing the previous one overlap
#: the integration: reduction.io.blocks).
READ_BLOCK = 32


class AzintStep:
    """azint1d / azint2d: integrate every frame of a chunk, with the campaign's corrections."""

    def __init__(self, reduction: Mapping[str, Any]) -> None:
        self.cfg = dict(reduction)
        self.kind = self.cfg.get("kind", "azint1d")
        self.poni_text = read_poni_text(self.cfg["poni"])
        self.geometry = Geometry.from_poni(self.cfg["poni"], text=self.poni_text)
        shape = self.geometry.shape
        self.mask = None if not self.cfg.get("mask") else load_image(self.cfg["mask"], what="mask", shape=shape)
        self.dark = None if not self.cfg.get("dark") else load_image(self.cfg["dark"], what="dark", shape=shape)
        self.flat = None if not self.cfg.get("flat") else load_image(self.cfg["flat"], what="flat", shape=shape)
        problem = r_mm_problem(self.cfg.get("unit", ""), self.geometry.rot1, self.geometry.rot2)
        if problem:
            raise IntegrationError(problem)
        self.engine = self.cfg.get("engine") or "auto"
        self.device = self.cfg.get("device") or "auto"
        self.engine_used = ""  # what reduced the last chunk ("numpy", "opencl on …"): the run summary's
        self.stages: dict[str, float] = {}  # seconds per stage of the last chunk (StageTimes)
        self._integrators: dict[float | None, Integrator] = {}
        self.integrator = self._integrator_for(self.geometry.wavelength)

    def _integrator_for(self, wavelength: float | None) -> Integrator:
        """One integrator per wavelength (the PONI's, or a scan's when the PONI has none)."""
        if wavelength not in self._integrators:
            geometry = replace(self.geometry, wavelength=wavelength)
            self._integrators[wavelength] = Integrator(geometry, mask=self.mask, engine=self.engine,
                                                        device=self.device)
        return self._integrators[wavelength]

    def _integrate(self, integrator: Integrator, frames: np.ndarray | CompressedFrames,
                   monitor: np.ndarray | None):
        common = dict(unit=self.cfg["unit"], splitting=self.cfg["splitting"],
                      radial_range=_pair(self.cfg.get("radial_range")),
                      azimuth_range=_pair(self.cfg.get("azimuth_range")), dark=self.dark, flat=self.flat,
                      solid_angle=bool(self.cfg.get("solid_angle", True)),
                      polarization_factor=self.cfg.get("polarization_factor"), normalization=monitor,
                      error_model=self.cfg.get("error_model"))
        if self.kind == "azint2d":
            return integrator.integrate2d(frames, npt_rad=int(self.cfg["npt_rad"]),
                                               npt_azim=int(self.cfg["npt_azim"]), **common)
        return integrator.integrate1d(frames, npt=int(self.cfg["npt"]), **common)

    def __call__(self, chunk: Mapping[str, Any], out: Path, *, config_hash: str, config_json: str) -> int:
        """Reduce the frames [start, stop) of the chunk's scan into ``out``; return the frame count."""
        dataset, scan, start, stop = Path(chunk["dataset"]), str(chunk["scan"]), int(chunk["start"]), int(chunk["stop"])
        frame_band = chunk.get("frame_band", "all")
        layout = bliss.band_layout(dataset, scan, chunk["detector"], frame_band)
        monitor = None
        if chunk.get("monitor"):  # one value per point: each frame of a point gets it
            monitor = np.asarray(bliss.read_counter(dataset, scan, chunk["monitor"], start, stop, layout),
                                 dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(monitor) | (monitor <= 0))
            if len(bad):
                raise RawDataError(f"{dataset} scan {scan}: monitor '{chunk['monitor']}' is "
                                   f"{float(monitor[bad[0]])!r} at "
                                   f"frame {start + int(bad[0])} ({len(bad)} frame(s) with a zero, negative or "
                                   f"non-finite monitor); cannot normalise")
        energy = self._check_wavelength(chunk)
        integrator = self.integrator
        if self.geometry.wavelength is None and energy:
            integrator = self._integrator_for(bliss.HC_KEV_ANGSTROM / energy * 1e-10)
        meta = ChunkMeta(chunk_id=str(chunk["id"]), config_hash=config_hash, kind=self.kind, dataset=str(dataset),
                         scan=scan, frame_start=start, frame_stop=stop, poni=self.poni_text, config_json=config_json,
                         wavelength=integrator.geometry.wavelength, energy_kev=energy,
                         solid_angle_applied=bool(self.cfg.get("solid_angle", True)),
                         polarization_applied=self.cfg.get("polarization_factor") is not None,
                         flat_applied=self.flat is not None, monitor_applied=monitor is not None, monitor=monitor,
                         bands=layout if layout.banded else None)
        blocks = [(b, min(b + READ_BLOCK, stop)) for b in range(start, stop, READ_BLOCK)]
        read = partial(bliss.read_frames, dataset, scan, chunk["detector"], frame_band=frame_band)
        # frames left compressed where the engine decompresses them on its device (a GPU)
        reader = bliss.read_frames_compressed if self._on_device(integrator) else bliss.read_frames
        times = StageTimes()
        with ChunkWriter(out, meta) as writer:
            with write_behind(writer.write, times) as write:  # block k-1 written, k+1 read while k is reduced
                blocks_read = partial(reader, dataset, scan, chunk["detector"], frame_band=frame_band)
                for b0, b1, frames in read_ahead(blocks_read, blocks, times):
                    block_monitor = None if monitor is None else monitor[b0 - start:b1 - start]
                    t0 = time.perf_counter()
                    try:
                        result = self._integrate(integrator, frames, block_monitor)
                    except CorruptChunk as exc:  # the host's path decompresses it, or names the file at fault
                        log.warning("%s scan %s frame %d: %s; this block is decompressed on the host", dataset,
                                    scan, b0 + exc.index, exc.why)
                        result = self._integrate(integrator, read(b0, b1), block_monitor)
                    times.reduce += time.perf_counter() - t0
                    write(b0 - start, result)
            self.engine_used = integrator.engine_description
            writer.note_engine(self.engine_used)
        self.stages = times.as_dict()
        return stop - start

    def _on_device(self, integrator: Integrator) -> bool:
        """Whether this integrator's engine decompresses frames on its device (it is then built now)."""
        radial = "npt_rad" if self.kind == "azint2d" else "npt"
        return integrator.decompresses_on_device(
            int(self.cfg[radial]), int(self.cfg["npt_azim"]) if self.kind == "azint2d" else None, self.cfg["unit"],
            self.cfg["splitting"], _pair(self.cfg.get("radial_range")), _pair(self.cfg.get("azimuth_range")))

    def _check_wavelength(self, chunk: Mapping[str, Any]) -> float | None:
        """The energy in keV: the PONI's, else the scan's monochromator; warn when the two disagree."""
        wavelength = self.geometry.wavelength
        scan_energy = chunk.get("energy_kev")
        if wavelength is None:
            if scan_energy:
                log.info("%s scan %s: the PONI has no wavelength; using the monochromator's %.4f keV",
                         chunk["dataset"], chunk["scan"], scan_energy)
            return scan_energy
        energy = bliss.HC_KEV_ANGSTROM / (wavelength * 1e10)
        if scan_energy and abs(scan_energy - energy) > 1e-3 * energy:
            log.warning("%s scan %s: monochromator energy %.4f keV differs from the PONI's %.4f keV "
                        "(wavelength %.5g Å); using the PONI", chunk["dataset"], chunk["scan"], scan_energy, energy,
                        wavelength * 1e10)
        return energy


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))
