"""Matrix entries for the splitting scheme "full" (pyFAI's ``splitPixelFullCSR.FullSplitCSR_1d/2d``).

Each pixel is the quadrilateral of its 4 corners ``(radial, χ)`` and its weight is spread over
the bins in proportion to the area inside each.  Rules reproduced (pyFAI 2026.9,
``calc_lut_1d`` / ``calc_lut_2d`` of ``FullSplitIntegrator``, ``ext/splitpixel_common.pyx``):

* **χ = ±π**: pixels straddling the discontinuity are detected by the sign of pyFAI's
  (approximate) algebraic area ``0.5*(c0-a0)*(d1-b1) - (c1-a1)*(d0-b0)`` (sic: only the first
  term is halved): a sign opposite to that of ordinary pixels marks a straddling pixel, whose
  negative χ corners get +2π and, if the mean χ then exceeds π, all its χ corners get -2π
  ("recentering").  pyFAI takes the sign convention of ordinary pixels from
  ``detector.orientation``; here it is the majority sign over the valid pixels, which is the
  same thing for any consistent geometry.
* **1-D**: corners in fractional radial bins, dropped if ``max < 0`` or ``min >= n`` (or, with
  an azimuth range, if the recentred χ corners satisfy ``max < a`` or ``min > b``); if all
  corners fall in one bin -> weight 1; else the exact area of the polygon in every bin in
  range (trapezoid integration of the 4 edges, accumulated in a float32 buffer as pyFAI
  does) divided by the sum over the bins in range (the part outside the range is dropped
  and the rest renormalised to 1).
* **2-D**: the pixel is dropped if entirely outside ``[lo, hi_in]`` radially (``hi_in`` is the
  range maximum before the eps32 fudge) or with ``max χ < lo_χ`` / ``min χ >= hi_χ``; each
  corner coordinate is then *clamped* into ``[lo, hi_in]`` and pyFAI's box algorithm is
  applied: for every edge and every radial column the signed area under the edge is
  stacked from the bottom of the box as full cells of the column width (this is pyFAI's
  approximation, not the exact polygon/cell overlap); weights are the box cells divided by
  their sum.  pyFAI's float32 arithmetic (``float`` slope, intercept, widths, areas and box;
  the float specialisation of ``_calc_area`` for the partial pieces of an edge) is emulated,
  so the weights agree with pyFAI's to float32 rounding.

Deliberate differences with pyFAI (2026.9):

* a pixel whose (clamped) area is exactly 0, e.g. one with a corner exactly at the PONI, gets
  NaN weights in pyFAI (NaN bins in its results); it is dropped here;
* ``FullSplitCSR_2d`` starts from an uninitialised (``numpy.empty``) buffer, so the first pixel
  it processes gets garbage weights; not reproduced;
* pyFAI passes the 2-D full-split engine a χ period of 360 (the period of ``chi_deg``) while χ
  is in radians; this only matters for azimuth ranges extending past ±π; 2π is used here.

Pure numpy, vectorised over pixels: pixels are grouped by the power-of-two size of their bin
box and processed in cache-sized chunks.  Both builders return the entries ``(rows, cols,
vals)`` pixel-major, for :func:`reduction.azint.splitting.build_matrix` to pack into CSR.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .bins import Bins, lower_from_upper
from .pixels import PixelPositions

__all__ = ["full_1d", "full_2d"]

_TWO_PI = 2.0 * math.pi
_F32 = np.float32
_F64 = np.float64
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
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
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


def _full_prepare(radial: PixelPositions, azimuth: PixelPositions, valid: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def full_1d(radial: PixelPositions, azimuth: PixelPositions, valid: np.ndarray, bins: Bins,
            arange_: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D entries; ``arange_`` (radians) keeps only the pixels whose recentred χ corners meet it."""
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


def _chunks(idx: np.ndarray, cells: int) -> Iterator[np.ndarray]:
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


def full_2d(radial: PixelPositions, azimuth: PixelPositions, valid: np.ndarray, rbins: Bins,
            abins: Bins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D entries, row ``i_azim * rbins.n + i_rad``."""
    pix, r, chi = _full_prepare(radial, azimuth, valid)
    lo0, n0, delta0 = rbins.lo, rbins.n, rbins.delta
    lo1, delta1 = abins.lo, abins.delta
    maxin0, maxin1 = lower_from_upper(rbins.hi), lower_from_upper(abins.hi)
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
