"""The xpcs kind's known-answer selftest: a series alternating 1, 3, 1, 3 … counts in every pixel.

Its g2 is known by hand. At level 0, an even lag pairs equal counts, (1+9)/2 over 2·2 = 5/4; an odd
lag τ pairs 1 with 3 over n = N − τ products (n odd), whose means are 2 − 1/n and 2 + 1/n, so
g2 = 3 / (4 − 1/n²). From level 1 on, binned pairs are all 4: g2 = 1. The delays follow boost-corr.
"""

from __future__ import annotations

import numpy as np

from reduction.step import FAILED, OK, SelfCheck, SelfTest

from .multitau import MultiTau, delays, normalise

__all__ = ["run_selftest", "expected_g2"]

_N, _PIX = 64, 6


def expected_g2(nframes: int = _N) -> np.ndarray:
    """g2 of the alternating series at each delay of :func:`delays`."""
    d, lv = delays(nframes)
    out = np.ones(len(d))
    for k, (tau, level) in enumerate(zip(d, lv)):
        if level == 0:
            n = nframes - tau
            out[k] = 1.25 if tau % 2 == 0 else 3.0 / (4.0 - 1.0 / n**2)
    return out


def run_selftest(kind: str) -> SelfTest:
    """One check named ``kind``: the alternating series' g2 (to 1e-12) and delay list."""
    try:
        frames = np.tile(np.array([1, 3], dtype=np.uint16), _N // 2)[:, None] * np.ones((1, _PIX), dtype=np.uint16)
        mt = MultiTau(np.repeat([0, 1], _PIX // 2), 2, _N)
        for b in range(0, _N, 5):  # blocks across the pairs of level 1
            mt.add(frames[b:b + 5])
        got = normalise(mt.result(), np.array([0, 0]), 1)
    except Exception as exc:  # a broken installation: say what, never crash the selftest
        return SelfTest([SelfCheck(kind, FAILED, f"{type(exc).__name__}: {exc}")])
    want = expected_g2()
    problems = []
    if got.delay[:10].tolist() != [1, 2, 3, 4, 5, 6, 7, 8, 10, 12]:
        problems.append(f"delays {got.delay[:10].tolist()} do not follow the multi-tau convention")
    worst = float(np.nanmax(np.abs(got.g2[:, 0] - want))) if np.isfinite(got.g2).all() else np.inf
    if worst > 1e-12:
        problems.append(f"g2 differs from the known answer by {worst:.3g}")
    if problems:
        return SelfTest([SelfCheck(kind, FAILED, "alternating 1,3 series: " + "; ".join(problems))])
    return SelfTest([SelfCheck(kind, OK, f"alternating 1,3 counts, {_N} frames: g2 = 5/4 (even lags), "
                                         f"3/(4-1/n²) (odd lags), 1 (binned levels), {len(want)} delays (exact)")])
