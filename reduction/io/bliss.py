"""Read-only access to BLISS/ESRF raw data: dataset master files, scans, frames and counters.

BLISS writes one *dataset master file* per dataset, with one NXentry per scan ("1.1", "2.1", and
subscans "1.2"), under the ESRF data policy layout::

    <proposal>/<beamline>/<session>/RAW_DATA/<collection>/<collection>_<dataset>/<collection>_<dataset>.h5
        /1.1/title, start_time, end_time          # end_time present = scan finished
        /1.1/instrument/monochromator/energy      # keV (optional); or .../wavelength (Å)
        /1.1/measurement/<detector>               # (nframes, ny, nx): VDS / external link / plain
                                                  #   or (points, band, ny, nx): lima2 frame bands
        /1.1/measurement/<counter>                # (nframes,) e.g. the monitor "mon" (per point)
        scan0001/<detector>_0000.h5 ...           # lima files: /entry_0000/measurement/data

This module is pure I/O: no physics, no ``hpc``. Three rules hold everywhere:

- every file is opened read-only with HDF5 file locking off (``locking=False``): BLISS may be
  writing the master file, and a lock held by a reader would stall it (HDF5 opens the sources of
  a virtual dataset and the targets of external links with the same setting);
- planning (:func:`find_datasets`, :func:`read_scans`) reads metadata only, never frames, and
  never opens lima files;
- HDF5 returns the fill value (zeros), silently, where the source file of a virtual dataset is
  missing or shorter than the mapping says. :func:`read_frames` therefore checks every source
  that maps into the frames it reads, and raises :class:`~reduction.errors.RawDataError` naming
  the lima file, the scan and the dataset path at fault.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle-LZ4 and other compression filters with HDF5)
import numpy as np

from reduction.errors import RawDataError, RawDataPending, XReduceError

from .bands import ALL, SUM, BandLayout, FrameBand
from .direct import CompressedFrames, read_compressed, read_direct

__all__ = [
    "ScanInfo", "ScanSelection", "ScanSelectionError", "find_datasets", "read_scans", "parse_scan_selection",
    "read_frames", "read_frames_compressed", "read_counter", "frame_sources", "experiment_of", "processed_data_dir",
    "open_raw", "HC_KEV_ANGSTROM", "missing_names", "band_layout",
]

#: h·c in keV·Å: λ[Å] = HC_KEV_ANGSTROM / E[keV].
HC_KEV_ANGSTROM = 12.398419843320026

_SCAN_NAME = re.compile(r"^(\d+)\.(\d+)$")
_LIMA_DIR = re.compile(r"^scan\d+", re.IGNORECASE)
_UNLIMITED = h5py.h5s.UNLIMITED


class ScanSelectionError(XReduceError, ValueError):
    """A scan selection string (``"1-20,25"``) is not valid."""


# -- opening files ----------------------------------------------------------------------------------
def open_raw(path: str | os.PathLike[str]) -> h5py.File:
    """Open a raw-data HDF5 file read-only with file locking off; RawDataError naming it on failure."""
    path = Path(path)
    try:
        return h5py.File(path, "r", locking=False)
    except FileNotFoundError:
        raise RawDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise RawDataError(f"{path}: cannot open as HDF5 ({_why(exc)}); the file is truncated, "
                           "corrupt or not an HDF5 file") from None


#: an unreadable HDF5 dataset file modified more recently than this (seconds) may still be being created
SETTLING_SECONDS = 60.0
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _being_written(path: Path) -> bool:
    """Whether an unreadable dataset file may be one BLISS is creating right now: empty, or an HDF5 file
    (its signature) modified in the last :data:`SETTLING_SECONDS`. A file that is not HDF5 at all, or
    that has not changed for that long, is damaged for good."""
    try:
        size, mtime = path.stat().st_size, path.stat().st_mtime
        with open(path, "rb") as f:
            head = f.read(len(_HDF5_SIGNATURE))
    except OSError:
        return False
    return size == 0 or (head == _HDF5_SIGNATURE and time.time() - mtime < SETTLING_SECONDS)


def _open_dataset(path: Path) -> h5py.File:
    """:func:`open_raw` for a dataset master file, telling one still being written (RawDataPending)
    from one that is damaged (RawDataError)."""
    try:
        return open_raw(path)
    except RawDataError as exc:
        if _being_written(path):
            raise RawDataPending(f"{path}: cannot be read yet, it is being written ({exc}); tried again by "
                                 "the next run") from None
        raise


def _why(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


# -- discovery --------------------------------------------------------------------------------------
def _is_lima(path: Path) -> bool:
    return bool(_LIMA_DIR.match(path.parent.name))


def _is_master_name(path: Path) -> bool:
    return path.suffix == ".h5" and path.stem == path.parent.name


def find_datasets(raw_data: str | os.PathLike[str], patterns: Iterable[str] | None = None) -> list[Path]:
    """Dataset master files under ``raw_data``, sorted and absolute; never lima files.

    Parameters
    ----------
    raw_data
        The RAW_DATA folder (or a collection folder, a flat folder of master files, or one file).
    patterns
        Glob patterns relative to ``raw_data`` (``"sample/*/*.h5"``, ``"**/*_0001.h5"``; absolute
        patterns are used as they are). Default: every ``<collection>/<collection>_<dataset>/
        <collection>_<dataset>.h5``, i.e. every ``*/*/*.h5`` named after its folder; failing that,
        ``*/*.h5`` named after its folder (``raw_data`` is a collection folder); failing that,
        every ``*.h5`` directly in ``raw_data`` (a flat folder of master files).

    Files inside ``scan*/`` folders (lima frame files) are never returned.
    """
    root = Path(os.path.abspath(raw_data))
    if root.is_file():
        return [root]
    if patterns:
        found: set[Path] = set()
        for pattern in patterns:
            full = pattern if os.path.isabs(pattern) else os.path.join(root, pattern)
            found.update(Path(os.path.abspath(p)) for p in glob.glob(full, recursive=True))
        return sorted(p for p in found if p.is_file() and not _is_lima(p))
    for depth in ("*/*/*.h5", "*/*.h5"):
        found_list = [p for p in root.glob(depth) if _is_master_name(p) and p.is_file()]
        if found_list:
            return sorted(found_list)
    return sorted(p for p in root.glob("*.h5") if p.is_file())


def experiment_of(dataset: str | os.PathLike[str]) -> str | None:
    """``"proposal/beamline/session"``: the folder holding RAW_DATA, or None without RAW_DATA in the path.

    >>> experiment_of("/data/visitor/ihch0000/id31/20261124/RAW_DATA/s/s_0001/s_0001.h5")
    'ihch0000/id31/20261124'
    """
    parts = Path(os.path.abspath(dataset)).parts
    if "RAW_DATA" not in parts:
        return None
    index = len(parts) - 1 - parts[::-1].index("RAW_DATA")
    above = [p for p in parts[1:index]]  # parts[0] is the root "/"
    return "/".join(above[-3:]) if above else None


def processed_data_dir(raw_data: str | os.PathLike[str]) -> Path:
    """The PROCESSED_DATA folder beside the RAW_DATA folder that holds (or is) ``raw_data``.

    Raises RawDataError when ``raw_data`` is not inside a RAW_DATA folder.

    >>> processed_data_dir("/data/visitor/ihch0000/id31/20261124/RAW_DATA/sample")
    PosixPath('/data/visitor/ihch0000/id31/20261124/PROCESSED_DATA')
    """
    path = Path(os.path.abspath(raw_data))
    for folder in (path, *path.parents):
        if folder.name == "RAW_DATA":
            return folder.parent / "PROCESSED_DATA"
    raise RawDataError(f"{path} is not inside a RAW_DATA folder: there is no PROCESSED_DATA beside it; "
                       "give the output folder explicitly")


# -- scan selection ---------------------------------------------------------------------------------
def scan_key(name: str) -> tuple[int, int]:
    """Numeric sort key of a scan name: ``"2.1"`` before ``"10.1"``."""
    match = _SCAN_NAME.match(name)
    if match is None:
        raise ScanSelectionError(f"{name!r} is not a scan name like '1.1'")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class ScanSelection:
    """Which scans of a dataset to reduce; call it with a scan name (``"3.1"``) to ask.

    ``ranges`` are inclusive scan-number ranges (``hi`` None = no upper end), ``names`` exact scan
    names (``"1.2"``). A scan number selects all its subscans ("1.1", "1.2", ...).
    """

    text: str
    ranges: tuple[tuple[int, int | None], ...] = ()
    names: frozenset[str] = frozenset()
    everything: bool = False

    def __call__(self, scan: str) -> bool:
        if self.everything or scan in self.names:
            return True
        match = _SCAN_NAME.match(scan)
        if match is None:
            return False
        number = int(match.group(1))
        return any(lo <= number and (hi is None or number <= hi) for lo, hi in self.ranges)

    def __contains__(self, scan: str) -> bool:
        return self(scan)


_ITEM = re.compile(r"^(?:(?P<lo>\d+)\s*-\s*(?P<hi>\d*)|(?P<num>\d+)|(?P<name>\d+\.\d+))$")


def parse_scan_selection(text: str) -> ScanSelection:
    """Parse ``"all"`` or a list of scans: ``"1-20,25"``, ``"3"``, ``"1.2"`` (one subscan), ``"40-"``.

    Scan numbers are the part of the name before the dot, so ``"1"`` selects "1.1" and "1.2".
    Raises :class:`ScanSelectionError` (a ValueError) naming the text on bad syntax.

    >>> sel = parse_scan_selection("1-3, 10")
    >>> [s for s in ("1.1", "1.2", "4.1", "10.1") if sel(s)]
    ['1.1', '1.2', '10.1']
    """
    raw = str(text)
    stripped = raw.strip()
    if stripped.lower() in ("all", "*"):
        return ScanSelection(raw, everything=True)
    ranges: list[tuple[int, int | None]] = []
    names: set[str] = set()
    items = [item.strip() for item in stripped.split(",")]
    if not stripped or any(not item for item in items):
        raise ScanSelectionError(f"scan selection {raw!r}: expected 'all' or a list like '1-20,25' "
                                 "(scan numbers, ranges 'a-b' or 'a-', names like '1.2'), got an empty item")
    for item in items:
        match = _ITEM.match(item)
        if match is None:
            raise ScanSelectionError(f"scan selection {raw!r}: cannot read {item!r}; expected 'all' or a list "
                                     "like '1-20,25' (scan numbers, ranges 'a-b' or 'a-', names like '1.2')")
        if match.group("name"):
            names.add(match.group("name"))
        elif match.group("num"):
            ranges.append((int(match.group("num")), int(match.group("num"))))
        else:
            lo = int(match.group("lo"))
            hi = int(match.group("hi")) if match.group("hi") else None
            if hi is not None and hi < lo:
                raise ScanSelectionError(f"scan selection {raw!r}: range {item!r} runs backwards")
            ranges.append((lo, hi))
    return ScanSelection(raw, tuple(ranges), frozenset(names))


def _selector(scans: Any) -> Callable[[str], bool]:
    """Turn ``read_scans``' ``scans`` argument into a predicate on scan names."""
    if scans is None:
        return lambda name: True
    if isinstance(scans, str):
        return parse_scan_selection(scans)
    if callable(scans):
        return scans
    if isinstance(scans, (int, np.integer)):
        scans = [scans]
    names: set[str] = set()
    ranges: list[tuple[int, int | None]] = []
    for item in scans:  # any iterable: set, list, tuple, OmegaConf ListConfig
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            ranges.append((int(item), int(item)))
            continue
        sub = parse_scan_selection(str(item))
        if sub.everything:
            return sub
        names |= sub.names
        ranges.extend(sub.ranges)
    return ScanSelection(repr(scans), tuple(ranges), frozenset(names))


