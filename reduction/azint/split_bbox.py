"""Matrix entries for the splitting schemes "no" and "bbox" (pyFAI's ``splitBBoxCSR.HistoBBox1d/2d``).

A pixel is the interval ``[centre - delta, centre + delta]`` in each direction (``delta = 0``
for "no", :func:`~reduction.azint.pixels.pixel_delta` for "bbox") and its weight is spread over the
bins that interval covers in proportion to the length inside each.  Rules reproduced (pyFAI
2026.9, ``ext/splitBBox_common.pyx``):

* **1-D** (``calc_lut_1d``): a pixel covers ``[c - d, c + d]`` (``d = 0`` for "no").
  ``fmin, fmax`` are the fractional bin numbers of both ends, ``bmin = trunc(fmin)``,
  ``bmax = trunc(fmax)`` (C truncation toward zero, so a position in ``(lo - delta, lo)`` still
  lands in bin 0). The pixel is dropped if ``bmax < 0`` or ``bmin >= n``; otherwise the bins
  are clipped to ``[0, n-1]``. One bin -> weight 1; else with ``inv = 1/(fmax - fmin)``:
  ``inv * (bmin + 1 - fmin)`` in ``bmin``, ``inv * (fmax - bmax)`` in ``bmax``, ``inv`` in
  between (so the weight of a pixel sticking out of the range piles up in the edge bin and
  the column always sums to 1).  With ``azimuth_range=(a, b)`` a pixel is dropped (entirely)
  when ``χc + dχ < a`` or ``χc - dχ > b`` (``dχ = 0`` for "no"); kept pixels count fully.
* **2-D** (``calc_lut_2d``): the same in both directions; the weight of bin
  ``(i, j)`` is the product of the radial and azimuthal fractions (a direction where the pixel
  falls in a single bin contributes a factor 1).  No χ wrapping: a pixel near ±π just clips.

Both builders return the entries ``(rows, cols, vals)`` pixel-major, for
:func:`reduction.azint.splitting.build_matrix` to pack into CSR.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .bins import Bins
from .pixels import PixelPositions, pixel_delta

__all__ = ["bbox_1d", "bbox_2d"]

_F64 = np.float64


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


def _gather(a: np.ndarray, size: int) -> Callable[[np.ndarray], np.ndarray]:
    """Indexer for the active subset ``a`` (a no-op when every item is active)."""
    if a.size == size:
        return lambda x: x
    return lambda x: x[a]


def _layered(count: np.ndarray, emit: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def bbox_1d(radial: PixelPositions, azimuth: PixelPositions, valid: np.ndarray, bins: Bins,
            arange_: tuple[float, float] | None, do_split: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D entries; ``arange_`` (radians) keeps only the pixels whose χ span meets it."""
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


def bbox_2d(radial: PixelPositions, azimuth: PixelPositions, valid: np.ndarray, rbins: Bins, abins: Bins,
            do_split: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D entries, row ``i_azim * rbins.n + i_rad``."""
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
