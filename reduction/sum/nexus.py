"""The sum kind's master file (one NXentry per scan) and its PNG preview.

Layout of one entry (``*`` = per frame, [nframes])::

    <entry>                NXentry  @default="data"
      title                "<dataset file> scan <scan>"
      reduction            NXprocess: program, version, date, note
        input              NXparameters: config (JSON), raw_file, scan, chunk_ids
      data                 NXdata @signal="total" @axes=["frame"] @auxiliary_signals=["maximum", "pixels"]
        total*, maximum*, pixels*, frame
      chunks               NXcollection: frames, chunk_id, file, status, missing_frames, ...

``merge.mode`` applies as for every kind (:func:`reduction.io.merge.frame_dataset`): ``vds`` maps
the per-frame datasets onto the chunk files (relative paths), ``copy`` copies them in. Frames of
failed or missing chunks are NaN in total, maximum and pixels, and listed in ``chunks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from reduction.errors import OutputError
from reduction.io.files import atomic_output, written_as
from reduction.io.merge import (
    EntryChunks,
    MergeReport,
    entry_chunks,
    frame_dataset,
    write_chunk_table,
    write_master_file,
)
from reduction.io.nexus import PROGRAM, attr_text, now, nx_group, open_readonly, str_array
from reduction.step import MasterEntry

from .chunkfile import read_header
from .sums import FIELDS

__all__ = ["write_master", "write_preview"]

_DOC = {"total": ("total counts of the valid, unmasked pixels", "counts"),
        "maximum": ("maximum of the valid, unmasked pixels", "counts"),
        "pixels": ("number of valid, unmasked pixels", "")}
_NOTE = ("Per frame: total and maximum of the counts of the pixels that are neither masked (reduction.mask) nor "
         "invalid (NaN/inf; the integer type's maximum, the detectors' gap value; negatives of signed types), and "
         "their number. Raw counts: no monitor normalisation. NaN: the frame has no result (see ../chunks).")


def _write_entry(f: h5py.File, plan: EntryChunks, mode: str, master_dir: Path, *, config_json: str) -> None:
    from reduction import __version__

    spec = plan.entry
    entry = nx_group(f, spec.name, "NXentry")
    entry.attrs["default"] = "data"
    entry["title"] = f"{Path(spec.dataset).name} scan {spec.scan}"
    process = nx_group(entry, "reduction", "NXprocess")
    process["program"] = PROGRAM
    process["version"] = str(__version__)
    process["date"] = now()
    process["note"] = _NOTE
    inp = nx_group(process, "input", "NXparameters")
    inp["config"] = config_json
    inp["raw_file"] = str(spec.dataset)
    inp["scan"] = str(spec.scan)
    inp["chunk_ids"] = str_array(list(spec.chunk_ids))
    data = nx_group(entry, "data", "NXdata")
    data.attrs.update({"signal": "total", "axes": str_array(["frame"]),
                       "auxiliary_signals": str_array([name for name in FIELDS if name != "total"])})
    for name in FIELDS:
        ds = frame_dataset(data, name, spec.nframes, plan.good, name, (), mode, master_dir)
        long_name, units = _DOC[name]
        ds.attrs["long_name"] = long_name
        if units:
            ds.attrs["units"] = units
    ds = data.create_dataset("frame", data=np.arange(spec.nframes, dtype=np.int64))
    ds.attrs["long_name"] = "frame index in the scan"
    write_chunk_table(entry, plan.good, plan.missing, mode, master_dir)


def write_master(path: Path | str, entries: Sequence[MasterEntry], *, kind: str, mode: str,
                 config_json: str) -> MergeReport:
    """Write the master file ``path`` with one entry per scan of ``entries`` (chunks of ``kind``),
    atomically. Chunk files that are missing, unreadable or not what the entry expects are left
    out (NaN) and reported; see :func:`reduction.io.merge.write_master_file` for what raises."""
    return write_master_file(path, entries, mode=mode,
                             inspect=partial(entry_chunks, kind=kind, read_header=read_header),
                             write_entry=partial(_write_entry, config_json=config_json))


def write_preview(master: Path | str, png: Path | str) -> Path:
    """A PNG of a sum master file: total counts and maximum against the frame index, one line per
    entry (gaps where frames have no result). Written atomically; returns ``png``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    master, png = Path(master), Path(png)
    with open_readonly(master) as f:
        entries = [(name, group["data"]["frame"][()], group["data"]["total"][()], group["data"]["maximum"][()])
                   for name, group in f.items()
                   if attr_text(group, "NX_class") == "NXentry" and "total" in group.get("data", {})]
    if not entries:
        raise OutputError(f"{master}: no NXentry with data/total to preview")
    fig = Figure(figsize=(10, 7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_total, ax_max = fig.subplots(2, 1, sharex=True)
    for name, frame, total, maximum in entries:
        ax_total.plot(frame, total, marker=".", lw=0.8, label=name)
        ax_max.plot(frame, maximum, marker=".", lw=0.8)
    ax_total.set_title(f"{master.name}: {len(entries)} entries (gaps: frames without a result)")
    ax_total.set_ylabel("total counts")
    ax_max.set_ylabel("maximum (counts)")
    ax_max.set_xlabel("frame")
    if len(entries) <= 12:
        ax_total.legend(fontsize=7, loc="best")
    for ax in (ax_total, ax_max):
        ax.grid(alpha=0.3)
    with written_as(png, "preview"), atomic_output(png) as tmp:
        fig.savefig(tmp, format="png")
    return png