# -- scans ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanInfo:
    """What planning needs to know about one scan, from metadata only.

    ``problem`` is a human-readable reason the scan cannot be reduced (missing detector, wrong
    rank, monitor length mismatch ...), None when it can. An unfinished scan (``finished`` False,
    no ``end_time``) is pending, not a problem: the next run picks it up.
    """

    dataset: Path
    scan: str
    title: str
    finished: bool
    nframes: int | None
    frame_shape: tuple[int, int] | None
    frame_dtype: str | None
    has_monitor: bool
    energy_kev: float | None
    wavelength_m: float | None
    problem: str | None = None
    nbands: int | None = None  # bands per point of a rank-4 detector dataset (reduction.io.bands); None: 3-D


def _open_id(group: h5py.Group, path: str) -> Any:
    """The low-level object at ``path`` under ``group``, or None where it cannot be opened.

    Planning opens a few objects in each of thousands of scans: HDF5's own open is about half the
    cost of h5py's high-level ``group.get`` (which also builds a File and a Dataset wrapper).
    """
    try:
        return h5py.h5o.open(group.id, path.encode())
    except (KeyError, OSError, RuntimeError, ValueError):
        return None


def _dataset(group: h5py.Group, path: str) -> h5py.Dataset | None:
    oid = _open_id(group, path)
    return h5py.Dataset(oid) if isinstance(oid, h5py.h5d.DatasetID) else None


