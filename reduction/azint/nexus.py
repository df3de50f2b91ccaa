"""Merge chunk result files into one NeXus master file per experiment, and its PNG preview.

One NXentry per (dataset, scan), each an NXazint1d / NXazint2d application definition
(nexusformat/definitions v2025.11+); the frame axis of every per-frame dataset stitches the
scan's chunk files together:

- ``mode="vds"`` (default): HDF5 virtual datasets whose sources are the chunk files, named by
  paths *relative to the master's folder* (HDF5 resolves them from there), so moving the whole
  output folder keeps the master readable; the chunk files must stay beside it.
- ``mode="copy"``: the data are copied in; the master is self-contained.

Frames whose chunk failed (or is missing, or is not what the plan says) read as NaN in every
float dataset — never as zeros — and are listed in the entry (``<entry>/chunks``) and in the
returned :class:`MergeReport`.

Layout of one entry (``*`` = per frame, [nImg, ...])::

    <entry>                       NXentry  @default="data"
      definition                  "NXazint1d" | "NXazint2d"
      title, solid_angle_applied, polarization_applied, normalization_applied, monitor_applied
      instrument                  NXinstrument: name (beamline)
        monochromator             NXmonochromator: wavelength (angstrom), energy (keV)
        source                    NXsource: name, type, probe
      reduction                   NXprocess: program, version, date, reference, note
        input                     NXparameters: config (JSON), poni, raw_file, scan, chunk_ids, ...
      monitor                     NXmonitor: data*          (when a monitor counter was used)
      frame_bands                 NXcollection: point*, band* (rank-4 raw frames, reduction.io.bands)
      data                        NXdata @signal=I @axes @interpretation
        I*, I_errors*, radial_axis, radial_axis_edges, norm, (2-D: azimuthal_axis, azimuthal_axis_edges)
      accumulators                NXcollection: signal*, variance*, normalization*, count*
      chunks                      NXcollection: chunk_id, file, frames, status, missing_frames,
                                  missing_chunk_ids

The accumulators and the chunk table live in NXcollection groups: NeXus' container for data the
application definition does not name, which both validators accept (pynxtools stops checking
below an NXcollection; nexusformat's application validation looks only at what the definition
names).

Choices where the definition leaves room:

- ``normalization_applied`` is always true: xreduce's I is signal / normalization, i.e. divided
  by the bin's weighted pixel count, which is what the flag states; whether a flat field was part
  of the normalization is ``reduction/input/flat_applied``.
- ``data/norm`` is the ``count`` accumulator of the first merged frame: the effective number of
  pixels per bin ([nRad], or [nEta, nRad] in 2-D, not per frame), which is the same for every
  frame unless pixels were invalid in single frames; every frame's count is in ``accumulators``.
- Radial units: q in ``1/nm`` or ``1/angstrom``, 2θ in ``deg`` or ``rad``. ``r_mm`` has no NXazint
  long_name: it is written as 2θ in degrees, exact for an untilted detector, refused otherwise
  (:func:`_radial_axis`); the r values are kept in ``accumulators``.
- A wavelength known only as an energy (or the reverse) is converted; unknown both ways → NaN,
  said so in ``reduction/note`` (never a made-up value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from reduction.errors import GeometryError, OutputError
from reduction.io.bands import BANDS_GROUP, BandLayout, write_band_indices
from reduction.io.bliss import HC_KEV_ANGSTROM
from reduction.io.files import atomic_output, written_as
from reduction.io.h5write import put, set_attrs
from reduction.io.merge import (
    GoodChunk,
    MergeReport,
    MissingChunk,
    cover,
    frame_dataset,
    identity_problem,
    write_chunk_table,
    write_master_file,
)
from reduction.io.nexus import PROGRAM, attr_text, now, nx_group, str_array
from reduction.io.poni import parse_poni

from .chunkfile import _FLAGS, KINDS, read_chunk_header
from .units import r_mm_problem

__all__ = ["EntrySpec", "write_master", "write_preview", "RADIAL_UNITS_NEXUS"]

REFERENCE = ("G. Ashiotis et al., The fast azimuthal integration Python library: pyFAI, J. Appl. Cryst. 48 "
             "(2015) 510-519, https://doi.org/10.1107/S1600576715004306 (xreduce reproduces pyFAI's "
             "integration, see xreduce docs/api.md)")

#: pyFAI unit -> (NXazint radial long_name, units). ``r_mm`` has no NXazint long_name: it is written
#: as 2θ in degrees (exact for an untilted detector, see :func:`_radial_axis`).
RADIAL_UNITS_NEXUS = {
    "q_nm^-1": ("q", "1/nm"),
    "q_A^-1": ("q", "1/angstrom"),
    "2th_deg": ("2theta", "deg"),
    "2th_rad": ("2theta", "rad"),
    "r_mm": ("2theta", "deg"),
}

# chunk dataset -> (group in the entry, name there)
_TARGETS = {
    "intensity": ("data", "I"),
    "sigma": ("data", "I_errors"),
    "signal": ("accumulators", "signal"),
    "variance": ("accumulators", "variance"),
    "normalization": ("accumulators", "normalization"),
    "count": ("accumulators", "count"),
}
_ACCUMULATOR_DOC = {
    "signal": "sum over the bin's pixels of c*(raw - dark); c = pixel-splitting fraction",
    "variance": "sum of c^2*max(raw, 1) (Poisson)",
    "normalization": "sum of c*flat*solid_angle*polarization*monitor",
    "count": "sum of c over the valid, unmasked pixels",
}


# -- what to merge, and what came of it --------------------------------------------------------
@dataclass
class EntrySpec:
    """One NXentry to build: a scan of a dataset and the chunks that cover its frames."""

    name: str  # e.g. "sample_0001_1.1"
    kind: str  # "azint1d" | "azint2d"
    dataset: str  # raw dataset master file
    scan: str
    nframes: int  # frames of the whole scan
    chunks: list[tuple[int, int, Path | str | None]]  # (frame_start, frame_stop, chunk file or None if failed)
    config_json: str = ""  # full resolved config; "" = take it from the chunk files
    poni: str = ""  # PONI text; "" = take it from the chunk files
    chunk_ids: list[str] = field(default_factory=list)  # parallel to chunks (checked against the files)
    beamline: str = "ESRF"  # NXinstrument/name
    source_name: str = "ESRF"
    source_type: str = "Synchrotron X-ray Source"
    probe: str = "x-ray"
    title: str = ""  # default "<dataset file> scan <scan>"


# -- inspecting the chunks ---------------------------------------------------------------------
@dataclass
class _EntryPlan:
    spec: EntrySpec
    good: list[GoodChunk] = field(default_factory=list)
    missing: list[MissingChunk] = field(default_factory=list)
    ref: dict[str, Any] | None = None  # chunk metadata of the first usable chunk
    engines: set[str] = field(default_factory=set)  # what reduced the usable chunks (provenance)
    axes: dict[str, np.ndarray] | None = None
    norm: np.ndarray | None = None  # count of the first merged frame (data/norm)


def _check_chunk(spec: EntrySpec, start: int, stop: int, chunk_id: str | None, meta: dict[str, Any],
                 plan: _EntryPlan, axes: dict[str, np.ndarray]) -> str | None:
    """Why this chunk cannot be merged into this entry, or None."""
    problem = identity_problem(meta, kind=spec.kind, dataset=spec.dataset, scan=spec.scan, start=start, stop=stop,
                               chunk_id=chunk_id)
    ref = plan.ref
    if problem or ref is None:
        return problem
    for key in ("unit", "splitting", "frame_shape", "fields", "has_monitor", "frame_band", "nbands", *_FLAGS):
        if meta.get(key) != ref.get(key):
            return f"chunk file has {key}={meta.get(key)!r}, other chunks of the scan {ref.get(key)!r}"
    assert plan.axes is not None
    for key, values in plan.axes.items():
        if key not in axes or axes[key].shape != values.shape or not np.array_equal(axes[key], values):
            return f"chunk file has other {key} bins than the other chunks of the scan"
    return None


def _inspect(spec: EntrySpec) -> _EntryPlan:
    if spec.kind not in KINDS:
        raise OutputError(f"entry {spec.name}: kind {spec.kind!r} is not one of {', '.join(KINDS)}")
    plan = _EntryPlan(spec)

    def accept(start: int, stop: int, chunk_id: str | None, path: Path) -> str | None:
        meta, axes, count = read_chunk_header(path)
        reason = _check_chunk(spec, start, stop, chunk_id, meta, plan, axes)
        if reason:
            raise OutputError(reason)
        if count is None:
            raise OutputError("chunk file has no count dataset")
        if plan.ref is None:  # the first good chunk (the chunks come sorted): the others must agree with it
            plan.ref, plan.axes, plan.norm = meta, axes, count
        if meta.get("engine"):
            plan.engines.add(str(meta["engine"]))
        return meta.get("chunk_id")

    plan.good, plan.missing = cover(spec.name, spec.nframes, spec.chunks, spec.chunk_ids, accept)
    return plan


# -- writing -----------------------------------------------------------------------------------
def _radial_axis(unit: str, radial: np.ndarray, edges: np.ndarray, poni: str) -> tuple[str, str, np.ndarray,
                                                                                       np.ndarray, str]:
    """(long_name, units, centres, edges, note) of the NXazint radial axis for a pyFAI unit.

    NXazint allows only q and 2θ. ``r_mm`` (distance from the beam axis, in the plane normal to the
    beam) is converted to 2θ = atan(r / dist), which is exact when the detector is not tilted
    (rot1 = rot2 = 0: every pixel then lies at the distance ``dist`` along the beam); the bins keep
    their r edges (so they are not evenly spaced in 2θ). With a tilt there is no such mapping and
    the merge refuses, naming the units to use instead.
    """
    if unit not in RADIAL_UNITS_NEXUS:
        raise OutputError(f"radial unit {unit!r} cannot be written as NXazint (known: {', '.join(RADIAL_UNITS_NEXUS)})")
    long_name, units = RADIAL_UNITS_NEXUS[unit]
    if unit != "r_mm":
        return long_name, units, radial, edges, ""
    try:
        geo = parse_poni(poni)
    except GeometryError as exc:
        raise OutputError(f"unit r_mm: cannot read the PONI to convert r to 2theta: {exc}") from None
    problem = r_mm_problem(unit, geo["rot1"], geo["rot2"])
    if problem:
        raise OutputError(f"cannot write NXazint1d/NXazint2d: {problem}")
    dist_mm = geo["dist"] * 1e3
    note = (f"Integrated in r (mm, unit r_mm); NXazint allows only q and 2theta, so radial_axis holds "
            f"2theta = atan(r / {dist_mm:.6g} mm) in degrees (exact: the detector is not tilted); the r values "
            "are in accumulators/radial_r_mm and accumulators/radial_r_mm_edges.")
    return long_name, units, np.degrees(np.arctan(radial / dist_mm)), np.degrees(np.arctan(edges / dist_mm)), note


def _write_entry(f: h5py.File, plan: _EntryPlan, mode: str, master_dir: Path) -> None:
    from reduction import __version__

    spec, ref, axes = plan.spec, plan.ref, plan.axes
    assert ref is not None and axes is not None
    two_d = spec.kind == "azint2d"
    poni = spec.poni or str(ref.get("poni") or "")
    config_json = spec.config_json or str(ref.get("config") or "{}")
    unit = str(ref.get("unit"))
    long_name, units, radial, radial_edges, radial_note = _radial_axis(unit, axes["radial"], axes["radial_edges"],
                                                                       poni)

    entry = nx_group(f, spec.name, "NXentry")
    set_attrs(entry, {"default": "data"})
    put(entry, "title", spec.title or f"{Path(spec.dataset).name} scan {spec.scan}")
    put(entry, "definition", "NXazint2d" if two_d else "NXazint1d")
    put(entry, "solid_angle_applied", np.bool_(ref["solid_angle_applied"]))
    put(entry, "polarization_applied", np.bool_(ref["polarization_applied"]))
    # I = signal / normalization: always divided by the bins' (weighted) pixel count, which is what
    # NXazint's normalization_applied states; whether a flat field was part of it is in input/flat_applied.
    put(entry, "normalization_applied", np.bool_(True))
    put(entry, "monitor_applied", np.bool_(ref["monitor_applied"]))

    instrument = nx_group(entry, "instrument", "NXinstrument")
    put(instrument, "name", spec.beamline)
    mono = nx_group(instrument, "monochromator", "NXmonochromator")
    wavelength_m, energy = ref.get("wavelength"), ref.get("energy")
    wavelength_a = wavelength_m / 1e-10 if wavelength_m else None
    if wavelength_a is None and energy:
        wavelength_a = HC_KEV_ANGSTROM / energy
    if energy is None and wavelength_a:
        energy = HC_KEV_ANGSTROM / wavelength_a
    put(mono, "wavelength", np.float64(wavelength_a if wavelength_a else np.nan), {"units": "angstrom"})
    put(mono, "energy", np.float64(energy if energy else np.nan), {"units": "keV"})
    source = nx_group(instrument, "source", "NXsource")
    put(source, "name", spec.source_name)
    put(source, "type", spec.source_type)
    put(source, "probe", spec.probe)

    notes = [
        "I = signal / normalization and I_errors = sqrt(variance) / normalization per bin, from the per-frame "
        "accumulators in ../accumulators (sums over the pixels of the bin weighted by the pixel-splitting "
        "fraction c): signal = sum c*(raw - dark), variance = sum c^2*max(raw, 1), normalization = sum "
        "c*flat*solid_angle*polarization*monitor, count = sum c over valid pixels. Add accumulators, then divide, "
        "to merge or re-bin frames.",
        f"data/norm is the count of frame {plan.good[0].start} (the first merged frame): the effective number of "
        "pixels per bin, the same for every frame unless pixels were invalid in single frames (see "
        "accumulators/count for every frame).",
    ]
    if radial_note:
        notes.append(radial_note)
    if not (wavelength_a and energy):
        notes.append("The wavelength/energy was unknown (not in the PONI nor the scan): NaN in monochromator.")
    if plan.missing:
        n_missing = sum(m.frame_stop - m.frame_start for m in plan.missing)
        notes.append(f"{n_missing} of {spec.nframes} frames have no result (NaN): see ../chunks/missing_frames.")
    reduction = nx_group(entry, "reduction", "NXprocess")
    put(reduction, "program", PROGRAM)
    put(reduction, "version", str(__version__))
    put(reduction, "date", now())
    put(reduction, "reference", REFERENCE)
    put(reduction, "note", "\n".join(notes))
    inp = nx_group(reduction, "input", "NXparameters")
    put(inp, "config", config_json)
    put(inp, "poni", poni)
    put(inp, "raw_file", str(spec.dataset))
    put(inp, "scan", str(spec.scan))
    put(inp, "unit", unit)
    put(inp, "splitting", str(ref.get("splitting")))
    put(inp, "error_model", str(ref.get("error_model")))
    put(inp, "flat_applied", "true" if ref["normalization_applied"] else "false")
    if plan.engines:  # chunks may have run on different nodes: every engine/device that contributed
        put(inp, "engine", "; ".join(sorted(plan.engines)))
    put(inp, "chunk_ids", str_array([i for i in (spec.chunk_ids or [g.chunk_id or "" for g in plan.good]) if i]))

    if ref.get("has_monitor"):
        monitor = nx_group(entry, "monitor", "NXmonitor")
        frame_dataset(monitor, "data", spec.nframes, plan.good, "monitor", (), mode, master_dir)
    if ref.get("nbands") is not None:  # rank-4 raw frames: the (point, band) of every frame, failed ones too
        write_band_indices(nx_group(entry, BANDS_GROUP, "NXcollection"),
                           BandLayout.merged(spec.nframes, int(ref["nbands"]), str(ref["frame_band"])), 0, spec.nframes)

    data = nx_group(entry, "data", "NXdata")
    set_attrs(data, {"signal": "I",
                     "axes": str_array([".", "azimuthal_axis", "radial_axis"] if two_d else [".", "radial_axis"]),
                     "interpretation": "image" if two_d else "spectrum"})
    accumulators = nx_group(entry, "accumulators", "NXcollection")
    for field_name in ref["fields"]:
        group_name, name = _TARGETS[field_name]
        group = data if group_name == "data" else accumulators
        ds = frame_dataset(group, name, spec.nframes, plan.good, field_name, tuple(ref["frame_shape"]), mode,
                           master_dir)
        if name == "I":
            set_attrs(ds, {"long_name": "intensity", "units": "arbitrary units"})
        elif name == "I_errors":
            set_attrs(ds, {"long_name": "estimated intensity error", "units": "arbitrary units"})
        else:
            set_attrs(ds, {"long_name": _ACCUMULATOR_DOC[name]})
    put(data, "radial_axis", np.asarray(radial, dtype=np.float64), {"long_name": long_name, "units": units})
    put(data, "radial_axis_edges", np.asarray(radial_edges, dtype=np.float64),
        {"long_name": f"{long_name} bin edges", "units": units})
    if two_d:
        put(data, "azimuthal_axis", np.asarray(axes["azimuthal"], dtype=np.float64),
            {"long_name": "azimuthal bin center", "units": "deg"})
        put(data, "azimuthal_axis_edges", np.asarray(axes["azimuthal_edges"], dtype=np.float64),
            {"long_name": "azimuthal bin edges", "units": "deg"})
    put(data, "norm", plan.norm, {"long_name": "effective number of pixels contributing to the corresponding bin",
                                  "units": "arbitrary units"})
    if unit == "r_mm":
        put(accumulators, "radial_r_mm", np.asarray(axes["radial"], dtype=np.float64))
        put(accumulators, "radial_r_mm_edges", np.asarray(axes["radial_edges"], dtype=np.float64))

    write_chunk_table(entry, plan.good, plan.missing, mode, master_dir)


def write_master(path: Path | str, entries: list[EntrySpec], *, mode: str = "vds") -> MergeReport:
    """Write the NeXus master file ``path`` with one NXazint1d/2d entry per :class:`EntrySpec`.

    Written under a temporary name and renamed into place (:func:`~reduction.io.files.atomic_output`),
    so an existing master is replaced only by a complete new one. Chunks that are missing,
    unreadable or inconsistent with the entry are left out (their frames read NaN) and reported;
    an entry without any usable chunk is not written (``MergeReport.skipped_entries``). Raises
    :class:`OutputError` for an unknown mode, duplicate entry names, overlapping chunks, when no
    entry at all can be written, or when the file cannot be written.
    """
    return write_master_file(path, entries, mode=mode, inspect=_inspect, write_entry=_write_entry)


# -- preview -----------------------------------------------------------------------------------
def _curves(entry: h5py.Group, intensity: h5py.Dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """(selected rows of I(radial), nansum over all frames, finite count over all frames) of an entry
    whose ``data/I`` is ``intensity``.

    2-D entries are averaged over the azimuth as the accumulators allow: sum(signal)/sum(normalization).
    """
    two_d = intensity.ndim == 3
    acc: Any = entry.get("accumulators") if two_d else None  # not looked up for 1-D entries
    use_acc = acc is not None and "signal" in acc and "normalization" in acc
    nframes, nrad = intensity.shape[0], intensity.shape[-1]
    frame_bytes = 8 * int(np.prod(intensity.shape[1:]))
    block = int(max(1, (32 << 20) // max(frame_bytes, 1)))
    total, finite = np.zeros(nrad), np.zeros(nrad)
    selected = np.full((len(rows), nrad), np.nan)
    for b0 in range(0, nframes, block):
        b1 = min(b0 + block, nframes)
        if use_acc:
            with np.errstate(invalid="ignore", divide="ignore"):
                sig = np.nansum(acc["signal"][b0:b1], axis=1)
                nrm = np.nansum(acc["normalization"][b0:b1], axis=1)
                curves = np.where(nrm > 0, sig / nrm, np.nan)  # missing frames: all NaN -> 0/0 -> NaN
        elif two_d:
            with np.errstate(invalid="ignore"):
                curves = np.nanmean(intensity[b0:b1], axis=1)
        else:
            curves = intensity[b0:b1]
        ok = np.isfinite(curves)
        total += np.where(ok, curves, 0).sum(axis=0)
        finite += ok.sum(axis=0)
        pick = (rows >= b0) & (rows < b1)
        selected[pick] = curves[rows[pick] - b0]
    return selected, total, finite


def import_plotting() -> None:
    """Import the plotting modules :func:`write_preview` uses (about 0.3 s): a run calls this in a
    background thread while its chunks are reduced (:meth:`reduction.step.Kind.warm_up`)."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.colors  # noqa: F401
    import matplotlib.figure  # noqa: F401


