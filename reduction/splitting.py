"""Sparse integration matrices (bins x pixels) reproducing pyFAI's CSR engines.

``build_matrix`` returns the CSR matrix ``W`` (``nbins x npix``) such that ``W @ signal`` is the
per-bin sum of the signal and ``W @ valid`` the per-bin (fractional) pixel count, exactly as
pyFAI's ``splitBBoxCSR.HistoBBox1d/2d`` (splitting ``"no"`` and ``"bbox"``) and
``splitPixelFullCSR.FullSplitCSR_1d/2d`` (splitting ``"full"``) build them, i.e. what
``AzimuthalIntegrator.integrate1d_ng/integrate2d_ng(method=(split, "csr", "cython"))`` use.
Pure numpy/scipy, vectorised over pixels (the only Python loops run over a handful of bin
offsets, pixel corners/edges or size classes). pyFAI is *not* imported here.

Rules reproduced (pyFAI 2026.9, ``ext/splitBBox_common.pyx``, ``ext/splitpixel_common.pyx``,
``ext/regrid_common.pxi``, ``geometry/core.py``):

* **Bins** (``Bins``): ``delta = (hi - lo) / n``; the fractional bin number of a position ``x``
  is ``(x - lo) / delta``; bin centres are ``linspace(lo + delta/2, hi - delta/2, n)``.  pyFAI
  *always* raises the upper bound by one float32 epsilon (``hi = max * (1 + eps32)``, or
  ``max / (1 + eps32)`` when ``max <= 0``), for automatic ranges *and* for user-given ranges:
  use :func:`pyfai_range` to turn a user range into pyFAI's ``(lo, hi)``; :func:`auto_range`
  already includes it.
* **delta** (bounding-box half width, :func:`pixel_delta`): ``max_k |corner_k - centre|``; for
  the azimuth the distance is taken modulo 2π: ``min(d, 2π - d)`` (so pixels straddling
  χ = ±π keep a small delta).
* **no / bbox, 1-D** (``calc_lut_1d``): a pixel covers ``[c - d, c + d]`` (``d = 0`` for "no").
  ``fmin, fmax`` are the fractional bin numbers of both ends, ``bmin = trunc(fmin)``,
  ``bmax = trunc(fmax)`` (C truncation toward zero, so a position in ``(lo - delta, lo)`` still
  lands in bin 0). The pixel is dropped if ``bmax < 0`` or ``bmin >= n``; otherwise the bins
  are clipped to ``[0, n-1]``. One bin -> weight 1; else with ``inv = 1/(fmax - fmin)``:
  ``inv * (bmin + 1 - fmin)`` in ``bmin``, ``inv * (fmax - bmax)`` in ``bmax``, ``inv`` in
  between (so the weight of a pixel sticking out of the range piles up in the edge bin and
  the column always sums to 1).  With ``azimuth_range=(a, b)`` a pixel is dropped (entirely)
  when ``χc + dχ < a`` or ``χc - dχ > b`` (``dχ = 0`` for "no"); kept pixels count fully.
* **no / bbox, 2-D** (``calc_lut_2d``): the same in both directions; the weight of bin
  ``(i, j)`` is the product of the radial and azimuthal fractions (a direction where the pixel
  falls in a single bin contributes a factor 1).  No χ wrapping: a pixel near ±π just clips.
* **full** (``calc_lut_1d`` / ``calc_lut_2d`` of ``FullSplitIntegrator``): each pixel is the
  quadrilateral of its 4 corners ``(radial, χ)``.  Pixels straddling the χ = ±π discontinuity
  are detected by the sign of pyFAI's (approximate) algebraic area
  ``0.5*(c0-a0)*(d1-b1) - (c1-a1)*(d0-b0)`` (sic: only the first term is halved): a sign
  opposite to that of ordinary pixels marks a straddling pixel, whose negative χ corners get
  +2π and, if the mean χ then exceeds π, all its χ corners get -2π ("recentering").  pyFAI
  takes the sign convention of ordinary pixels from ``detector.orientation``; here it is the
  majority sign over the valid pixels, which is the same thing for any consistent geometry.

  - 1-D: corners in fractional radial bins, dropped if ``max < 0`` or ``min >= n`` (or, with an
    azimuth range, if the recentred χ corners satisfy ``max < a`` or ``min > b``); if all
    corners fall in one bin -> weight 1; else the exact area of the polygon in every bin in
    range (trapezoid integration of the 4 edges, accumulated in a float32 buffer as pyFAI
    does) divided by the sum over the bins in range (the part outside the range is dropped
    and the rest renormalised to 1).
  - 2-D: the pixel is dropped if entirely outside ``[lo, hi_in]`` radially (``hi_in`` is the
    range maximum before the eps32 fudge) or with ``max χ < lo_χ`` / ``min χ >= hi_χ``; each
    corner coordinate is then *clamped* into ``[lo, hi_in]`` and pyFAI's box algorithm is
    applied: for every edge and every radial column the signed area under the edge is
    stacked from the bottom of the box as full cells of the column width (this is pyFAI's
    approximation, not the exact polygon/cell overlap); weights are the box cells divided by
    their sum.  pyFAI's float32 arithmetic (``float`` slope, intercept, widths, areas and box;
    the float specialisation of ``_calc_area`` for the partial pieces of an edge) is emulated,
    so the weights agree with pyFAI's to float32 rounding.
* **auto range** (:func:`auto_range`): min/max over the valid pixels of the centres ("no"),
  of ``centre ± delta`` ("bbox") or of the raw corners ("full"); clipped at 0 for units
  that cannot be negative, the azimuth clipped to ``[-π32, π32]`` (``π32`` = float32(π), as
  pyFAI does in 2-D), then the eps32 fudge on the maximum.

Deliberate differences with pyFAI (2026.9):

* weights are float64 (pyFAI stores float32) and explicit zeros are removed;
* full splitting: a pixel whose (clamped) area is exactly 0, e.g. one with a corner exactly at
  the PONI, gets NaN weights in pyFAI (NaN bins in its results); it is dropped here;
* ``FullSplitCSR_2d`` starts from an uninitialised (``numpy.empty``) buffer, so the first pixel
  it processes gets garbage weights; not reproduced;
* pyFAI passes the 2-D full-split engine a χ period of 360 (the period of ``chi_deg``) while χ
  is in radians; this only matters for azimuth ranges extending past ±π; 2π is used here;
* pixels with non-finite positions are ignored; χ's discontinuity is assumed at ±π (pyFAI's
  default ``chiDiscAtPi=True``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from .errors import IntegrationError

__all__ = [
    "SPLITTINGS",
    "EPS32",
    "Bins",
    "PixelPositions",
    "build_matrix",
    "auto_range",
    "pyfai_range",
    "upper_bound",
    "pixel_delta",
]

#: Pixel-splitting schemes understood by :func:`build_matrix`.
SPLITTINGS = ("no", "bbox", "full")

#: pyFAI's upward fudge factor on the upper bound of every histogram range.
EPS32 = 1.0 + float(np.finfo(np.float32).eps)
_PI32 = float(np.float32(math.pi))  # pyFAI clips the azimuth range with a *float* pi
_TWO_PI = 2.0 * math.pi
_F32 = np.float32
_F64 = np.float64


# --------------------------------------------------------------------------------------------
# Public data structures
# --------------------------------------------------------------------------------------------
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
        edges = self.lo + np.arange(self.n + 1, dtype=_F64) * self.delta
        edges[-1] = self.hi
        return edges

    @property
    def centres(self) -> np.ndarray:
        """(n,) float64 bin centres, ``linspace(lo + delta/2, hi - delta/2, n)`` as in pyFAI."""
        delta = self.delta
        return np.linspace(self.lo + 0.5 * delta, self.hi - 0.5 * delta, self.n)


@dataclass(frozen=True, eq=False)
class PixelPositions:
    """One coordinate (radial or azimuthal χ) of every pixel, in internal units, flattened."""

    centre: np.ndarray    # (npix,) float64 value at the pixel centre
    corners: np.ndarray   # (npix, 4) float64 value at the 4 pixel corners (pyFAI corner order)

    def __post_init__(self) -> None:
        centre = np.asarray(self.centre, dtype=_F64)
        corners = np.asarray(self.corners, dtype=_F64)
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


# --------------------------------------------------------------------------------------------
# Small public helpers
# --------------------------------------------------------------------------------------------
def upper_bound(maximum: float) -> float:
    """pyFAI's ``calc_upper_bound``: the max raised by one float32 epsilon (relative)."""
    maximum = float(maximum)
    return maximum * EPS32 if maximum > 0 else maximum / EPS32