def _text(group: h5py.Group, name: str) -> str:
    obj = _dataset(group, name)
    if obj is None:
        return ""
    value = obj[()]
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else b""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _scalar(obj: h5py.Dataset | None) -> float | None:
    if obj is None or obj.dtype.kind not in "iuf" or obj.size < 1:
        return None
    value = float(np.asarray(obj[()]).ravel()[0])
    return value if np.isfinite(value) and value > 0 else None


def _units(obj: h5py.Dataset) -> str:
    units = obj.attrs.get("units", "")
    if isinstance(units, bytes):
        units = units.decode("utf-8", "replace")
    return str(units).strip()


_ENERGY_TO_KEV = {"": 1.0, "kev": 1.0, "ev": 1e-3, "mev": 1e3}
_WAVELENGTH_TO_M = {"": 1e-10, "a": 1e-10, "å": 1e-10, "angstrom": 1e-10, "angstroms": 1e-10, "nm": 1e-9,
                    "m": 1.0, "pm": 1e-12}


def _energy(entry: h5py.Group) -> tuple[float | None, float | None]:
    """(energy in keV, wavelength in m) of the scan's monochromator, None where absent or unreadable."""
    energy = wavelength = None
    obj = _dataset(entry, "instrument/monochromator/energy")
    value = _scalar(obj)
    if value is not None:
        factor = _ENERGY_TO_KEV.get(_units(obj).lower())
        energy = None if factor is None else value * factor
    obj = _dataset(entry, "instrument/monochromator/wavelength")
    value = _scalar(obj)
    if value is not None:
        factor = _WAVELENGTH_TO_M.get(_units(obj).lower())
        wavelength = None if factor is None else value * factor
    if energy is not None and wavelength is None:
        wavelength = HC_KEV_ANGSTROM / energy * 1e-10
    elif wavelength is not None and energy is None:
        energy = HC_KEV_ANGSTROM / (wavelength * 1e10)
    return energy, wavelength


