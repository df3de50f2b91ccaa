"""Where each pixel lies in one coordinate (radial or χ), and the checks on what callers pass in.

The splitting schemes only differ in how much of a pixel they count: its centre ("no"), the
bounding box ``[centre - delta, centre + delta]`` ("bbox") or the quadrilateral of its 4
corners ("full").  This module holds the positions and the bounding-box half width shared by
the range rules (:mod:`reduction.azint.bins`) and the matrix builders.

* **delta** (bounding-box half width, :func:`pixel_delta`): ``max_k |corner_k - centre|``; for
  the azimuth the distance is taken modulo 2π: ``min(d, 2π - d)`` (so pixels straddling
  χ = ±π keep a small delta), as pyFAI's ``delta_array``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from reduction.errors import IntegrationError

__all__ = ["SPLITTINGS", "PixelPositions", "pixel_delta"]

#: Pixel-splitting schemes understood by :func:`reduction.azint.splitting.build_matrix`.
SPLITTINGS = ("no", "bbox", "full")

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True, eq=False)
class PixelPositions:
    """One coordinate (radial or azimuthal χ) of every pixel, in internal units, flattened."""

    centre: np.ndarray    # (npix,) float64 value at the pixel centre
    corners: np.ndarray   # (npix, 4) float64 value at the 4 pixel corners (pyFAI corner order)

    def __post_init__(self) -> None:
        centre = np.asarray(self.centre, dtype=np.float64)
        corners = np.asarray(self.corners, dtype=np.float64)
        if centre.ndim != 1:
            raise IntegrationError(f"PixelPositions.centre must be 1-D (npix,), got shape {centre.shape}")
        if corners.shape != (centre.shape[0], 4):
            raise IntegrationError(
                f"PixelPositions.corners must have shape (npix, 4) = ({centre.shape[0]}, 4), "
                f"got {corners.shape}")
        object.__setattr__(self, "centre", centre)
        object.__setattr__(self, "corners", corners)

    @property
    def size(self) -> int:
        return self.centre.shape[0]


def pixel_delta(positions: PixelPositions, *, azimuthal: bool = False) -> np.ndarray:
    """Bounding-box half width of every pixel: ``max_k |corner_k - centre|``.

    For the azimuth (``azimuthal=True``) each distance is folded modulo 2π first
    (``min(d, 2π - d)``), as pyFAI's ``delta_array`` does for χ.
    """
    centre, corners = positions.centre, positions.corners
    out: np.ndarray | None = None
    for k in range(corners.shape[1]):
        d = np.abs(corners[:, k] - centre)
        if azimuthal:
            np.minimum(d, _TWO_PI - d, out=d)
        out = d if out is None else np.maximum(out, d, out=out)
    assert out is not None  # corners is (npix, 4), checked in PixelPositions.__post_init__
    return out


# Argument checks shared by auto_range and build_matrix: they raise IntegrationError naming
# the argument, so a caller's mistake is not reported as a numpy error deep in a builder.
def check_splitting(splitting: Any) -> str:
    """The scheme in lower case; raises unless it is one of :data:`SPLITTINGS`."""
    if not isinstance(splitting, str) or splitting.lower() not in SPLITTINGS:
        raise IntegrationError(f"unknown pixel splitting {splitting!r}; expected one of {SPLITTINGS}")
    return splitting.lower()


def check_positions(pos: Any, name: str) -> PixelPositions:
    """Accept any object with ``centre`` (npix,) and ``corners`` (npix, 4) (duck typing)."""
    if isinstance(pos, PixelPositions):
        return pos
    if not (hasattr(pos, "centre") and hasattr(pos, "corners")):
        raise IntegrationError(f"{name} must have 'centre' and 'corners' arrays, got {type(pos).__name__}")
    try:
        return PixelPositions(pos.centre, pos.corners)
    except IntegrationError as exc:
        raise IntegrationError(f"{name}: {exc}") from None


def check_valid(valid: Any, npix: int) -> np.ndarray:
    """The (npix,) bool mask of pixels that count (False = masked)."""
    valid = np.asarray(valid)
    if valid.size != npix:
        raise IntegrationError(f"valid has {valid.size} elements (shape {valid.shape}), expected {npix}")
    return valid.reshape(-1).astype(bool, copy=False)
