"""Write synthetic experiments in the exact BLISS/ESRF raw-data layout.

``xreduce demo``, the tests and the benchmarks need raw data that look like what BLISS and lima
write at the beamline, without a beamline. :func:`write_dataset` writes one dataset master file
and its lima frame files::

    <collection>_<dataset>.h5                          (NXroot)
        /1.1                                           NXentry: title, start_time, end_time
            instrument/<detector>/data                 NXdetector: VDS over the lima files
            instrument/<monitor>/data                  NXdetector: the monitor counter
            instrument/monochromator/energy            keV
            sample/name
            measurement/<detector> -> instrument/<detector>/data     (soft links, as BLISS)
            measurement/<monitor>  -> instrument/<monitor>/data
    scan0001/<detector>_0000.h5, _0001.h5 ...          lima: /entry_0000/measurement/data,
                                                       chunked per frame, bitshuffle-LZ4

The VDS names its sources with paths relative to the master file (``./scan0001/...``), so the
folder can be moved. :func:`write_demo_experiment` builds the small calibrant experiment of
``xreduce demo`` (tests/bliss_helpers.py adds master files without lima files, for the planning
benchmark). No pyFAI here: frames come from
:mod:`reduction.demo.synthetic` on a :class:`reduction.Geometry`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal, cast

import h5py
import hdf5plugin
import numpy as np

from reduction.azint.detectors import Detector
from reduction.azint.geometry import Geometry
from reduction.errors import XReduceError
from reduction.io.bliss import HC_KEV_ANGSTROM

from .synthetic import calibrant_d_spacings, calibrant_image

__all__ = ["ScanSpec", "write_dataset", "DemoExperiment", "write_demo_experiment", "demo_geometry", "demo_mask"]

FrameBlocks = Callable[[int, int], np.ndarray]
_EPOCH = datetime(2026, 11, 24, 9, 0, 0, tzinfo=timezone.utc)


@dataclass
class ScanSpec:
    """One scan to write.

    Parameters
    ----------
    frames
        (n, ny, nx) array, or (points, band, ny, nx) for a lima2 detector recording a band of frames
        per point (:mod:`reduction.io.bands`; one chunk per frame, as lima2 writes them); or a callable
        ``frames(start, stop) -> (stop - start, ny, nx)`` array,
        called once per lima file (set ``nframes``, ``frame_shape`` and ``dtype``); or None to
        declare the frames (``nframes``, ``frame_shape``, ``dtype``) without writing lima files.
    monitor
        The monitor counter, one value per frame, or None for no monitor.
    finished
        False leaves ``end_time`` out, as BLISS does while the scan runs.
    title, energy_kev, sample
        Scan title, monochromator energy (keV; None: none written), sample name.
    name
        Entry name ("3.1"); default: "<position + 1>.1".
    counters
        Extra 1-D counters written under ``measurement/``.
    """

    frames: np.ndarray | FrameBlocks | None
    monitor: np.ndarray | Sequence[float] | None = None
    finished: bool = True
    title: str = "loopscan"
    energy_kev: float | None = None
    name: str | None = None
    nframes: int | None = None
    frame_shape: tuple[int, int] | None = None
    dtype: str = "int32"
    sample: str | None = None
    counters: Mapping[str, np.ndarray] = field(default_factory=dict)

    def shape(self) -> tuple[int, ...]:
        """(nframes, ny, nx) of the scan, or (points, band, ny, nx)."""
        if isinstance(self.frames, np.ndarray):
            if self.frames.ndim not in (3, 4):
                raise XReduceError(f"ScanSpec.frames must be (n, ny, nx) or (points, band, ny, nx), got shape "
                                   f"{self.frames.shape}")
            return tuple(self.frames.shape)
        if self.nframes is None or self.frame_shape is None:
            raise XReduceError("ScanSpec: give nframes and frame_shape when frames is a callable or None")
        return (int(self.nframes), int(self.frame_shape[0]), int(self.frame_shape[1]))

    def frame_dtype(self) -> np.dtype:
        return self.frames.dtype if isinstance(self.frames, np.ndarray) else np.dtype(self.dtype)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as an array."""
        if isinstance(self.frames, np.ndarray):
            return self.frames[start:stop]
        if self.frames is None:
            raise XReduceError("ScanSpec.frames is None: these frames are declared, not written")
        block = np.asarray(self.frames(start, stop), dtype=self.frame_dtype())
        if block.shape != (stop - start, *self.shape()[1:]):
            raise XReduceError(f"ScanSpec.frames({start}, {stop}) returned shape {block.shape}, expected "
                               f"{(stop - start, *self.shape()[1:])}")
        return block


