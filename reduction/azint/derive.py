"""New NXazint master files derived from one: re-binned (``xreduce rebin``) or frames summed
(``xreduce sum``), from the accumulators the master stores (the science is :mod:`.rebin`).

The new file is written beside nothing it replaces: under a temporary name, renamed into place,
never over the source, and over an existing file only when asked. Each entry keeps the source
entry's description (title, flags, instrument) and gets a new ``reduction`` NXprocess whose
``input`` holds the source's reduction parameters plus ``operation``, ``source_file`` and
``source_entries``; per-frame data are copied (never virtual datasets: the new file stands alone).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from reduction.errors import InputError, IntegrationError
from reduction.io.files import atomic_output, written_as
from reduction.io.nexus import PROGRAM, attr_text, now, nx_group, open_readonly, str_array

from .rebin import Accumulators, add_frames, bin_centres, coarse_edges, frames_total, missing_frames, rebin

__all__ = ["rebin_master", "sum_master", "master_entries", "parse_frames", "read_accumulators"]

DEFINITIONS = ("NXazint1d", "NXazint2d")
_ACC = ("signal", "variance", "normalization", "count")
_BLOCK_BYTES = 64 << 20  # per accumulator read at once
_KEEP_FOR_SUM = ("title", "definition", "solid_angle_applied", "polarization_applied", "normalization_applied",
                 "monitor_applied", "instrument")


# -- reading ----------------------------------------------------------------------------------
def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def master_entries(f: h5py.File, source: Path, names: Sequence[str] | None) -> list[h5py.Group]:
    """The NXazint entries of an open master (those named, in that order), each checked to hold
    accumulators; InputError naming the file and entry otherwise."""
    found = {name: g for name, g in f.items() if isinstance(g, h5py.Group) and attr_text(g, "NX_class") == "NXentry"
             and "definition" in g and _text(g["definition"][()]) in DEFINITIONS}
    if not found:
        raise InputError(f"{source} is not an NXazint master file: it has no NXentry with definition "
                         f"{' or '.join(DEFINITIONS)}")
    unknown = [n for n in (names or []) if n not in found]
    if unknown:
        raise InputError(f"{source} has no NXazint entry {', '.join(unknown)}; its entries: {', '.join(found)}")
    entries = [found[n] for n in names] if names else list(found.values())
    for entry in entries:
        missing = [k for k in ("signal", "normalization", "count") if k not in entry.get("accumulators", {})]
        if missing:
            raise InputError(f"{source} entry {entry.name.lstrip('/')} has no accumulators/{', '.join(missing)}: "
                             "it cannot be re-binned or summed exactly")
    return entries


def _frame_blocks(entry: h5py.Group, start: int, stop: int) -> Iterator[tuple[int, int]]:
    frame_bytes = 8 * int(np.prod(entry["accumulators/signal"].shape[1:]))
    step = max(1, _BLOCK_BYTES // max(frame_bytes, 1))
    for b0 in range(start, stop, step):
        yield b0, min(b0 + step, stop)


def read_accumulators(entry: h5py.Group, start: int = 0, stop: int | None = None) -> Accumulators:
    """Frames [start, stop) of an entry's accumulators, in float64."""
    acc = entry["accumulators"]
    sl = slice(start, stop)
    def read(name: str) -> np.ndarray:
        return np.asarray(acc[name][sl], dtype=np.float64)

    return Accumulators(read("signal"), read("variance") if "variance" in acc else None, read("normalization"),
                        read("count"))


def parse_frames(text: str | None) -> tuple[int | None, int | None]:
    """``"A:B"``, ``"A:"``, ``":B"`` or ``"A"`` (frame A alone) → (start, stop), Python-slice style."""
    if not text:
        return None, None
    a, sep, b = text.partition(":")
    try:
        start = int(a) if a.strip() else None
        stop = (int(b) if b.strip() else None) if sep else (start + 1 if start is not None else None)
    except ValueError:
        raise InputError(f"--frames {text!r}: expected START:STOP (frame numbers from 0, STOP excluded)") from None
    if (start is not None and start < 0) or (stop is not None and stop < 0):
        raise InputError(f"--frames {text!r}: frame numbers start at 0")
    return start, stop