def _link_problem(file: h5py.File, path: str, depth: int = 0) -> str:
    """Why the object at ``path`` cannot be opened: absent, or a dangling soft / external link."""
    parent, _, name = path.rpartition("/")
    group = file.get(parent or "/")
    if not isinstance(group, h5py.Group):
        return f"no group {parent}"
    try:
        link = group.get(name, getlink=True)
    except (KeyError, OSError, RuntimeError) as exc:
        return f"cannot read the link {path} ({_why(exc)})"
    if link is None:
        return f"no {path}"
    if isinstance(link, h5py.SoftLink):
        target = link.path if link.path.startswith("/") else f"{parent}/{link.path}"
        if depth > 8:
            return f"{path} is a soft link loop"
        return f"{path} is a soft link to {link.path}: " + _link_problem(file, target, depth + 1)
    if isinstance(link, h5py.ExternalLink):
        target = _resolve(Path(file.filename), link.filename)
        if not target.exists():
            return f"{path} is an external link to {target}, which does not exist"
        try:
            with h5py.File(target, "r", locking=False) as ext:
                if not isinstance(ext.get(link.path), h5py.Dataset):
                    return f"{path} is an external link to {target}::{link.path}, which has no such dataset"
        except OSError as exc:
            return (f"{path} is an external link to {target}, which cannot be opened ({_why(exc)}): "
                    "truncated or corrupt")
        return f"{path} is an external link to {target}::{link.path}, which cannot be opened"
    return f"{path} cannot be opened"


def _scan_info(f: h5py.File, dataset: Path, name: str, detector: str, monitor: str | None,
               frame_band: FrameBand = ALL) -> ScanInfo:
    entry = f[name]
    finished = "end_time" in entry
    title = _text(entry, "title")
    energy, wavelength = _energy(entry)
    info: dict[str, Any] = dict(dataset=dataset, scan=name, title=title, finished=finished, nframes=None,
                                frame_shape=None, frame_dtype=None, has_monitor=False, energy_kev=energy,
                                wavelength_m=wavelength)
    where = f"/{name}/measurement"
    meas = entry.get("measurement")
    if not isinstance(meas, h5py.Group):
        return ScanInfo(**info, problem=f"no {where} group")
    det = _open_id(meas, detector)  # low level: shape and dtype without h5py's wrappers
    if det is None:
        problem = _link_problem(f, f"{where}/{detector}")
        if problem == f"no {where}/{detector}":
            problem = f"no detector '{detector}' under {where}"
        return ScanInfo(**info, problem=problem)
    if not isinstance(det, h5py.h5d.DatasetID):
        return ScanInfo(**info, problem=f"{where}/{detector} is a group, not a dataset of frames")
    shape = det.shape
    if len(shape) not in (3, 4):
        return ScanInfo(**info, problem=f"measurement/{detector} is {len(shape)}-D with shape {shape}: "
                                        "expected (nframes, ny, nx) or (points, band, ny, nx)")
    layout = BandLayout.of(shape, frame_band)
    info.update(nframes=layout.nframes, frame_shape=(int(shape[-2]), int(shape[-1])), frame_dtype=det.dtype.name,
                nbands=layout.nbands)
    if layout.problem():
        return ScanInfo(**info, problem=f"{where}/{detector} {tuple(shape)}: {layout.problem()}")
    if monitor:
        mon = _open_id(meas, monitor)
        if mon is None:
            problem = _link_problem(f, f"{where}/{monitor}")
            if problem == f"no {where}/{monitor}":
                problem = f"no monitor counter '{monitor}' under {where}"
            return ScanInfo(**info, problem=problem)
        if not isinstance(mon, h5py.h5d.DatasetID) or len(mon.shape) != 1:
            what = "a group" if not isinstance(mon, h5py.h5d.DatasetID) else f"{len(mon.shape)}-D"
            return ScanInfo(**info, problem=f"monitor '{monitor}' ({where}/{monitor}) is {what}: expected "
                                            "one value per frame")
        info["has_monitor"] = True
        if mon.shape[0] != shape[0]:
            what = "points" if layout.banded else "frames"
            return ScanInfo(**info, problem=f"monitor '{monitor}' has {mon.shape[0]} values for {shape[0]} {what}")
    if shape[0] == 0:
        return ScanInfo(**info, problem=f"{where}/{detector} has no frames")
    return ScanInfo(**info)


def scan_names(f: h5py.File) -> list[str]:
    """The scan entries of an open master file ("1.1", "2.1", "1.2" ...), sorted numerically."""
    return sorted((k for k in f.keys() if _SCAN_NAME.match(k)), key=scan_key)


