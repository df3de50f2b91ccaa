"""The science of the sum kind, as a pure function: frames in, per-frame sums out.

A pixel counts unless it is masked or invalid by the rule the azimuthal-integration engines use
(:func:`reduction.azint.engines.contract.invalid_mask`: NaN/inf in float frames; the dtype's
maximum — the detectors' gap value — and, for signed types, negatives in integer frames), so a
detector gap never adds 4294967295 counts to a total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from reduction.azint.engines.contract import invalid_mask

__all__ = ["FrameSums", "FIELDS", "frame_sums"]


@dataclass(frozen=True)
class FrameSums:
    """Per frame of a stack, float64 (NaN-able: frames without a result are NaN in the master)."""

    total: np.ndarray  # sum of the valid pixels (exact for integer frames up to 2**53 counts)
    maximum: np.ndarray  # their maximum; NaN for a frame without a valid pixel
    pixels: np.ndarray  # how many pixels were valid

    @classmethod
    def concat(cls, parts: Sequence[FrameSums]) -> FrameSums:
        """The sums of consecutive blocks of frames as the sums of the whole stack."""
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in FIELDS))


#: The per-frame datasets, in chunk files and in the master's NXdata.
FIELDS = tuple(f.name for f in fields(FrameSums))


def frame_sums(frames: np.ndarray, masked: np.ndarray | None = None) -> FrameSums:
    """Total, maximum and number of the valid pixels of each frame of ``frames`` (B, ny, nx).

    ``masked`` (ny, nx): True where a pixel is left out. A frame whose pixels are all left out has
    total 0, pixels 0 and maximum NaN.

    >>> frames = np.full((2, 2, 3), 7, dtype=np.uint32)
    >>> frames[1, 0, 0] = 2**32 - 1                      # a detector gap
    >>> s = frame_sums(frames)
    >>> s.total.tolist(), s.maximum.tolist(), s.pixels.tolist()
    ([42.0, 35.0], [7.0, 7.0], [6.0, 5.0])
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype.kind not in "uif":
        raise ValueError(f"frames must be a (B, ny, nx) stack of integers or floats, got {frames.dtype} "
                         f"of shape {frames.shape}")
    valid = ~invalid_mask(frames)
    if masked is not None:
        if masked.shape != frames.shape[1:]:
            raise ValueError(f"a mask of shape {masked.shape} does not fit frames of shape {frames.shape[1:]}")
        valid &= ~masked
    lowest = -np.inf if frames.dtype.kind == "f" else np.iinfo(frames.dtype).min
    pixels = valid.sum(axis=(1, 2)).astype(np.float64)
    maximum = frames.max(axis=(1, 2), where=valid, initial=lowest).astype(np.float64)
    maximum[pixels == 0] = np.nan
    total = frames.sum(axis=(1, 2), where=valid, dtype=np.float64)
    return FrameSums(total=total, maximum=maximum, pixels=pixels)
