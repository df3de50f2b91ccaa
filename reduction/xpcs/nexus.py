"""The xpcs kind's master file (one NXxpcs entry per scan) and its PNG preview.

Layout of one entry (K delays, D dynamic bins, S static bins, N frames)::

    <entry>             NXentry @default="data": definition="NXxpcs", entry_identifier, scan_number,
                        start_time, title
      data              NXdata @signal="g2" @axes=["delay_difference", "q"]
        g2, g2_err      (K, D)  @storage_mode="one_array"; g2_derr: the same error, NXxpcs' name
        delay_difference (K,) frames; delay (K,) seconds (absent when the frame time is unknown)
        q (D,), frame_average (ny, nx), frame_sum (ny, nx)
      twotime           NXdata: two_time_corr_func (bins, n, n) upper triangle, q_bins, frames
      instrument        NXinstrument: incident_beam/incident_energy; detector (frame_time,
                        count_time, distance, beam_center_x/y, pixel sizes); masks (roi maps, q lists)
      multitau          NXcollection: the additive sums (G2, IP, IF, pixels, g2_pix, g2_pix2,
                        products, level) and intensity_vs_time (N, S)
      reduction         NXprocess: program, version, date; input (NXparameters): engine, config hash,
                        normalisation, lag convention, frame time source, config, raw file, PONI
      chunks            NXcollection: the chunk table (reduction.io.merge)

g2 is computed here from the chunk file's sums (:func:`reduction.xpcs.multitau.normalise`), so a
merge is exact. ``merge.mode=vds`` maps the two-time matrix onto the chunk file; ``copy`` copies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from reduction.azint.geometry import Geometry
from reduction.errors import OutputError
from reduction.io.files import atomic_output, written_as
from reduction.io.merge import (
    EntryChunks,
    MergeReport,
    entry_chunks,
    write_chunk_table,
    write_master_file,
)
from reduction.io.nexus import PROGRAM, attr_text, attr_value, now, nx_group, open_readonly, str_array, vds_source_name
from reduction.step import MasterEntry

from .chunkfile import read_header, read_partition, read_sums
from .multitau import normalise

__all__ = ["write_master", "write_preview", "NORMALISATION", "LAGS"]

NORMALISATION = ("symmetric, per static q bin: g2_s(τ) = <I(t)I(t+τ)> / (<I(t)> <I(t+τ)>), means over the static "
                 "bin's pixels and the products; g2 of a dynamic bin = unweighted mean of its static bins' g2; "
                 "g2_err = std (ddof=1) over the dynamic bin's pixels of the pixel g2 (normalised by its static "
                 "bin's <I(t)> <I(t+τ)>) / sqrt(pixels); float64 accumulation")
LAGS = ("multi-tau, {dpl} delays per level (boost-corr's convention): lags 1..{two_dpl} frames, then x*2^L for "
        "x = {dpl1}..{two_dpl} at level L, on frames binned by 2^L (sums of consecutive pairs)")


def _field(group: h5py.Group, name: str, data: object, units: str | None = None, **attrs: object) -> h5py.Dataset:
    ds = group.create_dataset(name, data=data)
    if units is not None:
        ds.attrs["units"] = units
    ds.attrs.update(attrs)
    return ds


def _q_units(unit: str) -> str:
    return "1/angstrom" if unit == "q_A^-1" else "1/nm"


def _write_entry(f: h5py.File, plan: EntryChunks, mode: str, master_dir: Path, *, config_json: str) -> None:
    from reduction import __version__

    spec = plan.entry
    chunk = plan.good[0]  # a whole-scan kind: one chunk per entry
    with open_readonly(chunk.path) as src:
        meta = {k: attr_value(v) for k, v in src.attrs.items()}
        sums = read_sums(src)
        partition = read_partition(src)
        twotime = None
        if "twotime" in src:
            tt = src["twotime"]
            twotime = (tt["q_bins"][()], tt["frames"][()], tt["C"].shape)
    g = normalise(sums, partition.static_to_dynamic, partition.n_dynamic)
    frame_time = meta.get("frame_time")
    frame_time = float(frame_time) if frame_time is not None and np.isfinite(frame_time) else None
    geometry = Geometry.from_poni(chunk.path, text=str(meta.get("poni", "")))
    dpl = int(np.count_nonzero(sums.level == 0)) // 2 or 4

    entry = nx_group(f, spec.name, "NXentry")
    entry.attrs["default"] = "data"
    entry["definition"] = "NXxpcs"
    entry["title"] = f"{Path(spec.dataset).name} scan {spec.scan}"
    entry["entry_identifier"] = f"{Path(spec.dataset).stem}_{spec.scan}"
    entry["scan_number"] = np.int64(int(str(spec.scan).split(".")[0]))
    entry["start_time"] = str(meta.get("start_time") or now())

    data = nx_group(entry, "data", "NXdata")
    data.attrs.update({"signal": "g2", "axes": str_array(["delay_difference", "q"]),
                       "auxiliary_signals": str_array(["g2_err"])})
    _field(data, "g2", g.g2, "", storage_mode="one_array", long_name="g2(τ, q)")
    _field(data, "g2_err", g.g2_err, "")
    _field(data, "g2_derr", g.g2_err, "", storage_mode="one_array")
    _field(data, "delay_difference", g.delay.astype(np.int64), "", storage_mode="one_array",
           long_name="delay in frames")
    if frame_time is not None:
        _field(data, "delay", g.delay * frame_time, "s", long_name="delay")
    else:
        data["delay_note"] = "the frame time is unknown: delays are in frames only (delay_difference)"
    _field(data, "q", partition.dynamic_q, _q_units(partition.unit), long_name="dynamic q bin centre")
    image = sums.frame_sum.reshape(partition.dynamic_map.shape)  # NaN outside the partition: never read
    _field(data, "frame_average", image / max(spec.nframes, 1), "", long_name="counts per frame")
    _field(data, "frame_sum", image, "", long_name="counts")

    if twotime is not None:
        q_bins, frames, shape = twotime
        tt_group = nx_group(entry, "twotime", "NXdata")
        tt_group.attrs["signal"] = "two_time_corr_func"
        if mode == "vds":
            layout = h5py.VirtualLayout(shape=shape, dtype=np.float32)
            layout[...] = h5py.VirtualSource(vds_source_name(chunk.path, master_dir), "twotime/C", shape=shape)
            ds = tt_group.create_virtual_dataset("two_time_corr_func", layout, fillvalue=np.nan)
        else:
            with open_readonly(chunk.path) as src:
                ds = tt_group.create_dataset("two_time_corr_func", shape=shape, dtype=np.float32, fillvalue=np.nan,
                                             chunks=src["twotime/C"].chunks, compression="gzip", compression_opts=1)
                for b in range(shape[0]):
                    ds[b] = src["twotime/C"][b]
        ds.attrs.update({"units": "", "storage_mode": "one_array_q_first", "baseline_reference": np.int64(1),
                         "time_origin_location": "upper_left", "populated_elements": "upper_half"})
        tt_group["q_bins"] = q_bins
        tt_group["frames"] = frames

    instrument = nx_group(entry, "instrument", "NXinstrument")
    beam = nx_group(instrument, "incident_beam", "NXbeam")
    wavelength = meta.get("wavelength")
    if wavelength is not None and np.isfinite(wavelength):
        _field(beam, "incident_energy", 12.398419843320026 / (float(wavelength) * 1e10), "keV")
        _field(beam, "incident_wavelength", float(wavelength) * 1e10, "angstrom")
    det = nx_group(instrument, "detector", "NXdetector")
    if frame_time is not None:
        _field(det, "frame_time", frame_time, "s")
    count_time = meta.get("count_time")
    if count_time is not None and np.isfinite(count_time):
        _field(det, "count_time", float(count_time), "s")
    _field(det, "distance", geometry.dist, "m")
    _field(det, "beam_center_x", geometry.poni2, "m")  # the PONI (point of normal incidence), pyFAI's
    _field(det, "beam_center_y", geometry.poni1, "m")
    _field(det, "x_pixel_size", geometry.detector.pixel2, "m")
    _field(det, "y_pixel_size", geometry.detector.pixel1, "m")
    masks = nx_group(instrument, "masks", "NXnote")
    _field(masks, "dynamic_roi_map", partition.dynamic_map, "")
    _field(masks, "dynamic_q_list", partition.dynamic_q, _q_units(partition.unit))
    if partition.dynamic_phi is not None:
        _field(masks, "dynamic_phi_list", partition.dynamic_phi, "deg")
    _field(masks, "static_roi_map", partition.static_map, "")
    _field(masks, "static_q_list", partition.static_q, _q_units(partition.unit))

    sums_group = nx_group(entry, "multitau", "NXcollection")
    for name in ("level", "products", "G2", "IP", "IF", "pixels", "g2_pix", "g2_pix2"):
        sums_group.create_dataset(name, data=getattr(sums, name))
    _field(sums_group, "intensity_vs_time", sums.intensity, "counts", long_name="counts of each static bin per frame")
    sums_group["g2_static"] = g.g2_static

    process = nx_group(entry, "reduction", "NXprocess")
    process["program"] = PROGRAM
    process["version"] = str(__version__)
    process["date"] = now()
    inp = nx_group(process, "input", "NXparameters")
    inp["engine"] = str(meta.get("engine", ""))
    inp["config_hash"] = str(meta.get("config_hash", ""))
    inp["normalization"] = NORMALISATION
    inp["lag_convention"] = LAGS.format(dpl=dpl, dpl1=dpl + 1, two_dpl=2 * dpl)
    inp["frame_time_source"] = str(meta.get("frame_time_source", "")) or "unknown"
    inp["config"] = config_json
    inp["raw_file"] = str(spec.dataset)
    inp["scan"] = str(spec.scan)
    inp["chunk_ids"] = str_array(list(spec.chunk_ids))
    inp["poni"] = str(meta.get("poni", ""))
    write_chunk_table(entry, plan.good, plan.missing, mode, master_dir)


def write_master(path: Path | str, entries: Sequence[MasterEntry], *, kind: str, mode: str,
                 config_json: str) -> MergeReport:
    """Write the master file ``path``: one NXxpcs entry per scan whose chunk file is good (atomically)."""
    return write_master_file(path, entries, mode=mode,
                             inspect=partial(entry_chunks, kind=kind, read_header=read_header),
                             write_entry=partial(_write_entry, config_json=config_json))


def _rate(delay: np.ndarray, g2: np.ndarray) -> float | None:
    """Γ (1/s or 1/frame) of g2 = b + β·exp(−2Γτ), fitted; None when the fit fails."""
    from scipy.optimize import curve_fit

    ok = np.isfinite(g2) & np.isfinite(delay)
    if ok.sum() < 4:
        return None
    d, y = delay[ok], g2[ok]
    try:
        popt, _ = curve_fit(lambda t, b, beta, rate: b + beta * np.exp(-2 * rate * t), d, y,
                            p0=(1.0, max(y[0] - 1.0, 1e-3), 1.0 / d[len(d) // 3]), maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    return float(popt[2]) if popt[2] > 0 else None


def write_preview(master: Path | str, png: Path | str) -> Path:
    """A PNG of an xpcs master file: g2 against the delay for each q of each entry, and the fitted
    relaxation rate Γ against q². Written atomically; returns ``png``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    master, png = Path(master), Path(png)
    with open_readonly(master) as f:
        entries = []
        for name, group in f.items():
            if attr_text(group, "NX_class") != "NXentry" or "g2" not in group.get("data", {}):
                continue
            data = group["data"]
            seconds = "delay" in data
            delay = data["delay"][()] if seconds else data["delay_difference"][()].astype(float)
            entries.append((name, delay, data["g2"][()], data["q"][()], attr_text(data["q"], "units") or "",
                            seconds))
    if not entries:
        raise OutputError(f"{master}: no NXentry with data/g2 to preview")
    fig = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_g2, ax_rate = fig.subplots(1, 2)
    cmap = fig.colormaps["viridis"] if hasattr(fig, "colormaps") else None
    for name, delay, g2, q, _units, _seconds in entries[:6]:
        for i in range(g2.shape[1]):
            colour = cmap(i / max(g2.shape[1] - 1, 1)) if cmap is not None else None
            ax_g2.semilogx(delay, g2[:, i], marker=".", lw=0.8, color=colour,
                           label=f"{name} q={q[i]:.3g}" if g2.shape[1] <= 6 and len(entries) <= 2 else None)
        rates = [_rate(delay, g2[:, i]) for i in range(g2.shape[1])]
        ok = [i for i, r in enumerate(rates) if r is not None]
        if ok:
            ax_rate.plot(q[ok] ** 2, [rates[i] for i in ok], marker="o", lw=0.8, label=name)
    time_unit = "s" if entries[0][5] else "frames"
    ax_g2.set_xlabel(f"delay ({time_unit})")
    ax_g2.set_ylabel("g2")
    ax_g2.set_title(f"{master.name}: {len(entries)} entries" + (" (first 6 shown)" if len(entries) > 6 else ""))
    ax_rate.set_xlabel(f"q² ({entries[0][4]})²")
    ax_rate.set_ylabel(f"Γ (1/{time_unit}), g2 = b + β·exp(−2Γτ)")
    ax_rate.set_title("relaxation rate vs q²")
    for ax in (ax_g2, ax_rate):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    with written_as(png, "preview"), atomic_output(png) as tmp:
        fig.savefig(tmp, format="png")
    return png