def missing_names(dataset: str | os.PathLike[str], scans: Sequence[str],
                  names: dict[str, str | None]) -> list[tuple[str, str]]:
    """(role, message) for each name (role → name, e.g. ``{"detector": "pilatus"}``; None skipped) absent
    from ``/<scan>/measurement`` in every one of ``scans`` of ``dataset`` (a scan without the detector,
    an alignment scan say, is that scan's problem, not the campaign's), listing what the first scan
    holds (its detectors, the 3-D datasets, or its counters). A link whose target is missing is
    present: its file is what fails, chunk by chunk."""
    absent = {role: name for role, name in names.items() if name}
    sampled: tuple[str, dict[str, list[str]]] | None = None  # the first scan and what it holds
    with open_raw(dataset) as f:
        for scan in scans:
            meas = f.get(f"{scan}/measurement")
            if not isinstance(meas, h5py.Group):
                continue  # the scan's own problem, reported with the scan
            there = sorted(meas.keys())
            if sampled is None:
                ids = {n: _open_id(meas, n) for n in there}
                frames = [n for n, i in ids.items() if isinstance(i, h5py.h5d.DatasetID) and len(i.shape) in (3, 4)]
                sampled = scan, {"detector": frames, "monitor": [n for n in there if n not in frames]}
            absent = {role: name for role, name in absent.items() if name not in there}
            if not absent:
                return []
    if sampled is None:
        return []
    first, held = sampled
    scope = f"scan {first}" if len(scans) == 1 else f"any of the {len(scans)} scans sampled ({first}, ...)"
    out = []
    for role, name in absent.items():
        shown = held.get(role, [])
        listed = ", ".join(shown[:30]) + (f", ... ({len(shown) - 30} more)" if len(shown) > 30 else "")
        what = "detectors (frame datasets)" if role == "detector" else "counters"
        out.append((role, f"no {role} {name!r} in {scope} of {dataset} (/{first}/measurement holds {what}: "
                          f"{listed or 'none'})"))
    return out


def read_scans(dataset: str | os.PathLike[str], detector: str, monitor: str | None = None,
               scans: Any = None, frame_band: FrameBand = ALL) -> list[ScanInfo]:
    """Describe the scans of a dataset master file, from metadata only (no frames, no lima files).

    Parameters
    ----------
    dataset
        The master file.
    detector
        Name of the detector under ``/<scan>/measurement``.
    monitor
        Name of the monitor counter under ``/<scan>/measurement``, or None.
    scans
        Which scans: None or ``"all"``; a selection string (``"1-20,25"``, see
        :func:`parse_scan_selection`); a :class:`ScanSelection` or any predicate on scan names;
        or a collection of scan numbers (ints) and names (``"1.2"``).
    frame_band
        Which frames of a rank-4 detector dataset ``(points, band, ny, nx)``: ``"all"``, ``"sum"`` or
        a band index (:mod:`reduction.io.bands`); it sets ``nframes``. An index out of range is the
        scan's ``problem``.

    Returns
    -------
    list of ScanInfo
        Sorted numerically ("2.1" before "10.1"). Scans that cannot be reduced carry a ``problem``;
        unfinished scans have ``finished`` False.

    Raises
    ------
    RawDataPending
        The master file cannot be opened yet: it is empty, or an HDF5 file modified in the last minute.
    RawDataError
        The master file cannot be opened (missing, truncated, not HDF5).
    ScanSelectionError
        ``scans`` is a string that is not a valid selection.
    """
    path = Path(os.path.abspath(dataset))
    selected = _selector(scans)
    monitor = monitor or None
    out: list[ScanInfo] = []
    with _open_dataset(path) as f:
        for name in scan_names(f):
            if not selected(name):
                continue
            try:
                out.append(_scan_info(f, path, name, detector, monitor, frame_band))
            except (OSError, KeyError, RuntimeError, ValueError) as exc:  # a damaged entry: that scan only
                out.append(ScanInfo(path, name, "", True, None, None, None, False, None, None,
                                    problem=f"cannot read the metadata of /{name} ({_why(exc)})"))
    return out


# -- frames -----------------------------------------------------------------------------------------
def _resolve(master: Path, file_name: str) -> Path:
    """The path HDF5 opens for a VDS source or external link ``file_name`` of ``master``.

    "." is the master itself; absolute names are used as they are; relative names are looked up
    under ``$HDF5_VDS_PREFIX`` (with ``${ORIGIN}`` = the master's folder) when set, then in the
    master file's folder, as HDF5 does.
    """
    if file_name == ".":
        return master
    if os.path.isabs(file_name):
        return Path(file_name)
    folder = master.parent
    prefix = os.environ.get("HDF5_VDS_PREFIX")
    if prefix:
        for part in prefix.split(os.pathsep):
            candidate = Path(part.replace("${ORIGIN}", str(folder))) / file_name
            if candidate.exists():
                return Path(os.path.normpath(candidate))
    return Path(os.path.normpath(folder / file_name))