def write_preview(master: Path | str, png: Path | str, *, max_rows: int = 2000) -> Path:
    """A PNG of an experiment's master file: I(radial) of every frame of every entry as an image
    (frames stacked top to bottom, entries separated by lines, NaN = missing frames in grey) above
    the mean curve of all frames (and of each entry when there are few). 2-D entries are shown as
    their azimuthal average. With more than ``max_rows`` frames in all, every k-th frame of each
    entry is shown (the mean still uses every frame). Written atomically; returns ``png``."""
    import_plotting()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    master, png = Path(master), Path(png)
    with h5py.File(master, "r") as f:
        # each entry's groups looked up once (a master may have 10 000 entries); its I is opened only
        # while it is read: an open virtual dataset keeps its source files open, and HDF5 opens
        # files more slowly the more it holds open
        entries = [(g, g["data"]) for g in f.values()
                   if isinstance(g, h5py.Group) and attr_text(g, "NX_class") == "NXentry" and "data" in g]
        if not entries:
            raise OutputError(f"{master}: no NXentry with data to preview")
        shapes = [data["I"].shape for _, data in entries]
        total_frames = sum(shape[0] for shape in shapes)
        step = max(1, math.ceil(total_frames / max_rows))
        first = entries[0][1]
        axis_ds = first["radial_axis"]
        radial = axis_ds[()]
        edges = first["radial_axis_edges"][()] if "radial_axis_edges" in first else None
        label = f"{attr_text(axis_ds, 'long_name') or 'radial'} ({attr_text(axis_ds, 'units') or '?'})"
        blocks, bounds, means, names = [], [0], [], []
        grand_sum, grand_n = np.zeros(radial.size), np.zeros(radial.size)
        two_d = False
        for (entry, data), shape in zip(entries, shapes):
            two_d |= len(shape) == 3
            rows = np.arange(0, shape[0], step)
            selected, total, finite = _curves(entry, data["I"], rows)
            own = radial if data is first else data["radial_axis"][()]
            if own.shape != radial.shape or not np.allclose(own, radial):
                selected = np.array([np.interp(radial, own, r, left=np.nan, right=np.nan) for r in selected])
                total = np.interp(radial, own, total, left=0, right=0)
                finite = np.interp(radial, own, finite, left=0, right=0)
            blocks.append(selected)
            bounds.append(bounds[-1] + len(rows))
            with np.errstate(invalid="ignore", divide="ignore"):
                means.append(np.where(finite > 0, total / np.maximum(finite, 1), np.nan))
            grand_sum += total
            grand_n += finite
            names.append(entry.name.lstrip("/"))
    image = np.concatenate(blocks, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        grand = np.where(grand_n > 0, grand_sum / np.maximum(grand_n, 1), np.nan)

    width, height = 10.0, 9.0  # inches
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    # fixed positions (a layout engine costs more than the rest of the drawing): the left margin
    # fits the entry names on the image's y axis (7 pt, about 0.55 em per character) and its label
    every = math.ceil(len(names) / 40)  # at most 40 entry names on the axis
    left = min(0.5, (0.6 + max(len(n) for n in names[::every]) * 7 * 0.55 / 72) / width)
    right = 0.86
    ax_img = fig.add_axes((left, 0.375, right - left, 0.57))
    ax_mean = fig.add_axes((left, 0.06, right - left, 0.275), sharex=ax_img)
    ax_img.tick_params(labelbottom=False)
    finite_values = image[np.isfinite(image)]
    low, high = np.percentile(finite_values, (1, 99.9)) if finite_values.size else (0.0, 1.0)
    # a log scale where rings over a background span decades, linear otherwise (and for <= 0)
    norm = LogNorm(low, high) if low > 0 and high > 20 * low else Normalize(low, high)
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.75")
    if edges is None or edges.shape != (radial.size + 1,):
        half = (radial[1] - radial[0]) / 2 if radial.size > 1 else 0.5
        edges = np.concatenate([[radial[0] - half], (radial[1:] + radial[:-1]) / 2, [radial[-1] + half]])
    mesh = ax_img.pcolormesh(edges, np.arange(image.shape[0] + 1), np.ma.masked_invalid(image), norm=norm, cmap=cmap,
                             shading="flat", rasterized=True)
    ax_img.set_ylim(image.shape[0], 0)
    # the lines between entries as one collection (one artist per line costs about 1 ms each)
    ax_img.hlines(bounds[1:-1], 0, 1, transform=ax_img.get_yaxis_transform(), colors="white",
                  lw=min(0.8, 30 / len(names)), alpha=0.9 if len(names) <= 30 else 0.5)
    ax_img.set_yticks([(a + b) / 2 for a, b in zip(bounds[:-1:every], bounds[1::every])], names[::every], fontsize=7)
    ax_img.set_ylabel("frames of each entry" + (f" (every {step}th)" if step > 1 else ""))
    what = "azimuthal average of I(χ, radial)" if two_d else "I(radial)"
    ax_img.set_title(f"{master.name}: {what}, {total_frames} frames, {len(names)} entries (grey: no result)")
    fig.colorbar(mesh, cax=fig.add_axes((right + 0.015, 0.375, 0.018, 0.57)), label="I (arbitrary units)")
    if len(names) <= 12:
        for name, mean in zip(names, means):
            ax_mean.plot(radial, mean, lw=0.8, alpha=0.8, label=name)
    ax_mean.plot(radial, grand, color="black", lw=1.6, label="mean of all frames")
    finite_mean = grand[np.isfinite(grand)]
    if finite_mean.size and finite_mean.min() > 0 and finite_mean.max() > 20 * finite_mean.min():
        ax_mean.set_yscale("log")
    ax_mean.set_xlabel(label)
    ax_mean.set_ylabel("mean I (arbitrary units)")
    ax_mean.legend(fontsize=7, loc="upper left")
    ax_mean.grid(alpha=0.3)
    with written_as(png, "preview"), atomic_output(png) as tmp:
        fig.savefig(tmp, format="png")
    return png