#: ``compression=`` of :func:`write_dataset`: HDF5 filter options of each choice.
COMPRESSIONS = {"bitshuffle": lambda: dict(hdf5plugin.Bitshuffle(cname="lz4")), "lz4": lambda: dict(hdf5plugin.LZ4()),
                "gzip": lambda: {"compression": "gzip", "compression_opts": 4}}


def _compression(kind: str | None) -> dict:
    if kind is None:
        return {}
    if kind in COMPRESSIONS:
        return COMPRESSIONS[kind]()
    raise XReduceError(f"compression must be one of {', '.join(COMPRESSIONS)} or None, got {kind!r}")


def _nx(group: h5py.Group, nx_class: str) -> h5py.Group:
    group.attrs["NX_class"] = nx_class
    return group


def _scan_folder(name: str) -> str:
    number, sub = name.split(".")
    return f"scan{int(number):04d}" if sub == "1" else f"scan{int(number):04d}_{int(sub)}"


def _frame_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One chunk per frame: (1, ny, nx), or (1, 1, ny, nx) for (points, band, ny, nx)."""
    return (*(1,) * (len(shape) - 2), *shape[-2:])


def _write_lima(path: Path, block: np.ndarray, detector: str, compression: dict) -> None:
    """One lima file: /entry_0000/measurement/data, one chunk per frame (as lima writes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", locking=False) as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["creator"] = "LIMA (synthetic, xreduce.bliss_writer)"
        entry = _nx(f.create_group("entry_0000"), "NXentry")
        det = _nx(_nx(entry.create_group("instrument"), "NXinstrument").create_group(detector), "NXdetector")
        data = det.create_dataset("data", data=block, chunks=_frame_chunks(block.shape), **compression)
        data.attrs["interpretation"] = "image"
        _nx(entry.create_group("measurement"), "NXcollection")["data"] = data  # hard link, same dataset


def write_dataset(path: str | os.PathLike[str], scans: Sequence[ScanSpec], *, detector: str = "pilatus",
                  lima: bool = True, compression: Literal["bitshuffle", "lz4", "gzip"] | None = "bitshuffle",
                  frames_per_file: int = 10, monitor: str = "mon",
                  link: Literal["vds", "external"] = "vds") -> Path:
    """Write a BLISS dataset master file and, beside it, the lima files of its scans.

    Parameters
    ----------
    path
        The master file, e.g. ``.../RAW_DATA/sample/sample_0001/sample_0001.h5`` (overwritten).
    scans
        The scans, in order.
    detector
        Name of the detector under ``measurement/``.
    lima
        True: frames in lima files ``scan000N/<detector>_000K.h5`` behind ``measurement/<detector>``;
        False: frames as a plain (compressed) dataset inside the master file.
    compression
        ``"bitshuffle"`` (bitshuffle-LZ4, as lima writes), ``"lz4"``, ``"gzip"`` or None.
    frames_per_file
        Frames per lima file.
    monitor
        Name of the monitor counter.
    link
        How the master points at lima files: ``"vds"`` (BLISS) or ``"external"`` (an HDF5 external
        link, possible only when the scan fits in one lima file).

    Returns
    -------
    Path
        The master file.
    """
    path = Path(path)
    if frames_per_file < 1:
        raise XReduceError(f"frames_per_file must be >= 1, got {frames_per_file}")
    if link not in ("vds", "external"):
        raise XReduceError(f"link must be 'vds' or 'external', got {link!r}")
    comp = _compression(compression)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", locking=False) as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["creator"] = "Bliss (synthetic, xreduce.bliss_writer)"
        f.attrs["file_name"] = str(path)
        if scans:
            f.attrs["default"] = scans[0].name or "1.1"
        for index, spec in enumerate(scans):
            _write_scan(f, path, spec, spec.name or f"{index + 1}.1", index, detector=detector, lima=lima,
                        comp=comp, frames_per_file=frames_per_file, monitor=monitor, link=link)
    return path


def _write_scan(f: h5py.File, master: Path, spec: ScanSpec, name: str, index: int, *, detector: str, lima: bool,
                comp: dict, frames_per_file: int, monitor: str, link: str) -> None:
    shape = spec.shape()
    n, row = shape[0], shape[1:]
    dtype = spec.frame_dtype()
    entry = _nx(f.create_group(name), "NXentry")
    start_time = _EPOCH + timedelta(minutes=2 * index)
    entry["title"] = spec.title
    entry["start_time"] = start_time.isoformat()
    if spec.finished:
        entry["end_time"] = (start_time + timedelta(seconds=max(n, 1) * 0.1)).isoformat()
    instrument = _nx(entry.create_group("instrument"), "NXinstrument")
    det = _nx(instrument.create_group(detector), "NXdetector")
    det["type"] = "lima"
    measurement = _nx(entry.create_group("measurement"), "NXcollection")
    if spec.sample:
        _nx(entry.create_group("sample"), "NXsample")["name"] = spec.sample
    if spec.energy_kev is not None:
        mono = _nx(instrument.create_group("monochromator"), "NXmonochromator")
        mono["energy"] = float(spec.energy_kev)
        mono["energy"].attrs["units"] = "keV"

    if not lima:
        data = det.create_dataset("data", shape=shape, dtype=dtype, chunks=_frame_chunks(shape) if n else None, **comp)
        for b in range(0, n, frames_per_file):
            data[b:min(b + frames_per_file, n)] = spec.block(b, min(b + frames_per_file, n))
    else:
        folder = _scan_folder(name)
        files = [(b, min(b + frames_per_file, n), f"{folder}/{detector}_{k:04d}.h5")
                 for k, b in enumerate(range(0, n, frames_per_file))]
        if spec.frames is not None:
            for b0, b1, rel in files:
                _write_lima(master.parent / rel, spec.block(b0, b1), detector, comp)
        if link == "external":
            if len(files) != 1:
                raise XReduceError(f"scan {name}: an external link reaches one lima file, but {n} frames at "
                                   f"{frames_per_file} per file need {len(files)}; use link='vds'")
            det["data"] = h5py.ExternalLink(f"./{files[0][2]}", "/entry_0000/measurement/data")
        else:
            layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
            for b0, b1, rel in files:
                layout[b0:b1] = h5py.VirtualSource(f"./{rel}", "/entry_0000/measurement/data", shape=(b1 - b0, *row))
            det.create_virtual_dataset("data", layout)
    if not (lima and link == "external"):  # an attribute on the link's target would open the lima file
        det["data"].attrs["interpretation"] = "image"
    measurement[detector] = h5py.SoftLink(f"/{name}/instrument/{detector}/data")

    counters = dict(spec.counters)
    if spec.monitor is not None:
        counters[monitor] = np.asarray(spec.monitor, dtype=np.float64)
    for counter, values in counters.items():
        group = _nx(instrument.create_group(counter), "NXdetector")
        group["data"] = np.asarray(values)
        measurement[counter] = h5py.SoftLink(f"/{name}/instrument/{counter}/data")


# -- the demo experiment ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoExperiment:
    """Where :func:`write_demo_experiment` put things, and what a campaign needs to reduce them."""

    root: Path
    session: Path  # <root>/<proposal>/<beamline>/<session>
    raw_data: Path  # <session>/RAW_DATA
    poni: Path
    mask: Path
    datasets: list[Path]  # master files
    experiment: str  # "proposal/beamline/session"
    detector: str  # name under measurement/ ("pilatus")
    monitor: str  # monitor counter ("mon")
    model: str  # detector model ("Pilatus1M")
    n_frames: int
    wavelength: float  # metres
    calibrants: dict[str, str] = field(default_factory=dict)  # "<dataset file name>::<scan>" -> calibrant

    @property
    def processed_data(self) -> Path:
        return self.session / "PROCESSED_DATA"


DEMO_WAVELENGTH = 0.7e-10  # m (17.7 keV)
_BEAMSTOP_RADIUS = 4e-3  # m


def demo_geometry(detector: str = "Pilatus1M") -> Geometry:
    """The demo's geometry: 200 mm from the sample, beam near the centre, slightly tilted."""
    # Geometry.__post_init__ turns a detector name into a Detector; its field is typed as the result
    geo = Geometry(dist=0.2, poni1=0.0, poni2=0.0, wavelength=DEMO_WAVELENGTH, detector=cast(Detector, detector))
    ny, nx = geo.shape
    poni1 = 0.55 * ny * geo.detector.pixel1  # beam a little off-centre, as at a beamline
    poni2 = 0.48 * nx * geo.detector.pixel2
    return Geometry(dist=0.2, poni1=poni1, poni2=poni2, rot1=0.01, rot2=-0.005, wavelength=DEMO_WAVELENGTH,
                    detector=geo.detector)


def demo_mask(geo: Geometry) -> np.ndarray:
    """(ny, nx) uint8, 1 behind a round beamstop and its holder (a thin arm to the detector's edge)."""
    r = geo.dist * np.tan(geo.twotheta())
    chi = np.degrees(geo.chi())
    return ((r < _BEAMSTOP_RADIUS) | (np.abs(chi - 90.0) < 1.5)).astype(np.uint8)


def _bliss_name(model: str) -> str:
    lower = model.lower()
    for family in ("pilatus", "eiger"):
        if lower.startswith(family):
            return family
    return lower


class _CalibrantFrames:
    """frames(start, stop) of one scan: Poisson draws of a calibrant pattern scaled by the monitor.

    The expected image is computed once per calibrant; each frame then costs one Poisson draw,
    done on a small thread pool (NumPy releases the GIL there). Each frame has its own seed, so
    the frames do not depend on how they are split into blocks or threads.
    """

    def __init__(self, expected: np.ndarray, monitor: np.ndarray, gaps: np.ndarray, beamstop: np.ndarray,
                 seed: Sequence[int], pool: ThreadPoolExecutor):
        self.expected, self.monitor, self.gaps, self.beamstop = expected, monitor, gaps, beamstop
        self.seed, self.pool = list(seed), pool

    def frame(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([*self.seed, i])
        counts = rng.poisson(self.expected * (self.monitor[i] / 1e5))
        frame = counts.astype(np.int32)
        frame[self.beamstop] = 0  # no photons behind the beamstop
        frame[self.gaps] = -1  # Pilatus convention for pixels in the module gaps
        return frame

    def __call__(self, start: int, stop: int) -> np.ndarray:
        return np.stack(list(self.pool.map(self.frame, range(start, stop))))


def write_demo_experiment(root: str | os.PathLike[str], *, n_datasets: int = 2, n_scans: int = 3, n_frames: int = 20,
                          detector: str = "Pilatus1M", seed: int = 0, proposal: str = "ihch0000",
                          beamline: str = "id31", session: str = "20261124", collection: str = "calibrants",
                          frames_per_file: int = 10) -> DemoExperiment:
    """Write the small synthetic experiment of ``xreduce demo`` in the BLISS layout.

    ``<root>/<proposal>/<beamline>/<session>/RAW_DATA/<collection>/<collection>_000D/`` holds
    ``n_datasets`` datasets of ``n_scans`` finished scans of ``n_frames`` int32 frames each:
    LaB6 and CeO2 powder rings (alternating scan by scan) with Poisson noise, scaled by a monitor
    counter "mon" (~1e5 with 1 % fluctuations), 0 behind the beamstop and −1 in the module gaps
    as a Pilatus writes them, in bitshuffle-LZ4 lima files behind a VDS; the monochromator energy
    matches the PONI. The PONI (2.1) and the beamstop mask (.npy, nonzero = masked) are written
    to ``<session>/SCRIPTS/calibration/``.
    """
    session_dir = Path(os.path.abspath(root)) / proposal / beamline / session
    raw_data = session_dir / "RAW_DATA"
    calibration = session_dir / "SCRIPTS" / "calibration"
    calibration.mkdir(parents=True, exist_ok=True)
    geo = demo_geometry(detector)
    poni = calibration / f"{geo.detector.name}.poni"
    poni.write_text(geo.to_poni(), encoding="utf-8")
    beamstop = demo_mask(geo)
    mask = calibration / "mask.npy"
    np.save(mask, beamstop)

    tth = geo.twotheta()
    expected = {name: calibrant_image(tth, DEMO_WAVELENGTH, calibrant_d_spacings(name), intensity=300.0,
                                      background=20.0, poisson=False, dtype=np.float64)
                for name in ("LaB6", "CeO2")}
    gaps = geo.detector.mask
    stop_mask = beamstop.astype(bool)
    energy = HC_KEV_ANGSTROM / (DEMO_WAVELENGTH * 1e10)
    name = _bliss_name(geo.detector.name)
    datasets: list[Path] = []
    calibrants: dict[str, str] = {}
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="xreduce-demo") as pool:
        for d in range(n_datasets):
            folder = f"{collection}_{d + 1:04d}"
            specs = []
            for s in range(n_scans):
                calibrant = ("LaB6", "CeO2")[(d + s) % 2]
                rng = np.random.default_rng([seed, d, s])
                monitor = rng.normal(1e5, 1e3, n_frames)
                frames = _CalibrantFrames(expected[calibrant], monitor, gaps, stop_mask, (seed, d, s, 1), pool)
                specs.append(ScanSpec(frames, monitor=monitor, title=f"loopscan {n_frames} 0.1", energy_kev=energy,
                                      nframes=n_frames, frame_shape=geo.shape, dtype="int32", sample=calibrant))
                calibrants[f"{folder}.h5::{s + 1}.1"] = calibrant
            master = raw_data / collection / folder / f"{folder}.h5"
            write_dataset(master, specs, detector=name, frames_per_file=frames_per_file)
            datasets.append(master)
    return DemoExperiment(root=Path(os.path.abspath(root)), session=session_dir, raw_data=raw_data, poni=poni,
                          mask=mask, datasets=datasets, experiment=f"{proposal}/{beamline}/{session}", detector=name,
                          monitor="mon", model=geo.detector.name, n_frames=n_frames, wavelength=DEMO_WAVELENGTH,
                          calibrants=calibrants)