def _rows(space: h5py.h5s.SpaceID) -> np.ndarray | None:
    """Indices along axis 0 that a regular hyperslab selection covers, in selection order, else None."""
    if space.get_select_type() != h5py.h5s.SEL_HYPERSLABS or not space.is_regular_hyperslab():
        return None
    start, stride, count, block = space.get_regular_hyperslab()
    if count[0] >= _UNLIMITED or block[0] >= _UNLIMITED:
        return None
    return (start[0] + stride[0] * np.arange(count[0])[:, None] + np.arange(block[0])[None, :]).ravel()


def _bounds(space: h5py.h5s.SpaceID) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    try:
        return space.get_select_bounds()
    except (ValueError, RuntimeError, OSError):  # "all" selection of a source whose extent is unknown yet
        return None


@dataclass(frozen=True)
class _Need:
    """What one VDS mapping needs of its source to give the frames [start, stop)."""

    file: Path
    dset: str
    rows: int  # the source dataset must have at least this many frames
    frame: tuple[int, ...] | None  # exact frame shape required ("all" selections), else minimum bounds
    exact: bool


def _needs(vds: h5py.Dataset, master: Path, start: int, stop: int) -> list[_Need]:
    """The sources of a virtual dataset that map into frames [start, stop), and what each must hold."""
    needs: list[_Need] = []
    for vmap in vds.virtual_sources():
        if "%b" in vmap.file_name or "%b" in vmap.dset_name:
            continue  # printf-style (unlimited) mapping: sources are not listed, HDF5 resolves them
        vrows = _rows(vmap.vspace)
        vbounds = _bounds(vmap.vspace)
        if vbounds is None:
            continue
        (v_lo, *_), (v_hi, *_) = vbounds
        if vrows is not None:  # regular mapping: the ordinals (rows of this mapping) that fall in range
            hits = np.flatnonzero((vrows >= start) & (vrows < stop))
            if hits.size == 0:
                continue
        else:  # irregular: the whole mapping is needed as soon as its bounds meet the range
            if v_hi < start or v_lo >= stop:
                continue
            hits = None
        frame_extent = tuple(int(hi - lo + 1) for lo, hi in zip(vbounds[0][1:], vbounds[1][1:]))
        src = vmap.src_space
        if src.get_select_type() == h5py.h5s.SEL_ALL:  # row k of the mapping is row k of the source
            rows = int(hits[-1]) + 1 if hits is not None else int(v_hi - v_lo) + 1
            need = _Need(_resolve(master, vmap.file_name), vmap.dset_name, rows, frame_extent, True)
        else:
            srows = _rows(src)
            sbounds = _bounds(src)
            if srows is not None and hits is not None and vrows is not None and len(srows) == len(vrows):
                rows = int(srows[hits].max()) + 1
            elif sbounds is not None:
                rows = int(sbounds[1][0]) + 1
            else:
                rows = 0
            frame = tuple(int(hi) + 1 for hi in sbounds[1][1:]) if sbounds is not None else None
            need = _Need(_resolve(master, vmap.file_name), vmap.dset_name, rows, frame, False)
        needs.append(need)
    return needs


def _check_sources(needs: list[_Need], where: str, start: int, stop: int) -> None:
    """Raise RawDataError naming the first lima file that cannot give what the mapping needs."""
    by_file: dict[Path, list[_Need]] = {}
    for need in needs:
        by_file.setdefault(need.file, []).append(need)
    for path, file_needs in by_file.items():
        what = f"source of frames [{start}, {stop}) of {where}"
        if not path.exists():
            raise RawDataError(f"{path}: file not found ({what}); HDF5 would silently read zeros in its place")
        try:
            src = h5py.File(path, "r", locking=False)
        except OSError as exc:
            raise RawDataError(f"{path}: cannot open as HDF5 ({_why(exc)}); the file is truncated or corrupt "
                               f"({what})") from None
        with src:
            for need in file_needs:
                try:
                    dset = src.get(need.dset)
                except (OSError, KeyError, RuntimeError) as exc:
                    raise RawDataError(f"{path}: cannot open {need.dset} ({_why(exc)}); the file is corrupt "
                                       f"({what})") from None
                if not isinstance(dset, h5py.Dataset):
                    raise RawDataError(f"{path}: no dataset {need.dset} ({what})")
                shape = dset.shape
                if len(shape) < 1 or shape[0] < need.rows:
                    have = shape[0] if shape else 0
                    raise RawDataError(f"{path}: {need.dset} has {have} frames, the virtual dataset needs "
                                       f"{need.rows} ({what}); the file is incomplete")
                if need.frame is not None:
                    frame = tuple(shape[1:])
                    bad = frame != need.frame if need.exact else (
                        len(frame) != len(need.frame) or any(h < n for h, n in zip(frame, need.frame)))
                    if bad:
                        raise RawDataError(f"{path}: {need.dset} has frames of shape {frame}, the virtual "
                                           f"dataset maps {need.frame} ({what})")


