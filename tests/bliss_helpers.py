"""BLISS-layout files only tests and benchmarks need: ending a running scan, and master files whose
lima files are never written (planning reads metadata only)."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from reduction.demo.bliss_writer import ScanSpec, write_dataset

__all__ = ["finish_scan", "write_metadata_only_experiment"]


def finish_scan(path: str | os.PathLike[str], scan: str) -> None:
    """Add ``end_time`` to an unfinished scan, as BLISS does when the scan ends."""
    with h5py.File(path, "a", locking=False) as f:
        if "end_time" not in f[scan]:
            f[scan]["end_time"] = datetime.now(timezone.utc).isoformat()


def write_metadata_only_experiment(root: str | os.PathLike[str], n_files: int, scans_per_file: int, *,
                                   n_frames: int = 100, frame_shape: tuple[int, int] = (1043, 981),
                                   detector: str = "pilatus", frames_per_file: int = 100,
                                   collection: str = "sample", extra_counters: int = 0) -> list[Path]:
    """Master files of ``scans_per_file`` finished scans each, whose lima files are never written.

    For the planning benchmark: ``measurement/<detector>`` is a VDS over lima files that do not
    exist (planning must not need them), with a monitor and a monochromator energy, under
    ``<root>/RAW_DATA/<collection>/<collection>_NNNN/``; ``extra_counters`` more 1-D counters
    per scan make the entries as crowded as a beamline's. Returns the master files.
    """
    raw_data = Path(os.path.abspath(root)) / "RAW_DATA" / collection
    counters = {f"ct{i:02d}": np.arange(n_frames, dtype=np.float64) for i in range(extra_counters)}
    specs = [ScanSpec(None, monitor=np.full(n_frames, 1e5), title=f"loopscan {n_frames} 0.1", energy_kev=17.7,
                      nframes=n_frames, frame_shape=frame_shape, counters=counters) for _ in range(scans_per_file)]
    masters: list[Path] = []
    for k in range(n_files):
        folder = f"{collection}_{k + 1:04d}"
        master = raw_data / folder / f"{folder}.h5"
        if not masters:
            write_dataset(master, specs, detector=detector, frames_per_file=frames_per_file)
        else:  # the files differ only in name (VDS sources are relative): copy the first, ~100x faster
            master.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(masters[0], master)
            with h5py.File(master, "r+", locking=False) as f:
                f.attrs["file_name"] = str(master)
        masters.append(master)
    return masters
