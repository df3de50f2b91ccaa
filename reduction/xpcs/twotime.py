"""Two-time correlation C(t1, t2) of the pixels of one dynamic q bin, tile by tile (upper triangle).

Each frame's pixels are first divided by the mean of their static bin in that frame (boost-corr's
"sqmap" smoothing: the static sub-rings take out the intensity's variation across a ring and in
time), then, for frames t1 ≤ t2,

    C(t1, t2) = n · Σ_p x(t1, p)·x(t2, p) / (Σ_p x(t1, p) · Σ_p x(t2, p))

over the n pixels p of the dynamic bin (a sum of zero counts as 1): a matrix product per tile, which
BLAS (or a GPU) does well. Memory: the normalised series (frames × pixels of the bins asked for,
float32) and one tile² block at a time; the N² result is written tile by tile by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["normalise_frames", "twotime_tiles", "TILE", "Product"]

#: Frames per side of a tile of C (a 2048² float64 product block is 32 MiB).
TILE = 2048


def normalise_frames(block: np.ndarray, static_index: np.ndarray, static_sum: np.ndarray,
                     static_pixels: np.ndarray) -> np.ndarray:
    """``block`` (B, P) divided by each pixel's static-bin mean in the same frame, float32.

    ``static_sum`` (B, S): counts of each static bin in each frame (over all its pixels);
    ``static_pixels`` (S,): its pixels. A static bin without counts in a frame divides by 1.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = static_sum / static_pixels
    mean[~(mean > 0)] = 1.0
    return (block / mean[:, static_index]).astype(np.float32)


Product = Callable[[int, int, int, int], np.ndarray]


def _numpy_product(x: np.ndarray) -> Product:
    """``x[i0:i1] @ x[j0:j1].T`` in float64 (BLAS)."""
    return lambda i0, i1, j0, j1: x[i0:i1].astype(np.float64) @ x[j0:j1].T.astype(np.float64)


def twotime_tiles(x: np.ndarray, tile: int = TILE, product: Product | None = None,
                  ) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """Yield ``(i0, i1, j0, j1, C[i0:i1, j0:j1])`` for the tiles on and above the diagonal of the
    two-time matrix of the series ``x`` (frames, pixels), float32; in a diagonal tile the entries
    below the diagonal are NaN. ``product(i0, i1, j0, j1)``: the raw float64 product of two blocks
    of frames (numpy's by default; the OpenCL one from :mod:`reduction.xpcs.opencl`)."""
    product = product or _numpy_product(x)
    n_frames, npix = x.shape
    total = x.sum(axis=1, dtype=np.float64)
    total[total <= 0] = 1.0
    inv = 1.0 / total
    for i0 in range(0, n_frames, tile):
        i1 = min(i0 + tile, n_frames)
        for j0 in range(i0, n_frames, tile):
            j1 = min(j0 + tile, n_frames)
            c = product(i0, i1, j0, j1)
            c *= npix * inv[i0:i1, None] * inv[None, j0:j1]
            if i0 == j0:
                c[np.tril_indices(i1 - i0, -1, j1 - j0)] = np.nan
            yield i0, i1, j0, j1, c.astype(np.float32)
