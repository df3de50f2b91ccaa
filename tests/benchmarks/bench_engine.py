"""Benchmark of the batched CPU engine against the naive per-frame ``W @ x``.

Run from the repository root::

    python tests/benchmarks/bench_engine.py            # Eiger 4M, B = 32, ~1 min
    python tests/benchmarks/bench_engine.py --frames 16 --reps 2 --threads 2

Three synthetic Eiger 4M matrices (2167 x 2070 pixels with the module gaps as empty columns, no
pyFAI needed): 1-D with bbox-like splitting (~2.5 non-zeros per pixel, 1000 bins), 1-D without
splitting (1 non-zero of weight 1 per pixel) and a 2-D cake (360 x 500 bins, bbox-like). Frames
are uint32 Poisson counts of 10-1000 with the gaps at 2**32-1 and a few hot pixels at 2**32-1.

For each case it prints ms/frame and frames/s of ``NumpyEngine.reduce`` on a block of B frames
(1 thread and N threads, variance on and off; and one frame per call, B=1) and of the naive loop
``W @ x.astype(float64)`` over the same frames (plus ``W**2 @ max(x, 1)`` for the variance),
measured alternately in the same run (best of ``--reps``), and the speed-up over the naive loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reduction.azint.engines import NumpyEngine  # noqa: E402
from reduction.azint.engines.contract import default_threads  # noqa: E402

NY, NX = 2167, 2070  # Eiger 4M


def eiger_mask(ny: int = NY, nx: int = NX) -> np.ndarray:
    """Module gaps of an Eiger 4M: 37-row horizontal and 10-column vertical gaps."""
    mask = np.zeros((ny, nx), bool)
    for y0 in range(514, ny, 551):
        mask[y0 : y0 + 37] = True
    for x0 in range(1030, nx, 1040):
        mask[:, x0 : x0 + 10] = True
    return mask


def synthetic_matrix(nbins: int = 1000, *, split: bool = True, nchi: int | None = None,
                     half_width: float = 1.35) -> sp.csr_array:
    """Azimuthal-integration-like CSR matrix for an Eiger 4M.

    Radial bins of the distance to a beam centre; with ``split`` each pixel's footprint
    [r - h, r + h] is shared over the 2-3 bins it overlaps (weights sum to 1, like pyFAI's bbox
    splitting); without it, one weight-1 entry per pixel. ``nchi`` adds azimuthal bins (2-D,
    row = chi * nbins + radial). Masked pixels have empty columns.
    """
    yy, xx = np.mgrid[0:NY, 0:NX]
    cy, cx = 0.45 * NY, 0.53 * NX
    r = np.hypot(yy - cy, xx - cx).ravel()
    dr = r.max() * 1.0001 / nbins
    keep_px = ~eiger_mask().ravel()

    def overlaps(centre, half, nb):
        if not split:
            return [(np.minimum(np.floor(centre).astype(np.int64), nb - 1), np.ones_like(centre))]
        lo, hi = centre - half, centre + half
        base = np.floor(lo).astype(np.int64)
        return [(base + k, np.clip(np.minimum(hi, base + k + 1) - np.maximum(lo, base + k), 0, None) / (hi - lo))
                for k in range(3)]

    rad = overlaps(r / dr, half_width / dr, nbins)
    pix = np.arange(NY * NX)
    rows, cols, vals = [], [], []
    if nchi:
        chi = np.arctan2((yy - cy).ravel(), (xx - cx).ravel())
        dchi = 2 * np.pi / nchi
        az = overlaps((chi + np.pi) / dchi, half_width / np.maximum(r, 1.0) / dchi, nchi)
        pairs = [((bq, wq), (bc, wc)) for bq, wq in rad for bc, wc in az]
        for (bq, wq), (bc, wc) in pairs:
            w = wq * wc
            ok = (w > 0) & (bq >= 0) & (bq < nbins) & keep_px
            rows.append(np.mod(bc[ok], nchi) * nbins + bq[ok])
            cols.append(pix[ok])
            vals.append(w[ok])
        nrows = nchi * nbins
    else:
        for b, w in rad:
            ok = (w > 0) & (b >= 0) & (b < nbins) & keep_px
            rows.append(b[ok])
            cols.append(pix[ok])
            vals.append(w[ok])
        nrows = nbins
    coo = sp.coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(nrows, NY * NX))
    w = sp.csr_array(coo)
    w.sum_duplicates()
    w.indices = w.indices.astype(np.int32)  # what scipy would pick for such a matrix
    w.indptr = w.indptr.astype(np.int32)
    return w


def synthetic_frames(nframes: int, seed: int = 0) -> np.ndarray:
    """(B, npix) uint32 Poisson counts 10-1000, gaps and a few hot pixels at 2**32 - 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:NY, 0:NX]
    r = np.hypot(yy - 0.45 * NY, xx - 0.53 * NX)
    lam = (10 + 990 * np.exp(-r / 400) * (1 + 0.5 * np.cos(r / 7) ** 8)).ravel().clip(10, 1000)
    unique = min(nframes, 8)  # Poisson draws are slow: repeat 8 distinct frames
    base = rng.poisson(lam, size=(unique, NY * NX)).astype(np.uint32)
    frames = np.ascontiguousarray(np.resize(base, (nframes, NY * NX)))
    frames[:, eiger_mask().ravel()] = np.iinfo(np.uint32).max
    hot = rng.choice(NY * NX, 20, replace=False)
    frames[:, hot] = np.iinfo(np.uint32).max
    return frames


