"""ASCII export of an NXazint master's patterns, for Rietveld programs (GSAS-II, TOPAS, FullProf).

Two formats, one pattern per file, ``#`` header lines (numpy.loadtxt reads them back):

- ``xye``: three columns, radial, I, σ;
- ``dat``: two columns, radial and I (pyFAI's 1-D ASCII style).

The header names the source file and entry, the radial unit, the wavelength and energy, and the
frames. Per entry either the sum of its frames (``frames="sum"``: :func:`.rebin.frames_total`,
the reduction of the summed raw frame) in ``<entry>.<fmt>``, or every frame (``"each"``) in
``<entry>_<frame:05d>.<fmt>``. A 2-D entry is written as its azimuthal average, Σsignal / Σnormalization
over χ (exact: the accumulators add). Bins no pixel reaches are left out (a NaN row would stop most
Rietveld programs); the header says how many. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from reduction.errors import InputError
from reduction.io.files import atomic_output, written_as
from reduction.io.nexus import attr_value, open_readonly
from reduction.step import EXPORT_FORMATS, EXPORT_FRAMES

from .derive import master_entries, read_accumulators
from .rebin import Accumulators, add_frames, frames_total, missing_frames

__all__ = ["FORMATS", "FRAMES", "export_master"]

FORMATS, FRAMES = EXPORT_FORMATS, EXPORT_FRAMES


def _text(value: object) -> str:
    return str(attr_value(value))


def _azimuthal_average(acc: Accumulators) -> Accumulators:
    """2-D (frames, nχ, nRad) accumulators added over χ (nan-aware: χ bins no pixel reaches)."""
    if acc.signal.ndim < 3:
        return acc
    missing = missing_frames(acc)[:, None]  # failed frames stay NaN (all-NaN sums would read 0)
    return acc.map(lambda a: np.where(missing, np.nan, np.nansum(a, axis=1)))


def _frame(acc: Accumulators, i: int) -> Accumulators:
    return acc.map(lambda a: a[i:i + 1])


def _header(source: Path, entry: h5py.Group, what: str, columns: str, dropped: int) -> str:
    axis = entry["data/radial_axis"]
    long_name, units = _text(axis.attrs.get("long_name", "radial")), _text(axis.attrs.get("units", ""))
    mono = entry.get("instrument/monochromator")
    wavelength = float(mono["wavelength"][()]) if mono is not None and "wavelength" in mono else float("nan")
    energy = float(mono["energy"][()]) if mono is not None and "energy" in mono else float("nan")
    unit = _text(entry["reduction/input/unit"][()]) if "reduction/input/unit" in entry else ""
    lines = [f"xreduce ASCII export of {source.resolve()} entry {entry.name.lstrip('/')}",
             f"title: {_text(entry['title'][()]) if 'title' in entry else ''}",
             f"frames: {what}",
             f"radial: {long_name} in {units}" + (f" (xreduce unit {unit})" if unit else ""),
             f"wavelength: {wavelength:.8g} angstrom", f"energy: {energy:.8g} keV",
             "intensity: arbitrary units; sigma: Poisson standard error propagated by xreduce",
             f"{dropped} bins without pixels left out" if dropped else "every bin has pixels",
             f"columns: {columns}"]
    return "\n".join(lines)


def _write(path: Path, header: str, radial: np.ndarray, intensity: np.ndarray, sigma: np.ndarray | None,
           fmt: str) -> Path:
    columns = [radial, intensity] if fmt == "dat" or sigma is None else [radial, intensity, sigma]
    with written_as(path, f"{fmt} file"), atomic_output(path) as tmp:
        np.savetxt(tmp, np.column_stack(columns), fmt="%.10g", header=header)
    return path


def export_master(master: Path | str, folder: Path | str, formats: Sequence[str], frames: str = "sum") -> list[Path]:
    """Write the patterns of every NXazint entry of ``master`` as ASCII files in ``folder``; returns
    the files written. InputError for an unknown format or frames choice, or ``xye`` from a master
    without errors (``reduction.error_model: null``)."""
    master, folder = Path(master), Path(folder)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"merge.export: unknown format {', '.join(unknown)} (known: {', '.join(FORMATS)})")
    if frames not in FRAMES:
        raise InputError(f"merge.export_frames={frames!r} must be one of {', '.join(FRAMES)}")
    written: list[Path] = []
    with open_readonly(master) as f:
        for entry in master_entries(f, master, None):
            name = entry.name.lstrip("/")
            if "xye" in formats and "variance" not in entry["accumulators"]:
                raise InputError(f"{master} entry {name} has no errors (reduction.error_model: null): "
                                 "xye needs them; export dat instead")
            acc = _azimuthal_average(read_accumulators(entry))
            radial = entry["data/radial_axis"][()]
            monitor_applied = bool(entry["monitor_applied"][()]) if "monitor_applied" in entry else False
            if frames == "sum":
                total, n = add_frames(acc)
                if n == 0:
                    continue  # every frame failed: nothing to write (the merge says which)
                summed = frames_total(total, n, mean=False, monitor_applied=monitor_applied)
                patterns = [(f"{name}", f"sum of {n} frames", summed)]
            else:
                missing = missing_frames(acc)
                patterns = [(f"{name}_{i:05d}", f"frame {i}", _frame(acc, i))
                            for i in range(acc.signal.shape[0]) if not missing[i]]
            for stem, what, pattern in patterns:
                intensity, sigma = pattern.intensity()
                keep = np.isfinite(intensity[0])
                for fmt in formats:
                    columns = "radial I" if fmt == "dat" else "radial I sigma"
                    header = _header(master, entry, what, columns, int((~keep).sum()))
                    written.append(_write(folder / f"{stem}.{fmt}", header, radial[keep], intensity[0][keep],
                                          None if sigma is None else sigma[0][keep], fmt))
    return written
