"""The sum kind's known-answer selftest: flat frames sum to their counts times the pixels.

Frames of 7 and 3 counts, and a 7 with one pixel at the detectors' gap value: the totals,
maxima and pixel counts are known without computing them, so a wrong sum or a gap counted as
4294967295 counts cannot pass.
"""

from __future__ import annotations

import numpy as np

from reduction.step import FAILED, OK, SelfCheck, SelfTest

from .sums import FIELDS, frame_sums

__all__ = ["run_selftest", "FLAT_COUNTS"]

FLAT_COUNTS = (7, 3)
_SHAPE = (8, 12)


def _frames() -> np.ndarray:
    """The flat frames, then the first one again with a gap pixel (uint32's maximum) at (0, 0)."""
    counts = (*FLAT_COUNTS, FLAT_COUNTS[0])
    frames = np.stack([np.full(_SHAPE, c, dtype=np.uint32) for c in counts])
    frames[-1, 0, 0] = np.iinfo(np.uint32).max
    return frames


def _expected() -> dict[str, list[float]]:
    npix = _SHAPE[0] * _SHAPE[1]
    first, second = FLAT_COUNTS
    return {"total": [first * npix, second * npix, first * (npix - 1)], "maximum": [first, second, first],
            "pixels": [npix, npix, npix - 1]}


def run_selftest(kind: str) -> SelfTest:
    """One check named ``kind``: the flat frames' sums against the known answer, exactly."""
    try:
        sums = frame_sums(_frames())
    except Exception as exc:  # a broken installation: say what, never crash the selftest
        return SelfTest([SelfCheck(kind, FAILED, f"{type(exc).__name__}: {exc}")])
    expected = _expected()
    problems = [f"{name} {getattr(sums, name).tolist()} != {expected[name]}" for name in FIELDS
                if not np.array_equal(getattr(sums, name), expected[name])]
    if problems:
        return SelfTest([SelfCheck(kind, FAILED, "flat frames: " + "; ".join(problems))])
    return SelfTest([SelfCheck(kind, OK, f"flat frames {FLAT_COUNTS} and a {FLAT_COUNTS[0]} with a gap pixel on "
                                         f"{_SHAPE[0]}x{_SHAPE[1]} pixels → totals {expected['total']}, maxima "
                                         f"{expected['maximum']} (exact)")])
