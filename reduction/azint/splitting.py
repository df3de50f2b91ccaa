"""Sparse integration matrices (bins x pixels) reproducing pyFAI's CSR engines.

``build_matrix`` returns the CSR matrix ``W`` (``nbins x npix``) such that ``W @ signal`` is the
per-bin sum of the signal and ``W @ valid`` the per-bin (fractional) pixel count, exactly as
pyFAI's ``splitBBoxCSR.HistoBBox1d/2d`` (splitting ``"no"`` and ``"bbox"``) and
``splitPixelFullCSR.FullSplitCSR_1d/2d`` (splitting ``"full"``) build them, i.e. what
``AzimuthalIntegrator.integrate1d_ng/integrate2d_ng(method=(split, "csr", "cython"))`` use.
Pure numpy/scipy, vectorised over pixels (the only Python loops run over a handful of bin
offsets, pixel corners/edges or size classes). pyFAI is *not* imported here.

Rules reproduced: pyFAI 2026.9, ``ext/splitBBox_common.pyx``, ``ext/splitpixel_common.pyx``,
``ext/regrid_common.pxi``, ``geometry/core.py``.  Each rule is explained beside its code:

* :mod:`reduction.azint.bins`: bins, user ranges and automatic ranges (the float32 eps fudge);
* :mod:`reduction.azint.pixels`: pixel positions and the bounding-box half width ``delta``;
* :mod:`reduction.azint.split_bbox`: the matrix entries for splitting "no" and "bbox";
* :mod:`reduction.azint.split_full`: the matrix entries for splitting "full" (and its own
  deliberate differences with pyFAI).

This module packs those entries into CSR and re-exports the names callers use, so
``from reduction.azint.splitting import ...`` is the one place to import from.

Deliberate differences with pyFAI (2026.9), for every scheme:

* weights are float64 (pyFAI stores float32) and explicit zeros are removed;
* pixels with non-finite positions are ignored; χ's discontinuity is assumed at ±π (pyFAI's
  default ``chiDiscAtPi=True``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse

from reduction.errors import IntegrationError

from .bins import EPS32, Bins, auto_range, pyfai_range, upper_bound
from .pixels import (
    SPLITTINGS,
    PixelPositions,
    check_positions,
    check_splitting,
    check_valid,
    pixel_delta,
)
from .split_bbox import bbox_1d, bbox_2d
from .split_full import full_1d, full_2d

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


def build_matrix(splitting: str, radial: PixelPositions, azimuth: PixelPositions, valid: np.ndarray,
                 radial_bins: Bins, azimuth_bins: Bins | None = None,
                 azimuth_range: tuple[float, float] | None = None) -> scipy.sparse.csr_array:
    """Return the CSR matrix W (nbins × npix), float64, with W[k, j] the fraction of pixel j falling in bin k.

    1-D: azimuth_bins None, nbins = radial_bins.n; `azimuth_range` (radians) optionally restricts
    which pixels count, as pyFAI does for integrate1d(azimuth_range=...) (a pixel is kept or
    dropped as a whole, see :mod:`reduction.azint.split_bbox` and :mod:`reduction.azint.split_full`).
    2-D: nbins = azimuth_bins.n * radial_bins.n, row index k = i_azim * radial_bins.n + i_rad.
    valid: (npix,) bool, False = masked pixel -> its column is empty.
    No explicit zeros stored; indices sorted.
    """
    split = check_splitting(splitting)
    radial = check_positions(radial, "radial")
    azimuth = check_positions(azimuth, "azimuth")
    npix = radial.size
    if azimuth.size != npix:
        raise IntegrationError(f"radial has {npix} pixels but azimuth has {azimuth.size}")
    valid = check_valid(valid, npix)
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
            rows, cols, vals = full_1d(radial, azimuth, valid, radial_bins, arange_)
        else:
            rows, cols, vals = full_2d(radial, azimuth, valid, radial_bins, azimuth_bins)
    else:
        do_split = split == "bbox"
        if azimuth_bins is None:
            rows, cols, vals = bbox_1d(radial, azimuth, valid, radial_bins, arange_, do_split)
        else:
            rows, cols, vals = bbox_2d(radial, azimuth, valid, radial_bins, azimuth_bins, do_split)
    return _to_csr(rows, cols, vals, nrows, npix)


def _to_csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, nrows: int,
            npix: int) -> scipy.sparse.csr_array:
    """Entries must come pixel-major (cols non-decreasing, each (row, col) at most once)."""
    keep = vals != 0
    if not keep.all():
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    idx_dtype = np.int32 if max(nrows, npix, rows.size) < np.iinfo(np.int32).max else np.int64
    # scipy's coo->csr is a stable counting sort by row: columns stay sorted within each row,
    # and the canonical-format check then finds nothing to sum or sort.
    coo = scipy.sparse.coo_array(
        (vals.astype(np.float64, copy=False), (rows.astype(idx_dtype, copy=False), cols.astype(idx_dtype, copy=False))),
        shape=(nrows, npix))
    mat = coo.tocsr()
    mat.sort_indices()
    mat.eliminate_zeros()
    return mat


def _check_bins(bins: Any, name: str) -> Bins:
    if not isinstance(bins, Bins):
        raise IntegrationError(f"{name} must be a Bins, got {type(bins).__name__}")
    return bins


def _check_range(rng: Any, name: str) -> tuple[float, float]:
    try:
        vals = [float(v) for v in rng]
    except (TypeError, ValueError):
        raise IntegrationError(f"{name} must be a pair of numbers, got {rng!r}") from None
    if len(vals) != 2 or not all(math.isfinite(v) for v in vals):
        raise IntegrationError(f"{name} must be a pair of finite numbers, got {rng!r}")
    return min(vals), max(vals)
