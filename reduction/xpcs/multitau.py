"""Multi-tau correlation of a frame series, streamed over blocks of frames (pure numpy, float64).

Lag convention (boost-corr's, ``dpl`` delays per level, 4 by default): lags 1 … 2·dpl at level 0, then
x·2^L for x = dpl+1 … 2·dpl at level L ≥ 1 (1–8, 10, 12, 14, 16, 20, 24, …), as long as x·2^L is below
the frames that fill whole bins of level L, ``(N // 2^L)·2^L``. Level L correlates the series binned by
2^L (the sums of consecutive pairs of level L−1): lag x·2^L pairs bin t with bin t + x, for the
``N // 2^L − x`` bins that have a partner.

Streaming: each level keeps the last 2·dpl binned frames (the partners of the next ones) and at most
one frame waiting for its pair (the carry into the next level), so the state is
``P · (n_delays + (2·dpl + 2) · n_levels)`` float64 numbers for P pixels, whatever the number of
frames (plus the intensity of each static bin per frame, N·S numbers, an output).

The result (:class:`MultiTauSums`) holds *additive* sums per static q bin and delay — ΣG2, ΣIP, ΣIF,
pixel counts, Σg2_pix, Σg2_pix² — from which :func:`normalise` computes g2 per dynamic bin.

Only ΣG2 needs every pixel (:meth:`MultiTau._correlate_pixels`, which the OpenCL correlator of
:mod:`reduction.xpcs.opencl` replaces); ΣIP and ΣIF come from the intensity trace of the static bins.
Binned frames are kept as sums (not means) until :meth:`MultiTau.result`: integer counts then give
integer-valued float64 sums, exact below 2^53, so the order of the additions does not change them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["delays", "MultiTau", "MultiTauSums", "G2", "normalise", "state_bytes"]


def delays(nframes: int, dpl: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(delays in frames, their level) for a series of ``nframes`` frames, boost-corr's convention.

    >>> d, lv = delays(100)
    >>> d.tolist()
    [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80]
    """
    if dpl < 1:
        raise ValueError(f"dpl (delays per level) must be >= 1, got {dpl}")
    taus, levels = list(range(1, dpl + 1)), [0] * dpl
    level = 0
    while True:
        scale = 2 ** level
        for x in range(dpl + 1, 2 * dpl + 1):
            if x * scale >= nframes // scale * scale:
                return np.array(taus, dtype=np.int64), np.array(levels, dtype=np.int64)
            taus.append(x * scale)
            levels.append(level)
        level += 1


@dataclass
class MultiTauSums:
    """Additive sums of one series: per delay k and static bin s (float64). Two series of the same
    partition (two scans) add field by field, except ``delay``/``level``/``intensity``."""

    delay: np.ndarray  # (K,) frames
    level: np.ndarray  # (K,) multi-tau level (bin of 2^level frames)
    products: np.ndarray  # (K,) products per pixel: N // 2^level − delay // 2^level
    G2: np.ndarray  # (K, S) Σ over pixels and time of I(t)·I(t+τ), counts²/frame² (binned frames are means)
    IP: np.ndarray  # (K, S) Σ over pixels and time of I(t), counts/frame
    IF: np.ndarray  # (K, S) Σ over pixels and time of I(t+τ)
    pixels: np.ndarray  # (S,) pixels of each static bin
    g2_pix: np.ndarray  # (K, S) Σ over pixels of the pixel g2 (normalised by the static bin's IP, IF)
    g2_pix2: np.ndarray  # (K, S) Σ of its square
    intensity: np.ndarray  # (N, S) counts of each static bin in each frame
    frame_sum: np.ndarray  # (P,) counts of each pixel over the series


def state_bytes(npix: int, nframes: int, dpl: int = 4, block: int = 0) -> int:
    """The memory bound of :class:`MultiTau`'s state for ``npix`` pixels (bytes), excluding the
    N·S intensity trace: delays and levels grow as log2(N), nothing else with N."""
    d, lv = delays(nframes, dpl)
    n_levels = int(lv.max()) + 1 if len(lv) else 1
    return 8 * npix * (len(d) + (2 * dpl + 2) * n_levels + 4 * block + 4)