# -- writing ----------------------------------------------------------------------------------
def _copy(src: h5py.Group | h5py.Dataset, parent: h5py.Group, name: str) -> None:
    """Copy a group or dataset with its attributes, reading the values (a virtual dataset becomes data)."""
    if isinstance(src, h5py.Group):
        group = parent.create_group(name, track_order=True)
        group.attrs.update(dict(src.attrs))
        for child, obj in src.items():
            if obj is not None:
                _copy(obj, group, child)
    else:
        parent.create_dataset(name, data=src[()])
        parent[name].attrs.update(dict(src.attrs))


def _prepare_output(source: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and out.resolve() == source.resolve():
        raise InputError(f"output {out} is the source file: choose another name (-o)")
    if out.exists() and not overwrite:
        raise InputError(f"output {out} exists: choose another name (-o) or pass --overwrite")


def _write(source: Path, out: Path, overwrite: bool, fill: Callable[[h5py.File, h5py.File], list[str]]) -> Path:
    """Open the source, write ``out`` atomically with ``fill(source_file, new_file)`` → entry names."""
    from reduction import __version__

    source, out = Path(source), Path(out)
    if not source.is_file():
        raise InputError(f"{source}: no such file")
    _prepare_output(source, out, overwrite)
    try:
        f = open_readonly(source)
    except OSError as exc:
        raise InputError(f"{source} is not an HDF5 file: {exc}") from None
    with f, written_as(out, "master file"), atomic_output(out) as tmp:
        with h5py.File(tmp, "w", track_order=True) as g:
            names = fill(f, g)
            g.attrs.update({"NX_class": "NXroot", "default": names[0], "file_name": out.name, "file_time": now(),
                            "creator": f"{PROGRAM} {__version__}", "HDF5_Version": h5py.version.hdf5_version,
                            "h5py_version": h5py.version.version})
    return out


def _reduction(entry: h5py.Group, sources: Sequence[h5py.Group], source: Path, operation: str,
               extra: dict[str, object]) -> None:
    """The new entry's NXprocess: the source's parameters, what was done, and from what."""
    from reduction import __version__

    first = sources[0].get("reduction")
    process = nx_group(entry, "reduction", "NXprocess")
    process["program"] = PROGRAM
    process["version"] = str(__version__)
    process["date"] = now()
    process["reference"] = _text(first["reference"][()]) if first is not None and "reference" in first else PROGRAM
    note = _text(first["note"][()]) if first is not None and "note" in first else ""
    process["note"] = (f"{operation}, from the accumulators of {os.path.abspath(source)} entries "
                      f"{', '.join(s.name.lstrip('/') for s in sources)} (never the raw data).\n{note}")
    inp = nx_group(process, "input", "NXparameters")
    if first is not None and "input" in first:
        for name, obj in first["input"].items():
            if name not in ("raw_file", "scan") or len(sources) == 1:
                _copy(obj, inp, name)
    if len(sources) > 1:  # the raw files and scans of every source entry
        for name in ("raw_file", "scan"):
            inp[name] = str_array([_text(s["reduction/input"][name][()]) if f"reduction/input/{name}" in s else ""
                                   for s in sources])
    inp["operation"] = operation
    inp["source_file"] = os.path.abspath(source)
    inp["source_entries"] = str_array([s.name.lstrip("/") for s in sources])
    for name, value in extra.items():
        inp[name] = value


def _data(entry: h5py.Group, src: h5py.Group, nframes: int, frame_shape: tuple[int, ...], radial_edges: np.ndarray,
          azimuthal_edges: np.ndarray | None, has_variance: bool) -> tuple[h5py.Group, h5py.Group]:
    """Create data/ (axes written, I and I_errors empty) and accumulators/ of a new entry."""
    two_d = azimuthal_edges is not None
    data = nx_group(entry, "data", "NXdata")
    data.attrs["signal"] = "I"
    data.attrs["axes"] = str_array([".", "azimuthal_axis", "radial_axis"] if two_d else [".", "radial_axis"])
    data.attrs["interpretation"] = "image" if two_d else "spectrum"
    shape = (nframes, *frame_shape)
    ds = data.create_dataset("I", shape=shape, dtype=np.float64)
    ds.attrs.update({"long_name": "intensity", "units": "arbitrary units"})
    if has_variance:
        ds = data.create_dataset("I_errors", shape=shape, dtype=np.float64)
        ds.attrs.update({"long_name": "estimated intensity error", "units": "arbitrary units"})
    old = src["data"]
    for name, values in (("radial_axis", bin_centres(radial_edges)), ("radial_axis_edges", radial_edges)):
        data.create_dataset(name, data=values).attrs.update(dict(old[name].attrs))
    if two_d:
        assert azimuthal_edges is not None
        for name, values in (("azimuthal_axis", bin_centres(azimuthal_edges)),
                             ("azimuthal_axis_edges", azimuthal_edges)):
            data.create_dataset(name, data=values).attrs.update(dict(old[name].attrs))
    acc = nx_group(entry, "accumulators", "NXcollection")
    for name in _ACC:
        if name == "variance" and not has_variance:
            continue
        ds = acc.create_dataset(name, shape=shape, dtype=np.float64)
        if name in src["accumulators"]:
            ds.attrs.update(dict(src["accumulators"][name].attrs))
    return data, acc


def _store(data: h5py.Group, acc_group: h5py.Group, rows: slice, acc: Accumulators) -> None:
    intensity, sigma = acc.intensity()
    data["I"][rows] = intensity
    if "I_errors" in data and sigma is not None:
        data["I_errors"][rows] = sigma
    for name in _ACC:
        value = getattr(acc, name)
        if name in acc_group and value is not None:
            acc_group[name][rows] = value


def _finish(data: h5py.Group, src: h5py.Group) -> None:
    """data/norm: the count of the first frame (as the merge writes it)."""
    ds = data.create_dataset("norm", data=data.parent["accumulators/count"][0])
    if "norm" in src["data"]:
        ds.attrs.update(dict(src["data/norm"].attrs))


# -- rebin ------------------------------------------------------------------------------------
def rebin_master(source: Path | str, out: Path | str, *, factor: int = 1, azimuthal_factor: int = 1,
                 entries: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """Write ``out``: the entries of the master ``source`` (all, or those named) with ``factor``
    adjacent radial bins and ``azimuthal_factor`` adjacent χ bins merged (:func:`.rebin.rebin`).
    InputError (naming the file and entry) for what cannot be done; returns ``out``."""
    source = Path(source)
    if factor == 1 and azimuthal_factor == 1:
        raise InputError("nothing to do: give --factor and/or --azimuthal-factor greater than 1")
    operation = f"rebin: {factor} adjacent radial bins merged" + (
        f", {azimuthal_factor} adjacent azimuthal bins merged" if azimuthal_factor != 1 else "")

    def fill(f: h5py.File, g: h5py.File) -> list[str]:
        names = []
        for src in master_entries(f, source, entries):
            name = src.name.lstrip("/")
            where = f"{source} entry {name}"
            sig = src["accumulators/signal"]
            two_d = sig.ndim == 3
            if azimuthal_factor != 1 and not two_d:
                raise InputError(f"{where}: --azimuthal-factor needs NXazint2d (cake) entries; this one is 1-D")
            try:
                radial = coarse_edges(src["data/radial_axis_edges"][()], factor)
                azimuthal = coarse_edges(src["data/azimuthal_axis_edges"][()], azimuthal_factor) if two_d else None
                frame_shape = rebin(read_accumulators(src, 0, 1), factor, azimuthal_factor).signal.shape[1:]
            except IntegrationError as exc:
                axis = "radial" if (sig.shape[-1] % factor) else "azimuthal"
                raise InputError(f"{where} ({axis} axis): {exc}") from None
            entry = nx_group(g, name, "NXentry")
            entry.attrs.update({k: v for k, v in src.attrs.items() if k != "NX_class"})
            for child, obj in src.items():
                if child not in ("data", "accumulators", "chunks", "reduction") and obj is not None:
                    _copy(obj, entry, child)
            _reduction(entry, [src], source, operation, {"rebin_factor": np.int64(factor),
                                                         "rebin_azimuthal_factor": np.int64(azimuthal_factor)})
            has_variance = "variance" in src["accumulators"]
            data, acc = _data(entry, src, sig.shape[0], frame_shape, radial, azimuthal, has_variance)
            for b0, b1 in _frame_blocks(src, 0, sig.shape[0]):
                _store(data, acc, slice(b0, b1), rebin(read_accumulators(src, b0, b1), factor, azimuthal_factor))
            for extra in ("radial_r_mm_edges",):
                if extra in src["accumulators"]:
                    edges = coarse_edges(src["accumulators"][extra][()], factor)
                    acc["radial_r_mm"], acc[extra] = bin_centres(edges), edges
            _finish(data, src)
            names.append(name)
        return names

    return _write(source, Path(out), overwrite, fill)


# -- sum --------------------------------------------------------------------------------------
@dataclass
class _Selection:
    entry: h5py.Group
    start: int
    stop: int


def _select(entries: Sequence[h5py.Group], source: Path, frames: tuple[int | None, int | None]) -> list[_Selection]:
    out = []
    for entry in entries:
        n = entry["accumulators/signal"].shape[0]
        start = 0 if frames[0] is None else frames[0]
        stop = n if frames[1] is None else frames[1]
        if not 0 <= start < stop <= n:
            raise InputError(f"{source} entry {entry.name.lstrip('/')} has {n} frames (0 to {n - 1}): frames "
                             f"{start}:{stop} are not among them")
        out.append(_Selection(entry, start, stop))
    return out


def _same_grid(selections: Sequence[_Selection], source: Path) -> None:
    """Entries summed together must share the bins, unit, splitting and corrections."""
    first = selections[0].entry
    for sel in selections[1:]:
        e = sel.entry
        for path in ("data/radial_axis_edges", "data/azimuthal_axis_edges"):
            a, b = first.get(path), e.get(path)
            if (a is None) != (b is None) or (a is not None and b is not None and not np.array_equal(a[()], b[()])):
                raise InputError(f"{source}: entries {first.name.lstrip('/')} and {e.name.lstrip('/')} have "
                                 f"other {path.split('/')[1]} bins: they cannot be summed together")
        for path in ("definition", "monitor_applied", "solid_angle_applied", "polarization_applied",
                     "reduction/input/unit", "reduction/input/splitting", "reduction/input/flat_applied"):
            a = _text(first[path][()]) if path in first else None
            b = _text(e[path][()]) if path in e else None
            if a != b:
                raise InputError(f"{source}: entries {first.name.lstrip('/')} and {e.name.lstrip('/')} differ in "
                                 f"{path} ({a} vs {b}): they cannot be summed together")


def _add_selection(sel: _Selection) -> tuple[Accumulators, int, float | None]:
    """A selection's accumulators added over its frames (block by block), the frames added, and the
    sum of their monitor values (None without a monitor); frames without a result are left out."""
    total: Accumulators | None = None
    n, monitor = 0, None if "monitor/data" not in sel.entry else 0.0
    for b0, b1 in _frame_blocks(sel.entry, sel.start, sel.stop):
        block = read_accumulators(sel.entry, b0, b1)
        part, k = add_frames(block)
        total = part if total is None else _plus(total, part)
        n += k
        if monitor is not None:
            values = np.asarray(sel.entry["monitor/data"][b0:b1], dtype=np.float64)
            monitor += float(values[~missing_frames(block)].sum())
    assert total is not None
    return total, n, monitor


def _plus(a: Accumulators, b: Accumulators) -> Accumulators:
    variance = None if a.variance is None or b.variance is None else a.variance + b.variance
    return Accumulators(a.signal + b.signal, variance, a.normalization + b.normalization, a.count + b.count)


def sum_master(source: Path | str, out: Path | str, *, entries: Sequence[str] | None = None,
               frames: str | None = None, mean: bool = False, combine: str | None = None,
               overwrite: bool = False) -> Path:
    """Write ``out``: for each entry of the master ``source`` (all, or those named), the sum (or
    ``mean``) of its frames ``frames`` ("A:B", default all) as a one-frame entry of the same name;
    with ``combine=NAME``, one entry NAME summing the frames of all the selected entries (they must
    share bins, unit, splitting and corrections). σ is propagated (:func:`.rebin.frames_total`).
    InputError (naming the file and entry) for what cannot be done; returns ``out``."""
    source = Path(source)
    span = parse_frames(frames)
    what = "mean" if mean else "sum"

    def write_one(g: h5py.File, name: str, selections: list[_Selection]) -> None:
        total: Accumulators | None = None
        n, monitor = 0, None
        for sel in selections:
            part, k, mon = _add_selection(sel)
            total = part if total is None else _plus(total, part)
            n += k
            monitor = mon if monitor is None else (monitor + mon if mon is not None else monitor)
        assert total is not None
        src = selections[0].entry
        monitor_applied = bool(src["monitor_applied"][()]) if "monitor_applied" in src else False
        ranges = [f"{s.entry.name.lstrip('/')}[{s.start}:{s.stop}]" for s in selections]
        if n == 0:
            raise InputError(f"{source}: frames {', '.join(ranges)} all have no result (their chunks failed)")
        result = frames_total(total, n, mean=mean, monitor_applied=monitor_applied)
        entry = nx_group(g, name, "NXentry")
        entry.attrs.update({k: v for k, v in src.attrs.items() if k != "NX_class"})
        for child in _KEEP_FOR_SUM:
            if child in src:
                _copy(src[child], entry, child)
        if len(selections) > 1 and "title" in entry:
            del entry["title"]
            entry["title"] = f"{what} of {', '.join(ranges)}"
        skipped = sum(s.stop - s.start for s in selections) - n
        operation = (f"{what} of {n} frames ({', '.join(ranges)}" +
                     (f"; {skipped} frames without a result left out)" if skipped else ")") +
                     ("; monitor/data is the " + what + " of their monitor" if monitor is not None else ""))
        _reduction(entry, [s.entry for s in selections], source, operation,
                   {"frames": str_array(ranges), "frames_used": np.int64(n)})
        if monitor is not None:
            group = nx_group(entry, "monitor", "NXmonitor")
            group["data"] = np.array([monitor / n if mean else monitor])  # the {what} of the frames' monitor
        radial = src["data/radial_axis_edges"][()]
        azimuthal = src["data/azimuthal_axis_edges"][()] if "azimuthal_axis_edges" in src["data"] else None
        data, acc = _data(entry, src, 1, result.signal.shape[1:], radial, azimuthal, result.variance is not None)
        _store(data, acc, slice(0, 1), result)
        for extra in ("radial_r_mm", "radial_r_mm_edges"):
            if extra in src["accumulators"]:
                _copy(src["accumulators"][extra], acc, extra)
        _finish(data, src)

    def fill(f: h5py.File, g: h5py.File) -> list[str]:
        selections = _select(master_entries(f, source, entries), source, span)
        if combine:
            _same_grid(selections, source)
            write_one(g, combine, selections)
            return [combine]
        for sel in selections:
            write_one(g, sel.entry.name.lstrip("/"), [sel])
        return [s.entry.name.lstrip("/") for s in selections]

    return _write(source, Path(out), overwrite, fill)