def _detector(f: h5py.File, dataset: Path, scan: str, detector: str) -> h5py.Dataset:
    if scan not in f:
        raise RawDataError(f"{dataset}: no scan {scan}")
    path = f"/{scan}/measurement/{detector}"
    problem: str | None
    try:
        dset = f.get(path)
    except (OSError, RuntimeError) as exc:
        dset, problem = None, f"cannot open {path} ({_why(exc)})"
    else:
        problem = None
    if dset is None:
        problem = problem or _link_problem(f, path)
        raise RawDataError(f"{dataset} scan {scan}: {problem}")
    if not isinstance(dset, h5py.Dataset) or dset.ndim not in (3, 4):
        raise RawDataError(f"{dataset} scan {scan}: {path} is not a (nframes, ny, nx) or (points, band, ny, nx) "
                           "dataset")
    return dset


def _file_of(dset: h5py.Dataset) -> Path:
    return Path(dset.file.filename)


def frame_sources(dataset: str | os.PathLike[str], scan: str, detector: str, start: int = 0,
                  stop: int | None = None, frame_band: FrameBand = ALL) -> list[Path]:
    """Check and list the files that hold frames [start, stop) of a scan (lima files, or the master).

    Every source of a virtual dataset that maps into the range must exist, open, hold the dataset
    and have the frames the mapping needs; an external link's target must open and be long enough.
    Raises RawDataError naming the file at fault. Frames are counted as ``frame_band`` says
    (:mod:`reduction.io.bands`).
    """
    path = Path(os.path.abspath(dataset))
    with open_raw(path) as f:
        dset = _detector(f, path, scan, detector)
        return _sources(dset, path, scan, detector, start, stop, _layout(dset, path, scan, frame_band))


def band_layout(dataset: str | os.PathLike[str], scan: str, detector: str, frame_band: FrameBand = ALL) -> BandLayout:
    """How the frames of a scan map onto its detector dataset (points, bands) under ``frame_band``;
    RawDataError naming the scan when the band is out of range or the dataset cannot be read."""
    path = Path(os.path.abspath(dataset))
    with open_raw(path) as f:
        return _layout(_detector(f, path, scan, detector), path, scan, frame_band)


def _layout(dset: h5py.Dataset, path: Path, scan: str, frame_band: FrameBand) -> BandLayout:
    layout = BandLayout.of(dset.shape, frame_band)
    problem = layout.problem()
    if problem:
        raise RawDataError(f"{path} scan {scan}: {dset.name} {dset.shape}: {problem}")
    return layout


def _sources(dset: h5py.Dataset, path: Path, scan: str, detector: str, start: int, stop: int | None,
             layout: BandLayout) -> list[Path]:
    where = f"{path} scan {scan} /{scan}/measurement/{detector}"
    n = layout.nframes
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        held = "" if dset.is_virtual or _file_of(dset) == path else f" in {_file_of(dset)}"
        raise RawDataError(f"{where}: frames [{start}, {stop}) are out of range: the scan has {n} frames{held}")
    start, stop = layout.point_range(start, stop)  # rows of the dataset's first axis
    if dset.is_virtual:
        needs = _needs(dset, path, start, stop)
        _check_sources(needs, where, start, stop)
        return sorted({need.file for need in needs})
    return [_file_of(dset)]


def read_frames(dataset: str | os.PathLike[str], scan: str, detector: str, start: int, stop: int,
                frame_band: FrameBand = ALL) -> np.ndarray:
    """Frames [start, stop) of a scan, shape (n, ny, nx), in the detector's own dtype (sums of bands:
    int64 or float64).

    A rank-4 detector dataset ``(points, band, ny, nx)`` gives the frames ``frame_band`` selects
    (:mod:`reduction.io.bands`): all of them point-major, one band, or the sum of each point's bands.

    The sources are checked first (:func:`frame_sources`). Frames stored one per compressed chunk
    are then read as raw chunks and decompressed in threads (:mod:`reduction.io.direct`); any other
    layout, or a chunk that does not decode, is read in one call through h5py (HDF5 + hdf5plugin).
    Raises RawDataError naming the master file, the scan, the dataset path and, where one is at
    fault, the lima file (missing, truncated, too short, corrupt chunk).
    """
    path = Path(os.path.abspath(dataset))
    with open_raw(path) as f:
        dset = _detector(f, path, scan, detector)
        layout = _layout(dset, path, scan, frame_band)
        _sources(dset, path, scan, detector, start, stop, layout)
        return _read(dset, path, scan, detector, start, stop, layout)


def read_frames_compressed(dataset: str | os.PathLike[str], scan: str, detector: str, start: int,
                           stop: int, frame_band: FrameBand = ALL) -> CompressedFrames | np.ndarray:
    """Frames [start, stop) as their raw bitshuffle-LZ4 chunks, not decompressed, where every frame is
    one such chunk (:func:`reduction.io.direct.read_compressed`: for an engine that decompresses on
    its device); else the frames as :func:`read_frames` gives them (sums of bands always: they are
    made on the host). Raises as :func:`read_frames`."""
    path = Path(os.path.abspath(dataset))
    with open_raw(path) as f:
        dset = _detector(f, path, scan, detector)
        layout = _layout(dset, path, scan, frame_band)
        _sources(dset, path, scan, detector, start, stop, layout)
        chunks = None
        if not (layout.banded and layout.selection == SUM):
            chunks = read_compressed(dset, start, stop, resolve=lambda name: _resolve(path, name), open_file=open_raw,
                                     band=_band_of(layout))
        return chunks if chunks is not None else _read(dset, path, scan, detector, start, stop, layout)