def _lower_from_upper(hi: float) -> float:
    """Best inverse of :func:`upper_bound` (exact up to one ulp)."""
    return hi / EPS32 if hi > 0 else hi * EPS32


def pyfai_range(lo: float, hi: float) -> tuple[float, float]:
    """The ``(lo, hi)`` pyFAI actually bins over for a user range: ``(min, upper_bound(max))``."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise IntegrationError(f"range must be finite, got ({lo}, {hi})")
    return min(lo, hi), upper_bound(max(lo, hi))


def pixel_delta(positions: PixelPositions, *, azimuthal: bool = False) -> np.ndarray:
    """Bounding-box half width of every pixel: ``max_k |corner_k - centre|``.

    For the azimuth (``azimuthal=True``) each distance is folded modulo 2π first
    (``min(d, 2π - d)``), as pyFAI's ``delta_array`` does for χ.
    """
    centre, corners = positions.centre, positions.corners
    out = None
    for k in range(corners.shape[1]):
        d = np.abs(corners[:, k] - centre)
        if azimuthal:
            np.minimum(d, _TWO_PI - d, out=d)
        out = d if out is None else np.maximum(out, d, out=out)
    return out


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------
def _check_splitting(splitting) -> str:
    if not isinstance(splitting, str) or splitting.lower() not in SPLITTINGS:
        raise IntegrationError(f"unknown pixel splitting {splitting!r}; expected one of {SPLITTINGS}")
    return splitting.lower()


def _check_positions(pos, name: str) -> PixelPositions:
    """Accept any object with ``centre`` (npix,) and ``corners`` (npix, 4) (duck typing)."""
    if isinstance(pos, PixelPositions):
        return pos
    if not (hasattr(pos, "centre") and hasattr(pos, "corners")):
        raise IntegrationError(f"{name} must have 'centre' and 'corners' arrays, got {type(pos).__name__}")
    try:
        return PixelPositions(pos.centre, pos.corners)
    except IntegrationError as exc:
        raise IntegrationError(f"{name}: {exc}") from None


def _check_valid(valid, npix: int) -> np.ndarray:
    valid = np.asarray(valid)
    if valid.size != npix:
        raise IntegrationError(f"valid has {valid.size} elements (shape {valid.shape}), expected {npix}")
    return valid.reshape(-1).astype(bool, copy=False)


def _check_bins(bins, name: str) -> Bins:
    if not isinstance(bins, Bins):
        raise IntegrationError(f"{name} must be a Bins, got {type(bins).__name__}")
    return bins


def _check_range(rng, name: str) -> tuple[float, float]:
    try:
        vals = [float(v) for v in rng]
    except (TypeError, ValueError):
        raise IntegrationError(f"{name} must be a pair of numbers, got {rng!r}") from None
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals):
        raise IntegrationError(f"{name} must be a pair of finite numbers, got {rng!r}")
    return min(vals), max(vals)


# --------------------------------------------------------------------------------------------
# auto_range
# --------------------------------------------------------------------------------------------
def auto_range(splitting: str, positions: PixelPositions, valid: np.ndarray, *, allow_negative: bool,
               azimuthal: bool = False) -> tuple[float, float]:
    """pyFAI's automatic histogram range when the user gives none; returns ``(lo, hi)`` for :class:`Bins`.

    Rule (pyFAI ``calc_boundaries`` + ``calc_upper_bound``), over the valid pixels with finite
    positions:

    * ``"no"``: ``lo = min(centre)``, ``max = max(centre)``;
    * ``"bbox"``: ``lo = min(centre - delta)``, ``max = max(centre + delta)`` with ``delta``
      from :func:`pixel_delta` (χ distances folded modulo 2π when ``azimuthal``);
    * ``"full"``: min / max of the raw corner values (χ corners *not* recentred);
    * if not ``allow_negative`` (2θ, q, r, ...): ``lo = max(0, lo)``, ``max = max(0, max)``;
    * if ``azimuthal`` (the χ range of a 2-D integration, pyFAI's ``clip_pos1``):
      ``lo = max(lo, -π32)``, ``max = min(max, π32)`` with ``π32 = float32(π)``;
    * finally ``hi = upper_bound(max)`` = ``max * (1 + eps32)`` (``max / (1 + eps32)`` if
      ``max <= 0``) so that the extreme pixel falls inside the last bin.

    Raises :class:`IntegrationError` when no valid pixel is left or the range is empty.
    """
    split = _check_splitting(splitting)
    positions = _check_positions(positions, "positions")
    valid = _check_valid(valid, positions.size)
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


# --------------------------------------------------------------------------------------------
# build_matrix
# --------------------------------------------------------------------------------------------
def build_matrix(splitting: str, radial: PixelPositions, azimuth: PixelPositions, valid: np.ndarray,
                 radial_bins: Bins, azimuth_bins: Bins | None = None,
                 azimuth_range: tuple[float, float] | None = None) -> scipy.sparse.csr_array:
    """Return the CSR matrix W (nbins × npix), float64, with W[k, j] the fraction of pixel j falling in bin k.

    1-D: azimuth_bins None, nbins = radial_bins.n; `azimuth_range` (radians) optionally restricts
    which pixels count, as pyFAI does for integrate1d(azimuth_range=...) (a pixel is kept or
    dropped as a whole, see the module docstring).
    2-D: nbins = azimuth_bins.n * radial_bins.n, row index k = i_azim * radial_bins.n + i_rad.
    valid: (npix,) bool, False = masked pixel -> its column is empty.
    No explicit zeros stored; indices sorted.
    """
    split = _check_splitting(splitting)
    radial = _check_positions(radial, "radial")
    azimuth = _check_positions(azimuth, "azimuth")
    npix = radial.size
    if azimuth.size != npix:
        raise IntegrationError(f"radial has {npix} pixels but azimuth has {azimuth.size}")
    valid = _check_valid(valid, npix)
    _check_bins(radial_bins, "radial_bins")
    arange_ = None
    if azimuth_bins is not None:
        _check_bins(azimuth_bins, "azimuth_bins")
        if azimuth_range is not None:
            raise IntegrationError("azimuth_range is for 1-D matrices; in 2-D give the range through azimuth_bins")
        nrows = azimuth_bins.n * radial_bins.n
    else:
        nrows = radial_bins.n
        if azimuth_range is not None:
            arange_ = _check_range(azimuth_range, "azimuth_range")

    if split == "full":
        if azimuth_bins is None:
            rows, cols, vals = _full_1d(radial, azimuth, valid, radial_bins, arange_)
        else:
            rows, cols, vals = _full_2d(radial, azimuth, valid, radial_bins, azimuth_bins)
    else:
        do_split = split == "bbox"
        if azimuth_bins is None:
            rows, cols, vals = _bbox_1d(radial, azimuth, valid, radial_bins, arange_, do_split)
        else:
            rows, cols, vals = _bbox_2d(radial, azimuth, valid, radial_bins, azimuth_bins, do_split)
    return _to_csr(rows, cols, vals, nrows, npix)


def _to_csr(rows, cols, vals, nrows: int, npix: int) -> scipy.sparse.csr_array:
    """Entries must come pixel-major (cols non-decreasing, each (row, col) at most once)."""
    keep = vals != 0
    if not keep.all():
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    idx_dtype = np.int32 if max(nrows, npix, rows.size) < np.iinfo(np.int32).max else np.int64
    # scipy's coo->csr is a stable counting sort by row: columns stay sorted within each row,
    # and the canonical-format check then finds nothing to sum or sort.
    coo = scipy.sparse.coo_array(
        (vals.astype(_F64, copy=False), (rows.astype(idx_dtype, copy=False), cols.astype(idx_dtype, copy=False))),
        shape=(nrows, npix))
    mat = coo.tocsr()
    mat.sort_indices()
    mat.eliminate_zeros()
    return mat


# --------------------------------------------------------------------------------------------
# no / bbox
# --------------------------------------------------------------------------------------------
def _bbox_dim(c: np.ndarray, d: np.ndarray | None, bins: Bins):
    """Fractional and clipped integer bin span of [c-d, c+d] (pyFAI get_bin_number + C truncation)."""
    lo, delta, n = bins.lo, bins.delta, bins.n
    if d is None:
        fmin = (c - lo) / delta
        fmax = fmin
    else:
        fmin = ((c - d) - lo) / delta
        fmax = ((c + d) - lo) / delta
    tmin = np.trunc(fmin)
    tmax = np.trunc(fmax)
    inside = (tmax >= 0) & (tmin < n)          # False for NaN as well
    return fmin, fmax, tmin, tmax, inside


def _edge_lengths(count, fmin, fmax, bmin, bmax):
    """Un-normalised lengths of the first and last bin of 1-D bbox spans, and the spans' norm.

    pyFAI: a single bin has length 1 and norm 1; otherwise the first bin has length
    ``bmin + 1 - fmin``, the last ``fmax - bmax``, the others 1, and the norm is ``fmax - fmin``.
    """
    single = count == 1
    first = np.where(single, 1.0, (bmin + 1.0) - fmin)
    last = np.where(single, 1.0, fmax - bmax)
    norm = np.where(single, 1.0, fmax - fmin)
    return first, last, norm


def _gather(a: np.ndarray, size: int):
    """Indexer for the active subset ``a`` (a no-op when every item is active)."""
    if a.size == size:
        return lambda x: x
    return lambda x: x[a]


def _layered(count: np.ndarray, emit):
    """Expand per-pixel entries pixel-major without materialising per-entry pixel arrays.

    ``emit(active, k)`` returns (rows, vals) of entry ``k`` of the pixels ``active`` (all with
    ``count > k``); returns (rows, vals, owner) with ``owner`` the item index of every entry.
    """
    count = count.astype(np.int64, copy=False)
    offs = np.cumsum(count) - count
    nnz = int(count.sum())
    rows = np.empty(nnz, dtype=np.int64)
    vals = np.empty(nnz, dtype=_F64)
    active = np.flatnonzero(count > 0)
    k = 0
    while active.size:
        r, v = emit(active, k)
        pos = offs[active] + k
        rows[pos] = r
        vals[pos] = v
        k += 1
        active = active[count[active] > k]
    owner = np.repeat(np.arange(count.size, dtype=np.int64), count)
    return rows, vals, owner


def _bbox_1d(radial, azimuth, valid, bins: Bins, arange_, do_split: bool):
    keep = valid & np.isfinite(radial.centre)
    if do_split:
        d0_all = pixel_delta(radial)
        keep &= np.isfinite(d0_all)
    if arange_ is not None:
        c1 = azimuth.centre
        d1 = pixel_delta(azimuth, azimuthal=True) if do_split else 0.0
        amin, amax = arange_
        with np.errstate(invalid="ignore"):
            keep &= ~((c1 + d1 < amin) | (c1 - d1 > amax)) & np.isfinite(c1 + d1)
    pix = np.flatnonzero(keep)
    c = radial.centre[pix]
    d = d0_all[pix] if do_split else None
    fmin, fmax, tmin, tmax, inside = _bbox_dim(c, d, bins)
    if not inside.all():
        pix, fmin, fmax, tmin, tmax = pix[inside], fmin[inside], fmax[inside], tmin[inside], tmax[inside]
    n = bins.n
    bmin = np.maximum(tmin, 0).astype(np.int64)
    bmax = np.minimum(tmax, n - 1).astype(np.int64)
    count = bmax - bmin + 1
    first, last, norm = _edge_lengths(count, fmin, fmax, bmin, bmax)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / norm
    w_first = inv * first          # pyFAI: inv_area * delta_left (1 for a single bin)
    w_last = inv * last            # pyFAI: inv_area * delta_right
    size = count.size

    def emit(a, k):
        g = _gather(a, size)
        if k == 0:
            return g(bmin), g(w_first)
        return g(bmin) + k, np.where(g(count) - 1 == k, g(w_last), g(inv))

    rows, vals, owner = _layered(count, emit)
    return rows, pix[owner], vals


def _bbox_2d(radial, azimuth, valid, rbins: Bins, abins: Bins, do_split: bool):
    keep = valid & np.isfinite(radial.centre) & np.isfinite(azimuth.centre)
    if do_split:
        d0_all = pixel_delta(radial)
        d1_all = pixel_delta(azimuth, azimuthal=True)
        keep &= np.isfinite(d0_all) & np.isfinite(d1_all)
    pix = np.flatnonzero(keep)
    d0 = d0_all[pix] if do_split else None
    d1 = d1_all[pix] if do_split else None
    f0min, f0max, t0min, t0max, in0 = _bbox_dim(radial.centre[pix], d0, rbins)
    f1min, f1max, t1min, t1max, in1 = _bbox_dim(azimuth.centre[pix], d1, abins)
    ok = in0 & in1
    if not ok.all():
        pix = pix[ok]
        f0min, f0max, t0min, t0max = f0min[ok], f0max[ok], t0min[ok], t0max[ok]
        f1min, f1max, t1min, t1max = f1min[ok], f1max[ok], t1min[ok], t1max[ok]
    n0, n1 = rbins.n, abins.n
    b0min = np.maximum(t0min, 0).astype(np.int64)
    b0max = np.minimum(t0max, n0 - 1).astype(np.int64)
    b1min = np.maximum(t1min, 0).astype(np.int64)
    b1max = np.minimum(t1max, n1 - 1).astype(np.int64)
    c0 = b0max - b0min + 1
    c1 = b1max - b1min + 1
    first0, last0, norm0 = _edge_lengths(c0, f0min, f0max, b0min, b0max)
    first1, last1, norm1 = _edge_lengths(c1, f1min, f1max, b1min, b1max)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / (norm0 * norm1)   # pyFAI's inv_area, a single-bin direction counting as 1
    size = c0.size

    def emit(a, k):
        g = _gather(a, size)
        if k == 0:
            return g(b1min) * n0 + g(b0min), (g(inv) * g(first0)) * g(first1)
        c1a = g(c1)
        i = k // c1a
        j = k - i * c1a
        len0 = np.where(i == 0, g(first0), np.where(i == g(c0) - 1, g(last0), 1.0))
        len1 = np.where(j == 0, g(first1), np.where(j == c1a - 1, g(last1), 1.0))
        return (g(b1min) + j) * n0 + (g(b0min) + i), (g(inv) * len0) * len1

    rows, vals, owner = _layered(c0 * c1, emit)
    return rows, pix[owner], vals


# --------------------------------------------------------------------------------------------
# full splitting
# --------------------------------------------------------------------------------------------
_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0))   # A-B, B-C, C-D, D-A as pyFAI
# Corner arrays below are laid out (4, P): one contiguous row per corner.


def _quirky_area(r: np.ndarray, chi: np.ndarray) -> np.ndarray:
    """pyFAI's ``area4p`` (used only for its sign): 0.5*(c0-a0)*(d1-b1) - (c1-a1)*(d0-b0)."""
    return 0.5 * ((r[2] - r[0]) * (chi[3] - chi[1])) - ((chi[2] - chi[0]) * (r[3] - r[1]))


def _recenter(r: np.ndarray, chi: np.ndarray, period: float = _TWO_PI) -> np.ndarray:
    """χ corners (4, P) with the pixels straddling ±π made contiguous, as pyFAI's ``_recenter``."""
    area = _quirky_area(r, chi)
    npos = np.count_nonzero(area > 0)
    nneg = np.count_nonzero(area < 0)
    # pyFAI: ordinary pixels have sign*area < 0, the sign coming from the detector orientation
    sign = 1.0 if nneg >= npos else -1.0
    sel = np.flatnonzero(sign * area > 0)
    if sel.size == 0:
        return chi
    sub = chi[:, sel]
    sub = np.where(sub < 0, sub + period, sub)
    centre1 = 0.25 * (((sub[0] + sub[1]) + sub[2]) + sub[3])
    sub[:, centre1 > 0.5 * period] -= period
    chi = chi.copy()
    chi[:, sel] = sub
    return chi


def _pow2_class(w: np.ndarray) -> np.ndarray:
    """Smallest power of two >= w (w >= 1)."""
    w = np.maximum(w, 1)
    return (1 << np.ceil(np.log2(w)).astype(np.int64)).astype(np.int64)


def _min4(a: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(a[0], a[1]), np.minimum(a[2], a[3]))


def _max4(a: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(a[0], a[1]), np.maximum(a[2], a[3]))


class _Assembler:
    """Collects per-pixel dense entry blocks and lays them out pixel-major."""

    def __init__(self, npix: int):
        self.parts = []
        self.counts = np.zeros(npix, dtype=np.int64)

    def add(self, pix: np.ndarray, rows: np.ndarray, vals: np.ndarray) -> None:
        """pix (P,), rows/vals (P, K); zero vals are dropped; a pixel may be added only once."""
        if pix.size == 0:
            return
        rows = rows.reshape(pix.size, -1)
        vals = vals.reshape(pix.size, -1)
        if vals.shape[1] == 1:
            mask = None
            self.counts[pix] += 1
        else:
            mask = vals != 0
            self.counts[pix] += mask.sum(axis=1)
        self.parts.append((pix, rows, vals, mask))

    def finish(self):
        offsets = np.cumsum(self.counts) - self.counts
        nnz = int(self.counts.sum())
        rows_out = np.empty(nnz, dtype=np.int64)
        cols_out = np.empty(nnz, dtype=np.int64)
        vals_out = np.empty(nnz, dtype=_F64)
        for pix, rows, vals, mask in self.parts:
            if mask is None:
                pos = offsets[pix]
                rows_out[pos] = rows[:, 0]
                cols_out[pos] = pix
                vals_out[pos] = vals[:, 0]
                continue
            rank = np.cumsum(mask, axis=1) - 1
            pos = (offsets[pix][:, None] + rank)[mask]
            rows_out[pos] = rows[mask]
            cols_out[pos] = np.broadcast_to(pix[:, None], mask.shape)[mask]
            vals_out[pos] = vals[mask]
        return rows_out, cols_out, vals_out


def _full_prepare(radial, azimuth, valid):
    """Valid pixels with finite corners, their radial and recentred χ corners as (4, P)."""
    rc, ac = radial.corners, azimuth.corners
    ok = valid.copy()
    for k in range(4):
        ok &= np.isfinite(rc[:, k]) & np.isfinite(ac[:, k])
    pix = np.flatnonzero(ok)
    r = np.empty((4, pix.size))
    chi = np.empty((4, pix.size))
    for k in range(4):
        r[k] = rc[pix, k]
        chi[k] = ac[pix, k]
    return pix, r, _recenter(r, chi)


def _full_1d(radial, azimuth, valid, bins: Bins, arange_):
    pix, r, chi = _full_prepare(radial, azimuth, valid)
    n, lo, delta = bins.n, bins.lo, bins.delta
    b = (r - lo) / delta
    min0 = _min4(b)
    max0 = _max4(b)
    keep = ~((max0 < 0) | (min0 >= n))
    if arange_ is not None:
        amin, amax = arange_
        keep &= ~((_max4(chi) < amin) | (_min4(chi) > amax))
    if not keep.all():
        pix, b, chi, min0, max0 = pix[keep], b[:, keep], chi[:, keep], min0[keep], max0[keep]
    fl_min = np.floor(min0)
    fl_max = np.floor(max0)
    asm = _Assembler(radial.size)

    single = fl_min == fl_max
    asm.add(pix[single], fl_min[single].astype(np.int64), np.ones(np.count_nonzero(single)))

    split = np.flatnonzero(~single)
    pix, b, chi = pix[split], b[:, split], chi[:, split]
    kmin = np.maximum(fl_min[split], 0).astype(np.int64)
    kmax = np.minimum(fl_max[split] + 1, n).astype(np.int64)
    width = kmax - kmin
    wclass = _pow2_class(width)
    for K in np.unique(wclass):
        for sel in _chunks(np.flatnonzero(wclass == K), int(K)):
            rows, vals = _full_1d_kernel(b[:, sel], chi[:, sel], kmin[sel], width[sel], int(K))
            asm.add(pix[sel], rows, vals)
    return asm.finish()


_CHUNK = 1 << 17      # entries per kernel call: keeps the numpy temporaries cache-sized


def _chunks(idx: np.ndarray, cells: int):
    step = max(1, _CHUNK // max(1, cells))
    for start in range(0, idx.size, step):
        yield idx[start:start + step]


def _full_1d_kernel(b, chi, kmin, width, K):
    """pyFAI ``_integrate1d`` of the 4 edges into a float32 buffer, then normalisation.

    b: (4, P) corners in fractional bins, chi: (4, P) recentred χ corners; the pixels span
    the bins ``kmin .. kmin + width - 1`` (already clipped to the range), ``width <= K``.
    """
    P = b.shape[1]
    offs = np.arange(K)
    cols = kmin[:, None] + offs                                 # absolute bins (P, K)
    colf = cols.astype(_F64)
    colf1 = colf + 1.0
    colmask = offs[None, :] < width[:, None]
    buf = np.zeros((P, K), dtype=_F32)
    for ia, ib in _EDGES:
        s0, s1, e0, e1 = b[ia], chi[ia], b[ib], chi[ib]
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (e1 - s1) / (e0 - s0)
            intercept = s1 - slope * s0
        fs, fe = np.floor(s0), np.floor(e0)
        lo_f = np.minimum(fs, fe)[:, None]
        hi_f = np.maximum(fs, fe)[:, None]
        act = (e0 != s0)[:, None] & (colf >= lo_f) & (colf <= hi_f) & colmask
        pos = (e0 > s0)[:, None]
        s0c, e0c = s0[:, None], e0[:, None]
        # the part of the edge inside bin c, pyFAI's (start, stop) order
        i1 = np.where(pos, np.maximum(s0c, colf), np.minimum(s0c, colf1))
        i2 = np.where(pos, np.minimum(e0c, colf1), np.maximum(e0c, colf))
        with np.errstate(invalid="ignore", over="ignore"):
            area = (i2 - i1) * (0.5 * slope[:, None] * (i2 + i1) + intercept[:, None])
        area = np.where(act, area, 0.0)
        buf = (buf.astype(_F64) + area).astype(_F32)           # float buffer, += in double
    bufd = np.where(colmask, buf.astype(_F64), 0.0)
    total = bufd.sum(axis=1)
    good = total != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = bufd * (1.0 / total)[:, None]
    vals[~good] = 0.0      # degenerate (zero-area) pixels: pyFAI writes NaN, we drop them
    return cols, vals


def _full_2d(radial, azimuth, valid, rbins: Bins, abins: Bins):
    pix, r, chi = _full_prepare(radial, azimuth, valid)
    lo0, n0, delta0 = rbins.lo, rbins.n, rbins.delta
    lo1, n1, delta1 = abins.lo, abins.n, abins.delta
    maxin0, maxin1 = _lower_from_upper(rbins.hi), _lower_from_upper(abins.hi)
    keep = ~((_max4(r) < lo0) | (_min4(r) > maxin0) | (_max4(chi) < lo1) | (_min4(chi) >= abins.hi))
    if not keep.all():
        pix, r, chi = pix[keep], r[:, keep], chi[:, keep]
    # clamp every corner into the range, then switch to bin space
    b0 = (np.clip(r, lo0, maxin0) - lo0) / delta0
    b1 = (np.clip(chi, lo1, maxin1) - lo1) / delta1
    foff0 = np.floor(_min4(b0))
    foff1 = np.floor(_min4(b1))
    w0 = (np.ceil(_max4(b0)) - foff0).astype(np.int64)
    w1 = (np.ceil(_max4(b1)) - foff1).astype(np.int64)
    ioff0 = foff0.astype(np.int64)
    ioff1 = foff1.astype(np.int64)
    asm = _Assembler(radial.size)

    single = (w0 == 1) & (w1 == 1)
    asm.add(pix[single], ioff1[single] * n0 + ioff0[single], np.ones(np.count_nonzero(single)))

    # w == 0: the pixel was clamped flat onto a range boundary; pyFAI inserts nothing either
    sel_m = np.flatnonzero((w0 >= 1) & (w1 >= 1) & ~single)
    key = _pow2_class(w0[sel_m]) * (1 << 32) + _pow2_class(w1[sel_m])
    for kk in np.unique(key):
        K0, K1 = int(kk >> 32), int(kk & ((1 << 32) - 1))
        for idx in _chunks(sel_m[key == kk], K0 * K1):
            _full_2d_block(asm, pix, idx, b0, b1, foff0, foff1, ioff0, ioff1, w0, w1, K0, K1, n0)
    return asm.finish()


def _full_2d_block(asm, pix, idx, b0, b1, foff0, foff1, ioff0, ioff1, w0, w1, K0, K1, n0):
    """Run the 2-D kernel on the pixels ``idx`` (boxes up to K0 x K1) and hand their entries on."""
    l0 = b0[:, idx] - foff0[idx]
    l1 = b1[:, idx] - foff1[idx]
    vals = _full_2d_kernel(l0, l1, w0[idx], w1[idx], K0, K1)                # (P, K0, K1)
    ii = np.arange(K0)[None, :, None]
    jj = np.arange(K1)[None, None, :]
    rows = (ioff1[idx][:, None, None] + jj) * n0 + (ioff0[idx][:, None, None] + ii)
    rows = np.where(vals != 0, rows, 0)     # cells outside the pixel's box carry no weight
    asm.add(pix[idx], rows, vals)


def _full_2d_kernel(l0, l1, w0, w1, K0, K1):
    """pyFAI ``_integrate2d`` of the 4 edges into a float32 box, cells normalised by their sum.

    l0, l1: (4, P) corner coordinates in local bin units (>= 0); the pixel's box is
    ``w0 x w1`` cells (``<= K0 x K1``).  For every edge and every column, the signed area
    under the edge is stacked from the bottom of the column in cells of the column width.
    """
    P = l0.shape[1]
    box = np.zeros((P, K0, K1), dtype=_F32)
    colf = np.arange(K0, dtype=_F64)[None, :]
    colf1 = colf + 1.0
    for ia, ib in _EDGES:
        s0, s1, e0, e1 = l0[ia], l1[ia], l0[ib], l1[ib]
        nz = s0 != e0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            slope = ((e1 - s1) / (e0 - s0)).astype(_F32).astype(_F64)        # float slope
            intercept = (e1 - slope * e0).astype(_F32).astype(_F64)          # float intercept
        fs, fe = np.floor(s0), np.floor(e0)
        lo_f = np.minimum(fs, fe)[:, None]
        hi_f = np.maximum(fs, fe)[:, None]
        pos = (e0 > s0)[:, None]
        s0c, e0c = s0[:, None], e0[:, None]
        i1 = np.where(pos, np.maximum(s0c, colf), np.minimum(s0c, colf1))
        i2 = np.where(pos, np.minimum(e0c, colf1), np.maximum(e0c, colf))
        act = nz[:, None] & (colf >= lo_f) & (colf <= hi_f) & (i1 != i2)
        # pyFAI's _calc_area is a fused function: the partial pieces of an edge spanning
        # several columns (``_calc_area(start0, P)`` and ``_calc_area(P, stop0)``, P a float)
        # run in its float specialisation (I1, I2, I2-I1, I2+I1 in float32, the rest in
        # double), every other piece in double.  Checked bit for bit against pyFAI's binary.
        same = np.where(e0 > s0, np.ceil(s0) > e0, e0 > fs)[:, None]
        partial = (((colf == fs[:, None]) & (s0 != fs)[:, None])
                   | ((colf == fe[:, None]) & (e0 != fe)[:, None])) & ~same
        slope_c, icpt_c = slope[:, None], intercept[:, None]
        with np.errstate(invalid="ignore", over="ignore"):
            seg = ((i2 - i1) * (0.5 * slope_c * (i2 + i1) + icpt_c)).astype(_F32)
            if partial.any():
                i1f = i1.astype(_F32)
                i2f = i2.astype(_F32)
                seg_f = ((i2f - i1f).astype(_F64) * (0.5 * slope_c * (i2f + i1f).astype(_F64) + icpt_c)).astype(_F32)
                seg = np.where(partial, seg_f, seg)
            d_a = np.abs(i2 - i1).astype(_F32)                                # float width
        act &= seg != 0
        if not act.any():
            continue
        rem = np.where(act, np.abs(seg), _F32(0))
        sgn = np.where(seg < 0, _F32(-1), _F32(1))
        for h in range(K1):
            live = rem > 0
            if not live.any():
                break
            big = d_a > rem
            contrib = np.where(live, sgn * np.where(big, rem, d_a), _F32(0))
            box[:, :, h] += contrib                                           # float box
            rem = np.where(big, _F32(-1), rem - d_a)
    mask = (np.arange(K0)[None, :, None] < w0[:, None, None]) & (np.arange(K1)[None, None, :] < w1[:, None, None])
    boxd = np.where(mask, box.astype(_F64), 0.0)
    total = boxd.reshape(P, -1).sum(axis=1)
    good = total != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = boxd * (1.0 / total)[:, None, None]
    vals[~good] = 0.0      # degenerate (zero-area) pixels: pyFAI writes NaN, we drop them
    return vals
