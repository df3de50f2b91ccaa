"""Frame bands: detector datasets of rank 4, ``(points, band, ny, nx)``, as lima2 writes them.

A lima2 detector may record several frames per scan point (a *band* of frames: one per energy
threshold, per accumulation, per trigger...). BLISS then writes ``measurement/<detector>`` as
``(points, band, ny, nx)`` and its counters with one value per *point*. ``campaign.frame_band``
says which frames of such a dataset are reduced:

- ``"all"`` (default): every frame, flattened in acquisition order, point-major: frame ``f`` is
  point ``f // nbands``, band ``f % nbands``;
- an integer ``k``: band ``k`` of every point, one frame per point;
- ``"sum"``: the sum of the bands of each point, one frame per point (integers summed in int64,
  floats in float64: exact, never wrapping).

A 3-D dataset ``(frames, ny, nx)`` is one band: ``all``, ``sum`` and ``0`` read its frames as they
are (bit for bit); a higher index is a problem of that scan. :class:`BandLayout` is the mapping
between frames and (point, band), pure; :func:`write_band_indices` records it per frame in a
result file (chunk file, master entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

__all__ = ["ALL", "SUM", "FrameBand", "parse_frame_band", "BandLayout", "SUM_BAND", "write_band_indices",
           "BANDS_GROUP"]

ALL, SUM = "all", "sum"
#: the band index recorded for a frame that is the sum of its point's bands
SUM_BAND = -1
#: the group holding the per-frame point and band indices in chunk files and master entries
BANDS_GROUP = "frame_bands"

FrameBand = int | str


def parse_frame_band(value: Any) -> FrameBand:
    """``"all"``, ``"sum"`` or a band index (int ≥ 0; a string of digits is read as one). ValueError
    saying what is allowed otherwise.

    >>> parse_frame_band("2"), parse_frame_band("SUM"), parse_frame_band(0)
    (2, 'sum', 0)
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value >= 0:
            return int(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in (ALL, SUM):
            return text
        if text.isdigit():
            return int(text)
    raise ValueError(f"{value!r} is not a frame band: expected 'all' (every frame, point-major), 'sum' (the bands "
                     "of each point summed) or a band index 0, 1, ...")


@dataclass(frozen=True)
class BandLayout:
    """How the frames of one scan map onto its detector dataset.

    ``nbands`` is None for a 3-D dataset (no band axis). ``selection`` is a parsed frame band.
    """

    npoints: int
    nbands: int | None
    selection: FrameBand = ALL

    @classmethod
    def of(cls, shape: tuple[int, ...], selection: Any = ALL) -> BandLayout:
        """The layout of a detector dataset of ``shape`` (rank 3 or 4)."""
        return cls(int(shape[0]), int(shape[1]) if len(shape) == 4 else None, parse_frame_band(selection))

    @classmethod
    def merged(cls, nframes: int, nbands: int, selection: Any) -> BandLayout:
        """The layout of a scan of ``nframes`` frames read from ``nbands`` bands per point with ``selection``
        (what a merge knows from the chunk files)."""
        band = parse_frame_band(selection)
        return cls(nframes // nbands if band == ALL else nframes, nbands, band)

    @property
    def banded(self) -> bool:
        """A rank-4 dataset: frames are (point, band) pairs."""
        return self.nbands is not None

    @property
    def flattened(self) -> bool:
        """Every band of every point is a frame (``all`` on a rank-4 dataset)."""
        return self.nbands is not None and self.selection == ALL

    @property
    def nframes(self) -> int:
        """Frames of the scan under this selection."""
        return self.npoints * self.nbands if self.flattened and self.nbands is not None else self.npoints

    def problem(self) -> str | None:
        """Why this selection cannot be read from this dataset (a band index out of range), or None."""
        if isinstance(self.selection, int):
            have = 1 if self.nbands is None else self.nbands
            if self.selection >= have:
                what = "a 3-D dataset (one band: 0)" if self.nbands is None else f"{have} bands (0-{have - 1})"
                return f"campaign.frame_band={self.selection} is out of range: the detector dataset has {what}"
        return None

    def points(self, start: int, stop: int) -> np.ndarray:
        """The point (row of axis 0) of each frame in [start, stop)."""
        frames = np.arange(start, stop, dtype=np.int64)
        return frames // self.nbands if self.flattened and self.nbands else frames

    def bands(self, start: int, stop: int) -> np.ndarray:
        """The band of each frame in [start, stop): its index, or :data:`SUM_BAND` for a sum of bands."""
        n = stop - start
        if self.flattened and self.nbands:
            return np.arange(start, stop, dtype=np.int64) % self.nbands
        if self.selection == SUM:
            return np.full(n, SUM_BAND if self.banded else 0, dtype=np.int64)
        return np.full(n, int(self.selection) if isinstance(self.selection, int) else 0, dtype=np.int64)

    def point_range(self, start: int, stop: int) -> tuple[int, int]:
        """The points [p0, p1) that frames [start, stop) come from."""
        if self.flattened and self.nbands and stop > start:
            return start // self.nbands, -(-stop // self.nbands)
        return start, stop


def write_band_indices(group: h5py.Group, layout: BandLayout, start: int, stop: int) -> None:
    """Record, for frames [start, stop), the point (``point``) and band (``band``, -1: the sum of the
    point's bands) each comes from, as int64 datasets in ``group``, with the selection (``frame_band``)
    and ``nbands`` as attributes of the group."""
    group.attrs.update({"frame_band": str(layout.selection), "nbands": int(layout.nbands or 1)})
    point = group.create_dataset("point", data=layout.points(start, stop))
    point.attrs["long_name"] = "scan point (row of the detector dataset's first axis) of each frame"
    band = group.create_dataset("band", data=layout.bands(start, stop))
    band.attrs["long_name"] = f"band of each frame within its point ({SUM_BAND}: the sum of the point's bands)"