def _band_of(layout: BandLayout) -> int | None:
    """``band`` of the direct-chunk readers: the index selected, None for the flattened sequence."""
    return layout.selection if isinstance(layout.selection, int) else None


def _read(dset: h5py.Dataset, path: Path, scan: str, detector: str, start: int, stop: int,
          layout: BandLayout) -> np.ndarray:
    """Frames [start, stop) of a checked detector dataset: direct-chunk reads, else h5py."""
    if layout.banded and layout.selection == SUM:  # every band of points [start, stop), summed
        nbands = int(dset.shape[1])
        flat = _read(dset, path, scan, detector, start * nbands, stop * nbands, BandLayout.of(dset.shape, ALL))
        bands = flat.reshape(stop - start, nbands, *flat.shape[1:])
        return bands.sum(axis=1, dtype=np.int64 if bands.dtype.kind in "iub" else np.float64)
    band = _band_of(layout) if layout.banded else None
    frames = read_direct(dset, start, stop, resolve=lambda name: _resolve(path, name), open_file=open_raw, band=band)
    if frames is not None:
        return frames
    try:
        if not layout.banded:
            return dset[start:stop]
        if band is not None:
            return dset[start:stop, band]
        p0, p1 = layout.point_range(start, stop)
        rows = dset[p0:p1]
        nbands = int(dset.shape[1])
        return rows.reshape(-1, *rows.shape[2:])[start - p0 * nbands:stop - p0 * nbands]
    except (OSError, RuntimeError, ValueError) as exc:
        p0, p1 = layout.point_range(start, stop)
        raise _read_error(dset, path, scan, detector, p0, p1, exc) from None


def _read_error(dset: h5py.Dataset, path: Path, scan: str, detector: str, start: int, stop: int,
                exc: BaseException) -> RawDataError:
    """Find which file made a read fail (HDF5's message does not say) and describe it."""
    where = f"{path} scan {scan} /{scan}/measurement/{detector} frames [{start}, {stop})"
    if dset.is_virtual:
        for need in _needs(dset, path, start, stop):
            frame = None
            try:
                with h5py.File(need.file, "r", locking=False) as src:
                    data = src[need.dset]
                    for frame in range(min(need.rows, data.shape[0])):  # one by one, to name the bad frame
                        data[frame]
            except (OSError, RuntimeError, ValueError, KeyError) as inner:
                what = need.dset if frame is None else f"frame {frame} of {need.dset}"
                return RawDataError(f"{need.file}: cannot read {what} ({_why(inner)}); the file is corrupt "
                                    f"(source of {where})")
    return RawDataError(f"{_file_of(dset)}: cannot read {where} ({_why(exc)}); the file is corrupt")


# -- counters ---------------------------------------------------------------------------------------
def read_counter(dataset: str | os.PathLike[str], scan: str, counter: str, start: int = 0,
                 stop: int | None = None, layout: BandLayout | None = None) -> np.ndarray:
    """Values [start, stop) of the 1-D counter ``/<scan>/measurement/<counter>`` (e.g. the monitor).

    With the ``layout`` of a rank-4 detector dataset (:func:`band_layout`), [start, stop) are frames
    and each gets the value of its point (BLISS counts once per point, whatever the bands).
    Raises RawDataError naming the file, scan and counter when it is missing, not 1-D, too short
    or unreadable.
    """
    if layout is not None and layout.banded and stop is not None:
        p0, p1 = layout.point_range(start, stop)
        return read_counter(dataset, scan, counter, p0, p1)[layout.points(start, stop) - p0]
    path = Path(os.path.abspath(dataset))
    where = f"/{scan}/measurement/{counter}"
    with open_raw(path) as f:
        if scan not in f:
            raise RawDataError(f"{path}: no scan {scan}")
        try:
            obj = f.get(where)
        except (OSError, RuntimeError) as exc:
            raise RawDataError(f"{path} scan {scan}: cannot open {where} ({_why(exc)})") from None
        if obj is None:
            raise RawDataError(f"{path} scan {scan}: {_link_problem(f, where)}")
        if not isinstance(obj, h5py.Dataset) or obj.ndim != 1:
            raise RawDataError(f"{path} scan {scan}: counter {where} is not a 1-D dataset")
        n = obj.shape[0]
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            raise RawDataError(f"{path} scan {scan}: counter {where} has {n} values, frames [{start}, {stop}) "
                               "were asked for")
        try:
            return obj[start:stop]
        except (OSError, RuntimeError) as exc:
            raise RawDataError(f"{path} scan {scan}: cannot read {where} ({_why(exc)})") from None