class MultiTau:
    """Multi-tau correlator over P pixels grouped into S static bins; feed blocks, then :meth:`result`.

    Parameters
    ----------
    static_index : (P,) int, the static bin (0 … S−1) of each pixel.
    n_static : S.
    nframes : frames the series will have (the delays depend on it).
    dpl : delays per level.
    """

    def __init__(self, static_index: np.ndarray, n_static: int, nframes: int, dpl: int = 4) -> None:
        static_index = np.asarray(static_index, dtype=np.int64)
        if static_index.ndim != 1 or (len(static_index) and (static_index.min() < 0 or static_index.max() >= n_static)):
            raise ValueError(f"static_index must be (P,) in [0, {n_static}), got shape {static_index.shape}")
        self.npix, self.n_static, self.nframes, self.dpl = len(static_index), int(n_static), int(nframes), int(dpl)
        self.static_index = static_index
        self.delay, self.level = delays(self.nframes, self.dpl)
        self.n_levels = int(self.level.max()) + 1 if len(self.level) else 1
        # to static bins: (P, S) one-hot, so a (B, P) block projects with one sparse product
        self._to_static = sp.csr_matrix((np.ones(self.npix), (np.arange(self.npix), static_index)),
                                        shape=(self.npix, self.n_static))
        self._pixels = np.bincount(static_index, minlength=self.n_static).astype(np.float64)
        # integer frames: the pixels grouped by static bin, so a block's sums per bin are one reduceat
        order = np.argsort(static_index, kind="stable")
        self._filled = np.flatnonzero(self._pixels > 0)  # the static bins with pixels
        self._starts = np.searchsorted(static_index[order], self._filled)
        self._by_static = None if np.array_equal(order, np.arange(self.npix)) else order  # None: no gather
        K = len(self.delay)
        self._G2 = np.zeros((K, self.npix))
        self._tail = [np.zeros((0, self.npix)) for _ in range(self.n_levels)]
        self._carry = [np.zeros((0, self.npix)) for _ in range(self.n_levels)]
        self._lags = [[(k, int(self.delay[k]) >> lv) for k in np.flatnonzero(self.level == lv)]
                      for lv in range(self.n_levels)]
        self._keep = [max((x for _, x in lags), default=0) for lags in self._lags]
        self._intensity: list[np.ndarray] = []
        self._frame_sum = np.zeros(self.npix)
        self.seen = 0

    def add(self, block: np.ndarray) -> np.ndarray:
        """Correlate the next frames: ``block`` (B, P) of any numeric type, in time order. Returns the
        counts of each static bin in each of these frames, (B, S)."""
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.npix:
            raise ValueError(f"a block must be (frames, {self.npix} pixels), got {block.shape}")
        if self.seen + len(block) > self.nframes:
            raise ValueError(f"{self.seen + len(block)} frames fed to a correlator of {self.nframes}")
        self.seen += len(block)
        static_sum = self._static_sums(block)
        self._intensity.append(static_sum)
        self._frame_sum += block.sum(axis=0, dtype=np.float64)
        self._correlate_pixels(block)
        return static_sum

    def _static_sums(self, block: np.ndarray) -> np.ndarray:
        """(B, S) counts of each static bin in each frame of ``block``. Integer frames are summed as
        integers (exact, so the same float64 numbers as any order of float64 additions) over the
        pixels grouped by bin, without a float64 copy of the block; other frames through the one-hot
        sparse product, in float64."""
        if block.dtype.kind in "biu" and block.dtype.itemsize <= 4:
            grouped = block if self._by_static is None else np.take(block, self._by_static, axis=1)
            out = np.zeros((len(block), self.n_static))
            if len(self._filled) and len(block):
                out[:, self._filled] = np.add.reduceat(grouped, self._starts, axis=1, dtype=np.int64)
            return out
        x = block.astype(np.float64, copy=False)
        return np.asarray(self._to_static.T @ x.T).T

    def _correlate_pixels(self, block: np.ndarray) -> None:
        """ΣG2 of every pixel over the new frames ``block`` (as given), every level."""
        x = block.astype(np.float64, copy=False)
        for lv in range(self.n_levels):
            if not len(x):
                break
            self._correlate(lv, x)
            x = self._bin(lv, x)

    def _correlate(self, lv: int, x: np.ndarray) -> None:
        """Products of the new binned frames ``x`` of level ``lv`` with their partners x bins before."""
        tail = self._tail[lv]
        ext = np.concatenate([tail, x]) if len(tail) else x
        h = len(tail)
        for k, lag in self._lags[lv]:
            first = max(h, lag)  # the new frames that have a partner `lag` bins before
            if first >= len(ext):
                continue
            now, before = ext[first:], ext[first - lag:len(ext) - lag]
            self._G2[k] += np.einsum("tp,tp->p", now, before)
        keep = self._keep[lv]
        self._tail[lv] = ext[max(0, len(ext) - keep):].copy()

    def _bin(self, lv: int, x: np.ndarray) -> np.ndarray:
        """The next level's frames: sums of consecutive pairs, one frame carried to the next block."""
        if lv + 1 >= self.n_levels:
            return x[:0]
        carry = self._carry[lv]
        y = np.concatenate([carry, x]) if len(carry) else x
        n = len(y) // 2 * 2
        self._carry[lv] = y[n:].copy()
        return y[0:n:2] + y[1:n:2]

    def _G2_sums(self) -> np.ndarray:
        """(K, P) ΣG2 of every pixel, binned frames as sums."""
        return self._G2

    def _partner_sums(self, intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, S) ΣIP and ΣIF, binned frames as sums: each static bin's counts in the frames that have
        a partner ``lag`` bins later (IP) and earlier (IF), from the trace ``intensity`` (N, S)."""
        IP = np.zeros((len(self.delay), self.n_static))
        IF = np.zeros_like(IP)
        for lv in range(self.n_levels):
            T = 1 << lv
            n_bins = self.nframes >> lv
            binned = intensity[:n_bins * T].reshape(n_bins, T, self.n_static).sum(axis=1)
            for k, lag in self._lags[lv]:
                IP[k] = binned[:n_bins - lag].sum(axis=0)
                IF[k] = binned[lag:].sum(axis=0)
        return IP, IF

    def result(self) -> MultiTauSums:
        """The sums, once every frame was fed (raises otherwise)."""
        if self.seen != self.nframes:
            raise ValueError(f"the correlator was fed {self.seen} of {self.nframes} frames")
        scale = (2.0 ** self.level)[:, None]
        products = (self.nframes >> self.level) - (self.delay >> self.level)
        G2_pix = self._G2_sums() / scale**2  # binned frames as means: counts²/frame²
        G2 = np.asarray(self._to_static.T @ G2_pix.T).T
        intensity = np.concatenate(self._intensity) if self._intensity else np.zeros((0, self.n_static))
        IP, IF = self._partner_sums(intensity)
        IP, IF = IP / scale, IF / scale
        # the pixel g2, normalised by its static bin's mean IP and IF (per product and pixel)
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = (IP / self._pixels) * (IF / self._pixels) / products[:, None]
            g2_pix = G2_pix / norm[:, self.static_index]
        g2_pix[~np.isfinite(g2_pix)] = 0.0
        g2_sum = np.asarray(self._to_static.T @ g2_pix.T).T
        g2_sq = np.asarray(self._to_static.T @ (g2_pix * g2_pix).T).T
        return MultiTauSums(self.delay.copy(), self.level.copy(), products.astype(np.float64), G2, IP, IF,
                            self._pixels.copy(), g2_sum, g2_sq, intensity, self._frame_sum.copy())


@dataclass(frozen=True)
class G2:
    """g2 per delay and dynamic bin, with its error; NaN where a bin has no pixel or a static bin
    no counts."""

    delay: np.ndarray  # (K,) frames
    g2: np.ndarray  # (K, D)
    g2_err: np.ndarray  # (K, D)
    g2_static: np.ndarray  # (K, S)


def normalise(sums: MultiTauSums, static_to_dynamic: np.ndarray, n_dynamic: int) -> G2:
    """g2 from the sums: per static bin ⟨I(t)I(t+τ)⟩ / (⟨I(t)⟩⟨I(t+τ)⟩) (means over its pixels and
    the products), averaged over the static bins of each dynamic bin; the error is the standard
    deviation (ddof=1) of the pixel g2 over the dynamic bin's pixels over √pixels.

    ``static_to_dynamic``: (S,) the dynamic bin (0 … D−1) of each static bin, −1 for none.
    """
    static_to_dynamic = np.asarray(static_to_dynamic, dtype=np.int64)
    n = sums.products[:, None]
    pix = sums.pixels[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        g2_s = (sums.G2 / (n * pix)) / ((sums.IP / (n * pix)) * (sums.IF / (n * pix)))
    g2_s[:, (sums.pixels == 0)] = np.nan
    g2_s[~np.isfinite(g2_s)] = np.nan
    K = len(sums.delay)
    g2 = np.full((K, n_dynamic), np.nan)
    err = np.full((K, n_dynamic), np.nan)
    for d in range(n_dynamic):
        members = np.flatnonzero((static_to_dynamic == d) & (sums.pixels > 0))
        if not len(members):
            continue
        with np.errstate(invalid="ignore"):
            g2[:, d] = np.nanmean(g2_s[:, members], axis=1) if np.isfinite(g2_s[:, members]).any() else np.nan
        m = sums.pixels[members].sum()
        if m > 1:
            s1, s2 = sums.g2_pix[:, members].sum(axis=1), sums.g2_pix2[:, members].sum(axis=1)
            var = np.maximum(s2 - s1 * s1 / m, 0.0) / (m - 1)
            err[:, d] = np.sqrt(var / m)
    return G2(sums.delay.copy(), g2, err, g2_s)
