"""What every engine shares: the output of a block, the frame block it takes, the invalid-pixel
rule, its canonical copy of the matrix, and the default thread count.

An engine is a small class built once from an integration matrix (``Engine(matrix, ...)``) whose
``reduce(frames, variance=...)`` maps a block of B frames (B, npix) to :class:`EngineOutput`:
the weighted sums per bin and the (frame, pixel) entries it had to leave out. The numpy engine
(:mod:`.numpy_engine`) and the OpenCL engine (:mod:`.opencl_engine`) give the same numbers
within float32 tolerance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["EngineOutput", "canonical_matrix", "default_threads", "frame_block", "invalid_mask"]


@dataclass
class EngineOutput:
    """What an engine's ``reduce`` returns for a block of B frames."""

    signal: np.ndarray  # (B, nbins) float64
    variance: np.ndarray | None  # (B, nbins) float64, None when variance=False
    invalid: np.ndarray  # (K, 2) int64: [frame, pixel] of invalid entries in non-empty columns


def default_threads() -> int:
    """``XREDUCE_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs this process may use."""
    for var in ("XREDUCE_THREADS", "OMP_NUM_THREADS"):
        val = os.environ.get(var, "").strip()
        if val:
            try:
                n = int(val.split(",")[0])
            except ValueError:
                continue
            if n > 0:
                return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def frame_block(frames: Any, npix: int) -> np.ndarray:
    """Frames as an engine takes them: (B, npix) of integers or floats, one frame or a stack of
    images accepted; a wrong shape or type is an error naming what was expected."""
    frames = np.asarray(frames)
    if frames.ndim == 1:
        frames = frames[np.newaxis]
    elif frames.ndim > 2:
        frames = frames.reshape(frames.shape[0], -1)
    if frames.ndim != 2 or frames.shape[1] != npix:
        raise ValueError(f"frames must have shape (B, {npix}) to match the matrix, got {np.shape(frames)}")
    if frames.dtype.kind not in "uif" or frames.dtype.itemsize > 8:
        raise TypeError(f"unsupported frame dtype {frames.dtype}; expected integers or floats")
    return frames


def invalid_mask(values: np.ndarray) -> np.ndarray:
    """True where a value marks a pixel without data: NaN/inf for floats; for integers the dtype's
    maximum (the detectors' gap value, e.g. 2**32-1) and, for signed types, negatives (-1)."""
    if values.dtype.kind == "f":
        return ~np.isfinite(values)
    bad = values == np.iinfo(values.dtype).max
    if values.dtype.kind == "i":
        bad |= values < 0
    return bad


def canonical_matrix(matrix: Any) -> sp.csc_array:
    """An engine's own copy of the weights: float64 CSC, duplicates summed, zeros dropped,
    sorted indices (engines walk columns = pixels, in order)."""
    if not sp.issparse(matrix):
        raise TypeError(f"matrix must be a scipy.sparse array/matrix, got {type(matrix).__name__}")
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D (nbins x npix), got shape {matrix.shape}")
    csc = sp.csc_array(matrix, dtype=np.float64, copy=True)
    csc.sum_duplicates()
    csc.eliminate_zeros()
    csc.sort_indices()
    return csc
