"""Uniform bins and histogram ranges, with pyFAI's float32 rules, so bin edges match pyFAI's.

Rules reproduced (pyFAI 2026.9; the sources are listed in :mod:`reduction.azint.splitting`):

* **Bins** (``Bins``): ``delta = (hi - lo) / n``; the fractional bin number of a position ``x``
  is ``(x - lo) / delta``; bin centres are ``linspace(lo + delta/2, hi - delta/2, n)``.  pyFAI
  *always* raises the upper bound by one float32 epsilon (``hi = max * (1 + eps32)``, or
  ``max / (1 + eps32)`` when ``max <= 0``), for automatic ranges *and* for user-given ranges:
  use :func:`pyfai_range` to turn a user range into pyFAI's ``(lo, hi)``; :func:`auto_range`
  already includes it.
* **auto range** (:func:`auto_range`): min/max over the valid pixels of the centres ("no"),
  of ``centre ± delta`` ("bbox") or of the raw corners ("full"); clipped at 0 for units
  that cannot be negative, the azimuth clipped to ``[-π32, π32]`` (``π32`` = float32(π), as
  pyFAI does in 2-D), then the eps32 fudge on the maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reduction.errors import IntegrationError

from .pixels import (
    PixelPositions,
    check_positions,
    check_splitting,
    check_valid,
    pixel_delta,
)

__all__ = ["EPS32", "Bins", "auto_range", "lower_from_upper", "pyfai_range", "upper_bound"]

#: pyFAI's upward fudge factor on the upper bound of every histogram range.
EPS32 = 1.0 + float(np.finfo(np.float32).eps)
_PI32 = float(np.float32(math.pi))  # pyFAI clips the azimuth range with a *float* pi


@dataclass(frozen=True)
class Bins:
    """Uniform bins over [lo, hi] in *internal* units (radians for 2θ and χ, nm^-1 for q, m for r).

    ``hi`` is the true upper edge of the last bin.  To reproduce pyFAI, ``hi`` must carry its
    float32-epsilon fudge: use ``Bins(*auto_range(...), n)`` for an automatic range and
    ``Bins(*pyfai_range(a, b), n)`` for a user range ``(a, b)``.  (2-D full splitting clamps
    corners to the unfudged maximum, recovered as ``hi / (1 + eps32)``.)
    """

    lo: float
    hi: float
    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)):
            raise IntegrationError(f"number of bins must be an integer, got {self.n!r}")
        if self.n <= 0:
            raise IntegrationError(f"number of bins must be > 0, got {self.n}")
        try:
            lo, hi = float(self.lo), float(self.hi)
        except (TypeError, ValueError):
            raise IntegrationError(f"bin range must be numbers, got ({self.lo!r}, {self.hi!r})") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise IntegrationError(f"bin range must be finite, got ({lo}, {hi})")
        if lo >= hi:
            raise IntegrationError(f"bin range needs lo < hi, got lo={lo}, hi={hi}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "n", int(self.n))

    @property
    def delta(self) -> float:
        """Bin width, computed as pyFAI does: ``(hi - lo) / n``."""
        return (self.hi - self.lo) / self.n

    @property
    def edges(self) -> np.ndarray:
        """(n+1,) float64 bin edges ``lo + k * delta`` (last one exactly ``hi``)."""
        edges = self.lo + np.arange(self.n + 1, dtype=np.float64) * self.delta
        edges[-1] = self.hi
        return edges

    @property
    def centres(self) -> np.ndarray:
        """(n,) float64 bin centres, ``linspace(lo + delta/2, hi - delta/2, n)`` as in pyFAI."""
        delta = self.delta
        return np.linspace(self.lo + 0.5 * delta, self.hi - 0.5 * delta, self.n)


def upper_bound(maximum: float) -> float:
    """pyFAI's ``calc_upper_bound``: the max raised by one float32 epsilon (relative)."""
    maximum = float(maximum)
    return maximum * EPS32 if maximum > 0 else maximum / EPS32


def lower_from_upper(hi: float) -> float:
    """Best inverse of :func:`upper_bound` (exact up to one ulp)."""
    return hi / EPS32 if hi > 0 else hi * EPS32


def pyfai_range(lo: float, hi: float) -> tuple[float, float]:
    """The ``(lo, hi)`` pyFAI actually bins over for a user range: ``(min, upper_bound(max))``."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise IntegrationError(f"range must be finite, got ({lo}, {hi})")
    return min(lo, hi), upper_bound(max(lo, hi))


def auto_range(splitting: str, positions: PixelPositions, valid: np.ndarray, *, allow_negative: bool,
               azimuthal: bool = False) -> tuple[float, float]:
    """pyFAI's automatic histogram range when the user gives none; returns ``(lo, hi)`` for :class:`Bins`.

    Rule (pyFAI ``calc_boundaries`` + ``calc_upper_bound``), over the valid pixels with finite
    positions:

    * ``"no"``: ``lo = min(centre)``, ``max = max(centre)``;
    * ``"bbox"``: ``lo = min(centre - delta)``, ``max = max(centre + delta)`` with ``delta``
      from :func:`~reduction.azint.pixels.pixel_delta` (χ distances folded modulo 2π when ``azimuthal``);
    * ``"full"``: min / max of the raw corner values (χ corners *not* recentred);
    * if not ``allow_negative`` (2θ, q, r, ...): ``lo = max(0, lo)``, ``max = max(0, max)``;
    * if ``azimuthal`` (the χ range of a 2-D integration, pyFAI's ``clip_pos1``):
      ``lo = max(lo, -π32)``, ``max = min(max, π32)`` with ``π32 = float32(π)``;
    * finally ``hi = upper_bound(max)`` = ``max * (1 + eps32)`` (``max / (1 + eps32)`` if
      ``max <= 0``) so that the extreme pixel falls inside the last bin.

    Raises :class:`IntegrationError` when no valid pixel is left or the range is empty.
    """
    split = check_splitting(splitting)
    positions = check_positions(positions, "positions")
    valid = check_valid(valid, positions.size)
    if split == "no":
        lo_v = hi_v = positions.centre[valid]
    elif split == "bbox":
        c = positions.centre[valid]
        d = pixel_delta(positions, azimuthal=azimuthal)[valid]
        lo_v, hi_v = c - d, c + d
    else:
        corners = positions.corners[valid]
        ok = np.isfinite(corners).all(axis=1)
        lo_v = corners[ok].min(axis=1) if ok.any() else np.empty(0)
        hi_v = corners[ok].max(axis=1) if ok.any() else np.empty(0)
    lo_v = lo_v[np.isfinite(lo_v)]
    hi_v = hi_v[np.isfinite(hi_v)]
    if lo_v.size == 0 or hi_v.size == 0:
        raise IntegrationError("cannot compute an automatic range: no valid pixel with finite position")
    lo, hi = float(lo_v.min()), float(hi_v.max())
    if not allow_negative:
        lo = max(0.0, lo)
        hi = max(0.0, hi)
    if azimuthal:
        hi = min(hi, _PI32)
        lo = max(lo, -_PI32)
    hi = upper_bound(hi)
    if not lo < hi:
        raise IntegrationError(f"automatic range is empty: lo={lo}, hi={hi}")
    return lo, hi