def naive(matrix, matrix_sq, frames, variance):
    """Per-frame float64 products: what one would write without the engine."""
    for x in frames:
        xf = x.astype(np.float64)
        matrix @ xf
        if variance:
            matrix_sq @ np.maximum(xf, 1.0)


def best_time(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32, help="block size B (default 32)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="engine threads (default: all)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, best kept (default 3)")
    parser.add_argument("--cases", default="bbox,nosplit,2d", help="comma-separated: bbox, nosplit, 2d")
    args = parser.parse_args(argv)
    nframes = args.frames

    print(f"# bench_engine: Eiger 4M {NY}x{NX} = {NY * NX} px, B = {nframes} uint32 frames; "
          f"engine threads 1 and {args.threads}; best of {args.reps}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (load average {load:.2f} "
          f"before the run: other processes skew multi-thread timings), python {platform.python_version()}, "
          f"numpy {np.__version__}, scipy {scipy.__version__}")
    t0 = time.perf_counter()
    frames = synthetic_frames(nframes)
    print(f"# frames generated in {time.perf_counter() - t0:.1f} s")

    cases = {
        "bbox": ("1-D bbox-like, 1000 bins", dict(nbins=1000, split=True)),
        "nosplit": ("1-D no splitting, 1000 bins", dict(nbins=1000, split=False)),
        "2d": ("2-D bbox-like, 360 x 500 bins", dict(nbins=500, nchi=360, split=True)),
    }
    header = f"{'case':32s} {'method':34s} {'ms/frame':>9s} {'frames/s':>9s} {'speed-up':>9s}"
    for key in args.cases.split(","):
        title, kwargs = cases[key]
        t0 = time.perf_counter()
        matrix = synthetic_matrix(**kwargs)
        matrix_sq = matrix.multiply(matrix).tocsr()
        build = time.perf_counter() - t0
        engines = {th: NumpyEngine(matrix, threads=th) for th in sorted({1, args.threads})}
        t0 = time.perf_counter()
        for eng in engines.values():
            for var in (True, False):
                eng.reduce(frames[:nframes], variance=var)  # build the tile plans once
        setup = time.perf_counter() - t0
        ctype = engines[1]._compute_type(frames.dtype, 2, nframes).__name__
        print()
        print(f"## {title}: {matrix.shape[0]} x {matrix.shape[1]}, {matrix.nnz / matrix.shape[1]:.2f} nnz/pixel, "
              f"unit weights: {engines[1].unit_weights}; matrix {build:.1f} s, engine setup {setup:.1f} s, "
              f"in-tile precision {ctype}")
        print(header)
        for var in (True, False):
            what = "signal+variance" if var else "signal only"
            t_naive = np.inf
            t_eng = {th: np.inf for th in engines}
            for _ in range(args.reps):  # alternate the methods: same machine conditions
                t_naive = min(t_naive, best_time(lambda: naive(matrix, matrix_sq, frames, var), 1))
                for th, eng in engines.items():
                    t_eng[th] = min(t_eng[th], best_time(lambda: eng.reduce(frames, variance=var), 1))
            ms_naive = t_naive / nframes * 1e3
            print(f"{title[:32]:32s} {'naive W@x per frame, ' + what:34s} {ms_naive:9.2f} "
                  f"{1e3 / ms_naive:9.1f} {1.0:9.2f}")
            for th, t in t_eng.items():
                ms = t / nframes * 1e3
                print(f"{'':32s} {f'engine {th} thr, ' + what:34s} {ms:9.2f} {1e3 / ms:9.1f} "
                      f"{ms_naive / ms:8.2f}x")
            eng = engines[args.threads]
            eng.reduce(frames[:1], variance=var)  # build the single-frame plan
            ms = min(best_time(lambda: [eng.reduce(frames[b : b + 1], variance=var) for b in range(4)], 1)
                     for _ in range(args.reps)) / 4 * 1e3
            print(f"{'':32s} {f'engine {args.threads} thr, B=1, ' + what:34s} {ms:9.2f} {1e3 / ms:9.1f} "
                  f"{ms_naive / ms:8.2f}x")
        for eng in engines.values():
            eng.close()


if __name__ == "__main__":
    main()
