"""Batched sparse reduction of detector frames on the CPU with numpy/scipy.

Azimuthal integration is a sparse matrix ``W`` (nbins x npix) applied to frames.  This engine
reduces a *block* of B frames at once::

    signal[b, k]   = sum_j W[k, j] * x[b, j]              (valid entries only)
    variance[b, k] = sum_j W[k, j]**2 * max(x[b, j], 1)   (pyFAI's Poisson rule)

Invalid entries (integers: negative or the dtype's max; floats: NaN/inf) contribute nothing and
are reported as (frame, pixel) pairs -- only for pixels whose column of W is non-empty: masked
pixels (empty columns) are never read by the products and may hold anything.

How
---
* The matrix is cut into *pixel tiles* of consecutive pixels, small enough that a tile of the
  block and its slice of the matrix stay in L2.  Tiles start and end on non-empty columns and do
  not span long runs of empty ones, so detector gaps cost nothing; short masked runs inside a
  tile are overwritten with 1.0 (a value that is neither invalid nor below 1).
* Blocks are processed in chunks of at most 32 frames.  Chunks of >= 4 frames (``cols`` plans):
  the (B x T) strided slice of the chunk is cast and transposed to a (T x B) buffer in 16-frame
  strips (numpy's cast-and-transpose is ~2x faster this way than in one call; with frame
  strides that put more than 4 of 16 rows in one L1 set, e.g. 1024 x 1024 frames, 8-frame
  strips are used).  One min and one max reduction validate the tile;
  only when they reveal a marker are the offending entries located, reported and zeroed.
  scipy's ``csc_matvecs`` (the tile's slice of W as CSC; it releases the GIL) then adds
  ``W_tile @ buf`` into a per-thread accumulator: the B frames of a pixel are one contiguous
  vector, so each matrix entry is read once per block instead of once per frame.  With variance
  W and W**2 are interleaved (rows 2k, 2k+1) so one pass produces both -- unless every weight is
  1 (no pixel splitting): W**2 == W, so the variance is the signal plus sum_j W (max(x,1) - x),
  a correction computed only where a valid value is below 1 (sparsely when such entries are
  few, the usual case for counts; as one more product when they are many).
* Chunks of 1-3 frames (``rows`` plans): too few to batch, so per frame and tile the slice of the
  frame is cast to float64 and the tile's slice of W as CSR (local bins x local pixels) is
  applied with ``csr_matvec`` (a gather from the in-cache tile), W**2 likewise (~2.5x faster
  than a whole-frame ``W @ x``, whose gathers over a 36 MB vector miss the caches).
* Precision (``precision="auto"``): the tile products of ``cols`` plans run in float32 when the
  frames are <= 32-bit integers (counts: exact in float32 up to 2**24, no cancellation) and the
  bins are few (<= 8192, i.e. 1-D): float32 makes the kernel ~1.6x faster, and the float32
  partial sums are flushed into float64 before any bin has received 256 terms (tiles are split
  where needed), so each bin's total averages many short float32 sums: relative error
  ~1e-7 (<= 5e-7 measured on Eiger 4M).  Otherwise -- float frames (cancellation), 64-bit
  integers, 2-D cakes (too many bins to flush cheaply), ``precision="double"`` -- the kernel
  accumulates straight into float64.  ``precision="single"`` forces float32 for every frame type
  that float32 holds (then a 2-D bin's float32 sum is flushed only once if it has <= 256 terms:
  relative error up to ~1e-6).
* Summation order, fixed by the matrix and the block alone (never by the thread count): the tiles
  of a plan are cut into at most 16 *lanes* of consecutive tiles.  Each lane sums its tiles in
  order into an accumulator of its own (lane 0 straight into the total), and the lanes are added
  into the total in lane order, each over the bins its tiles touch.  Threads (``threads``; default
  ``XREDUCE_THREADS``, ``OMP_NUM_THREADS`` or the CPUs available) take lanes round-robin, so the
  results are bit-identical for any number of threads, hence of workers sharing a node.  The
  lane count is bounded by the work per accumulator value (a 2-D cake of many bins gets fewer
  lanes: adding a lane costs a pass over its bins).  The total is transposed to (B, nbins) at the
  end, in parallel over bin ranges.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import scipy.sparse as sp

from .contract import EngineOutput, canonical_matrix, default_threads, frame_block, invalid_mask

__all__ = ["NumpyEngine"]


# ---------------------------------------------------------------------------------------------
# Kernels: scipy's private sparsetools (they release the GIL and accumulate in place):
#   csc_matvecs: Y[Ai[p], :] += Ax[p] * X[j, :]  for each column j, p in Ap[j]:Ap[j+1]
#                (X: n_col x n_vecs, Y: n_row x n_vecs, both C-contiguous)
#   csr_matvec:  Y[i] += sum_p Ax[p] * X[Aj[p]]   for each row i, p in Ap[i]:Ap[i+1]
# checked at import; public-API equivalents (allocating, slower) if they ever change.
# ---------------------------------------------------------------------------------------------


def _public_matvecs(n_row, n_col, n_vecs, indptr, indices, data, x, y):
    m = sp.csc_array((data, indices, indptr), shape=(n_row, n_col))
    y += (m @ x.reshape(n_col, n_vecs)).reshape(y.shape)


def _public_matvec(n_row, n_col, indptr, indices, data, x, y):
    m = sp.csr_array((data, indices, indptr), shape=(n_row, n_col))
    y += m @ x


def _load_kernels():
    try:
        from scipy.sparse import _sparsetools

        matvecs, matvec = _sparsetools.csc_matvecs, _sparsetools.csr_matvec
        for dt in (np.float32, np.float64):
            # [[1,0],[2,0],[0,3]] @ [[1,10],[2,20]] added to ones
            y = np.ones(6, dt)
            matvecs(3, 2, 2, np.array([0, 2, 3], np.int32), np.array([0, 1, 2], np.int32),
                    np.array([1, 2, 3], dt), np.array([1, 10, 2, 20], dt), y)
            if not np.array_equal(y, [2, 11, 3, 21, 7, 61]):
                raise RuntimeError("unexpected csc_matvecs semantics")
        y = np.ones(2)
        matvec(2, 2, np.array([0, 1, 3], np.int32), np.array([1, 0, 1], np.int32),
               np.array([3.0, 4.0, 5.0]), np.array([1.0, 10.0]), y)
        if not np.array_equal(y, [31.0, 55.0]):
            raise RuntimeError("unexpected csr_matvec semantics")
        return matvecs, matvec, True
    except Exception:  # pragma: no cover - depends on the scipy build
        return _public_matvecs, _public_matvec, False


_csc_matvecs, _csr_matvec, NATIVE_KERNEL = _load_kernels()

_TILE_BYTES = 256 * 1024  # one (T x B) tile buffer of a cols plan
_ROW_TILE = 16384  # pixels per tile of a rows plan
_MIN_TILE = 256
_MAX_TILE = 1 << 16
_MAX_CHUNK = 32  # frames processed together (the kernel's vector length)
_ROW_PATH_MAX = 3  # chunks of at most this many frames use a rows plan
_GAP_SPLIT = 64  # empty-column runs at least this long end a tile
_FLUSH_TERMS = 256  # float32 partial sums hold at most this many terms per bin
_FLUSH_RATIO = 0.25  # float32 only if flushing moves <= this many values per pixel-frame
_SINGLE_MAX_BINS = 8192  # "auto": float32 tile products only up to this many bins (1-D)
_SPARSE_FIX_FRACTION = 1 / 32  # below this fraction of entries < 1, fix the variance sparsely
_FINALIZE_BINS = 4096  # bins per finalization step (sum + transpose)
_SMALL_TYPES = frozenset("bBhHiIef")  # exact (or float32-rounded) in float32 tile products
_LANES = 16  # lanes (tile ranges summed separately, then added in order): the most threads used
_LANE_WORK = 16  # a plan has at most one lane per this many matrix entries per accumulator value


def _frame_blocks(nvec: int, row_stride: int):
    """Frame strips for the transposing copy ``buf[:, f0:f1] = frames[f0:f1, a:b].T``.

    16 source rows per numpy call is fastest, unless their byte stride maps more than 4 of them
    onto one L1 set (e.g. 1024 x 1024 frames, a 4 MiB stride): then 8.
    """
    sets = [((r * abs(row_stride)) >> 6) & 63 for r in range(16)]
    k = 16 if max(sets.count(v) for v in set(sets)) <= 4 else 8
    return [(f0, min(nvec, f0 + k)) for f0 in range(0, nvec, k)]


class _Plan:
    """The matrix cut into pixel tiles for one kind of product.

    ``cols`` tiles: ``(a, b, n, indptr, indices, data, fill, lo, hi, tmax)`` -- pixels [a, b);
    the tile's CSC with row indices in accumulator rows ``k * ncomp + c`` (component c: 0 signal,
    1 variance; W and W**2 interleaved when ``interleaved``); local empty columns to fill (or
    None); the accumulator rows [lo, hi) touched and the most terms added to one bin.
    Accumulator: (nbins * ncomp, B).

    ``rows`` tiles: ``(a, b, n, indptr, indices, w, w2, fill, lo, hi, rows)`` -- the tile's CSR
    over bins [lo, hi) and local pixels, with W and W**2 data; or, when the tile's bins are
    scattered (``rows`` not None), over local rows [0, hi) standing for bins ``rows``.
    Accumulator: (ncomp, B, nbins).
    """

    __slots__ = ("kind", "ctype", "ncomp", "interleaved", "var_adds_signal", "tiles", "max_len",
                 "nbins", "flush_ratio", "max_rows", "lanes")

    def __init__(self, kind, ctype, ncomp, interleaved, var_adds_signal, tiles, max_len, nbins,
                 flush_ratio=0.0):
        self.kind = kind
        self.ctype = ctype
        self.ncomp = ncomp
        self.interleaved = interleaved
        self.var_adds_signal = var_adds_signal
        self.tiles = tiles
        self.max_len = max_len
        self.nbins = nbins
        self.flush_ratio = flush_ratio
        self.max_rows = max([t[9] for t in tiles if kind == "rows" and t[10] is not None], default=1)
        self.lanes = self._lanes()

    def _lanes(self):
        """[(t0, t1, lo, hi)]: tiles [t0, t1) summed apart, touching accumulator bins [lo, hi).

        Consecutive tiles (neighbouring pixels touch neighbouring bins), balanced by matrix
        entries; their number depends on the plan alone, so the order of every sum does too.
        """
        ntiles = len(self.tiles)
        if ntiles == 0:
            return []
        entries = np.cumsum([t[4].size for t in self.tiles])
        nlanes = int(min(_LANES, ntiles, max(1, entries[-1] // (_LANE_WORK * self.nbins * self.ncomp))))
        cuts = np.searchsorted(entries, entries[-1] * np.arange(1, nlanes) / nlanes, side="right")
        bounds = sorted({0, ntiles, *(int(c) for c in cuts if 0 < c < ntiles)})
        lanes = []
        for t0, t1 in zip(bounds[:-1], bounds[1:]):
            spans = [self._bin_span(t) for t in self.tiles[t0:t1]]
            lanes.append((t0, t1, min(a for a, _ in spans), max(b for _, b in spans)))
        return lanes

    def _bin_span(self, tile):
        """[lo, hi): the bins a tile adds into."""
        if self.kind == "cols":
            return tile[7] // self.ncomp, -(-tile[8] // self.ncomp)
        rows = tile[10]
        return (tile[8], tile[9]) if rows is None else (int(rows[0]), int(rows[-1]) + 1)

    def bins_of(self, acc, lo, hi):
        """The part of an accumulator holding bins [lo, hi) (a view)."""
        if self.kind == "cols":
            return acc[lo * self.ncomp : hi * self.ncomp]
        return acc[:, :, lo:hi]

    def acc_shape(self, nvec):
        if self.kind == "cols":
            return (self.nbins * self.ncomp, nvec)
        return (self.ncomp, nvec, self.nbins)

    def acc_view(self, acc, nvec):
        """(nbins, ncomp, nvec) view of an accumulator."""
        if self.kind == "cols":
            return acc.reshape(self.nbins, self.ncomp, nvec)
        return acc.transpose(2, 0, 1)


class _Workspace:
    """Per-worker scratch buffers and accumulators, reused across calls."""

    def __init__(self):
        self.bufs = {}

    def get(self, key, shape, dtype, zero=False):
        arr = self.bufs.get(key)
        if arr is None or arr.shape != shape or arr.dtype != dtype:
            arr = np.zeros(shape, dtype)
            self.bufs[key] = arr
        elif zero:
            arr.fill(0)
        return arr


class NumpyEngine:
    """Batched sparse reduction on the CPU with numpy/scipy.

    Parameters
    ----------
    matrix : scipy.sparse array or matrix (nbins x npix)
        Integration weights.  Laid out once (per kind of call), applied to many blocks.
    threads : worker threads; default :func:`default_threads`.
    precision : ``"auto"`` (float32 tile products where safe and profitable, see the module
        docstring), ``"single"`` (float32 whenever the frames allow it) or ``"double"``.
    """

    name = "numpy"

    def __init__(self, matrix, *, threads: int | None = None, precision: str = "auto"):
        if precision not in ("auto", "single", "double"):
            raise ValueError(f"precision must be 'auto', 'single' or 'double', got {precision!r}")
        csc = canonical_matrix(matrix)
        self.nbins, self.npix = (int(s) for s in csc.shape)
        if 2 * max(self.nbins, csc.nnz) >= 2**31 - 1 or self.npix >= 2**31 - 1:
            raise ValueError(f"matrix too large for 32-bit indices: shape {csc.shape}, nnz {csc.nnz}")
        self.nnz = int(csc.nnz)
        self._indptr = csc.indptr.astype(np.int64)
        self._indices = csc.indices.astype(np.int32)
        self._data = np.ascontiguousarray(csc.data, dtype=np.float64)
        self.unit_weights = bool(np.all(self._data == 1.0))
        self._nonempty = np.diff(self._indptr) > 0
        self.precision = precision
        self.threads = int(threads) if threads is not None else default_threads()
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._segments = self._nonempty_runs()
        self._plans: dict[tuple, _Plan] = {}
        self._layouts: dict[tuple, tuple] = {}
        self._row_nnz_max: int | None = None
        self._workspaces = [_Workspace() for _ in range(self.threads)]
        self._pool: ThreadPoolExecutor | None = None
        self._plan_lock = threading.Lock()
        self._call_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"NumpyEngine(nbins={self.nbins}, npix={self.npix}, nnz={self.nnz}, "
                f"threads={self.threads}, precision={self.precision!r}, unit_weights={self.unit_weights})")

    # ------------------------------------------------------------------ tiles and plans
    def _nonempty_runs(self):
        """Non-empty columns, and their runs [start, stop) split at >= _GAP_SPLIT empty ones."""
        ne = np.flatnonzero(self._nonempty)
        if ne.size == 0:
            return ne, []
        breaks = np.flatnonzero(np.diff(ne) > _GAP_SPLIT) + 1
        starts = np.concatenate(([0], breaks)).tolist()
        stops = np.concatenate((breaks, [ne.size])).tolist()
        return ne, list(zip(starts, stops))

    def _pixel_tiles(self, size):
        """[(a, b)] pixel ranges of at most ``size`` columns, starting and ending non-empty."""
        ne, runs = self._segments
        out = []
        for s0, s1 in runs:
            seg = ne[s0:s1]
            i = 0
            while i < seg.size:
                a = int(seg[i])
                j = int(np.searchsorted(seg, a + size, side="left")) - 1
                out.append((a, int(seg[j]) + 1))
                i = j + 1
        return out

    def _max_terms(self) -> int:
        """The most non-zeros in one row of W (terms summed into one bin)."""
        if self._row_nnz_max is None:
            self._row_nnz_max = int(np.bincount(self._indices).max()) if self.nnz else 0
        return self._row_nnz_max

    def _split_by_terms(self, ranges):
        """Halve tiles in which one bin receives more than _FLUSH_TERMS terms."""
        out = []
        stack = list(reversed(ranges))
        indptr, indices, ne = self._indptr, self._indices, self._nonempty
        while stack:
            a, b = stack.pop()
            bins = indices[indptr[a] : indptr[b]]
            if b - a > 16 and np.bincount(bins - bins.min()).max() > _FLUSH_TERMS:
                m = (a + b) // 2
                left_end, right_start = m, m  # halves start and end on non-empty columns
                while left_end > a and not ne[left_end - 1]:
                    left_end -= 1
                while right_start < b and not ne[right_start]:
                    right_start += 1
                parts = ([(a, left_end)] if left_end > a else []) + ([(right_start, b)] if right_start < b else [])
                stack.extend(reversed(parts))
            else:
                out.append((a, b))
        return out

    def _compute_type(self, dtype, ncomp, nvec):
        """float32 or float64 products for a cols plan (see the module docstring)."""
        if self.precision == "double" or dtype.char not in _SMALL_TYPES:
            return np.float64
        if self.precision == "single":
            return np.float32
        # auto: counts (non-negative integers: no cancellation) on few bins, where the float32
        # partial sums are flushed often (each bin's total averages many of them) and cheaply
        if dtype.kind == "f" or self.nbins > _SINGLE_MAX_BINS:
            return np.float64
        plan32 = self._plan("cols", np.float32, ncomp, nvec)
        return np.float32 if plan32.flush_ratio <= _FLUSH_RATIO else np.float64

    def _plan(self, kind, ctype, ncomp, nvec) -> _Plan:
        if kind == "cols":  # a power of two: few distinct plans whatever the block sizes
            target = max(1, _TILE_BYTES // (np.dtype(ctype).itemsize * nvec))
            size = int(min(_MAX_TILE, max(_MIN_TILE, 1 << (target.bit_length() - 1))))
        else:
            size = _ROW_TILE
        key = (kind, np.dtype(ctype).char, ncomp, size)
        plan = self._plans.get(key)
        if plan is None:
            with self._plan_lock:
                plan = self._plans.get(key)
                if plan is None:
                    build = self._build_cols if kind == "cols" else self._build_rows
                    plan = build(ctype, ncomp, size)
                    self._plans[key] = plan
        return plan

    def _cols_layout(self, ctype, ncomp, interleaved):
        """Row indices and data of the cols plans (shared by all their tile sizes)."""
        key = (np.dtype(ctype).char, ncomp)
        layout = self._layouts.get(key)
        if layout is None:
            if interleaved:  # column j holds (2k, w), (2k+1, w^2) for each of its entries (k, w)
                ix = np.empty(2 * self.nnz, np.int32)
                ix[0::2] = 2 * self._indices
                ix[1::2] = 2 * self._indices + 1
                dat = np.empty(2 * self.nnz, ctype)
                dat[0::2] = self._data
                dat[1::2] = self._data * self._data
                layout = (ix, dat, 2)
            else:
                ix = np.ascontiguousarray(self._indices * ncomp, np.int32) if ncomp > 1 else self._indices
                dat = self._data.astype(ctype) if ctype != np.float64 else self._data
                layout = (ix, dat, 1)
            self._layouts[key] = layout
        return layout

    def _build_cols(self, ctype, ncomp, size) -> _Plan:
        indptr = self._indptr
        interleaved = ncomp == 2 and not self.unit_weights
        ix, dat, mult = self._cols_layout(ctype, ncomp, interleaved)
        # float32 sums need flushing only if some bin has more than _FLUSH_TERMS terms in all
        flushing = ctype == np.float32 and self._max_terms() > _FLUSH_TERMS
        ranges = self._pixel_tiles(size)
        if flushing:
            ranges = self._split_by_terms(ranges)
        tiles = []
        max_len = 1
        flush_cost = 0
        pend = 0
        plo: int | None = None
        phi: int | None = None
        for a, b in ranges:
            n = b - a
            p0, p1 = int(indptr[a]), int(indptr[b])
            ip = ((indptr[a : b + 1] - p0) * mult).astype(np.int32)
            bins = self._indices[p0:p1]
            blo = int(bins.min())
            lo, hi = blo * ncomp, (int(bins.max()) + 1) * ncomp
            tmax = 0
            if flushing:
                tmax = int(np.bincount(bins - blo).max())
                # flush traffic if one thread processed the tiles in order
                if pend + tmax > _FLUSH_TERMS and pend:
                    assert plo is not None and phi is not None  # set with pend
                    flush_cost += phi - plo
                    pend, plo, phi = 0, None, None
                plo = lo if plo is None else min(plo, lo)
                phi = hi if phi is None else max(phi, hi)
                pend += tmax
            fill = np.flatnonzero(~self._nonempty[a:b])
            tiles.append((a, b, n, ip, ix[p0 * mult : p1 * mult], dat[p0 * mult : p1 * mult],
                          fill if fill.size else None, lo, hi, tmax))
            max_len = max(max_len, n)
            if not flushing:  # one flush at the end (of each worker)
                plo = lo if plo is None else min(plo, lo)
                phi = hi if phi is None else max(phi, hi)
        if plo is not None:
            assert phi is not None  # set with plo
            flush_cost += phi - plo
        ratio = flush_cost / max(1, sum(t[2] for t in tiles))
        return _Plan("cols", ctype, ncomp, interleaved, ncomp == 2 and not interleaved, tiles, max_len,
                     self.nbins, ratio)

    def _build_rows(self, ctype, ncomp, size) -> _Plan:
        other = self._plans.get(("rows", np.dtype(ctype).char, 3 - ncomp, size))
        if other is not None:  # same tiles with and without variance
            return _Plan("rows", np.float64, ncomp, False, ncomp == 2 and self.unit_weights, other.tiles,
                         other.max_len, self.nbins)
        indptr = self._indptr
        tiles = []
        max_len = 1
        rows: np.ndarray | None  # the tile's scattered bins, or None
        for a, b in self._pixel_tiles(size):
            n = b - a
            p0, p1 = int(indptr[a]), int(indptr[b])
            bins = self._indices[p0:p1]
            lo, hi = int(bins.min()), int(bins.max()) + 1
            rows = np.unique(bins)
            if hi - lo <= 4 * rows.size + 64:  # bins [lo, hi) (1-D rings): write in place
                local, rows = bins - lo, None
            else:  # scattered bins (2-D cakes): local rows, scattered into the bins afterwards
                local, lo, hi = np.searchsorted(rows, bins), 0, rows.size
            csr = sp.csc_array((self._data[p0:p1], local, indptr[a : b + 1] - p0), shape=(hi - lo, n)).tocsr()
            csr.sort_indices()
            w = np.ascontiguousarray(csr.data, np.float64)
            w2 = w if self.unit_weights else w * w
            fill = np.flatnonzero(~self._nonempty[a:b])
            tiles.append((a, b, n, csr.indptr.astype(np.int32), csr.indices.astype(np.int32), w, w2,
                          fill if fill.size else None, lo, hi, rows))
            max_len = max(max_len, n)
        return _Plan("rows", np.float64, ncomp, False, ncomp == 2 and self.unit_weights, tiles, max_len,
                     self.nbins)

    # ------------------------------------------------------------------ threads
    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="xreduce-np")
        return self._pool

    def close(self) -> None:
        """Stop the worker threads and drop scratch memory (the engine stays usable)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._workspaces = [_Workspace() for _ in range(self.threads)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    # ------------------------------------------------------------------ public API
    def reduce(self, frames: np.ndarray, *, variance: bool = True) -> EngineOutput:
        """Signal (and variance) of every frame and bin, and the invalid entries met."""
        frames = frame_block(frames, self.npix)
        nframes = frames.shape[0]
        signal = np.empty((nframes, self.nbins), np.float64)
        var_out = np.empty((nframes, self.nbins), np.float64) if variance else None
        invalid_parts: list[np.ndarray] = []
        ncomp = 2 if variance else 1
        with self._call_lock:  # workspaces belong to the engine: one reduce at a time
            nchunks = max(1, -(-nframes // _MAX_CHUNK))
            bounds = [nframes * i // nchunks for i in range(nchunks + 1)]
            for f0, f1 in zip(bounds[:-1], bounds[1:]):
                if f1 == f0:
                    continue
                if f1 - f0 <= _ROW_PATH_MAX:
                    plan = self._plan("rows", np.float64, ncomp, f1 - f0)
                else:
                    plan = self._plan("cols", self._compute_type(frames.dtype, ncomp, f1 - f0), ncomp, f1 - f0)
                self._reduce_chunk(plan, frames[f0:f1], f0, signal, var_out, invalid_parts)
        if invalid_parts:
            inv = np.concatenate(invalid_parts, axis=0)
            inv = inv[np.lexsort((inv[:, 1], inv[:, 0]))]
        else:
            inv = np.empty((0, 2), np.int64)
        return EngineOutput(signal=signal, variance=var_out, invalid=inv)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _limits(dtype: np.dtype):
        """(lower, upper): a tile is surely valid if lower < min and max < upper."""
        if dtype.kind == "f":
            return -np.inf, np.inf
        return (-0.5 if dtype.kind == "i" else -np.inf), float(np.iinfo(dtype).max)

    def _reduce_chunk(self, plan, X, f0, signal, var_out, invalid_parts):
        nvec = X.shape[0]
        lanes = plan.lanes
        nworkers = max(1, min(self.threads, len(lanes)))
        shape = plan.acc_shape(nvec)
        total = self._workspaces[0].get(("acc64", plan.kind), shape, np.float64, zero=True)
        invalid_lists: list[list] = [[] for _ in range(nworkers)]
        limits = self._limits(X.dtype)
        work = self._work_cols if plan.kind == "cols" else self._work_rows
        added = [threading.Event() for _ in lanes]  # lane i is in the total
        failed = threading.Event()

        def run(w):
            """Lanes w, w + nworkers, ...; each added into the total after the lane before it."""
            ws = self._workspaces[w]
            try:
                for li in range(w, len(lanes), nworkers):
                    t0, t1, lo, hi = lanes[li]
                    if li == 0:
                        work(ws, plan, X, [(t0, t1)], total, invalid_lists[w], limits)
                    else:
                        acc = ws.get(("lane", plan.kind), shape, np.float64)
                        part = plan.bins_of(acc, lo, hi)
                        part.fill(0.0)
                        work(ws, plan, X, [(t0, t1)], acc, invalid_lists[w], limits)
                        added[li - 1].wait()
                        if failed.is_set():
                            return
                        into = plan.bins_of(total, lo, hi)
                        into += part
                    added[li].set()
            except BaseException:
                failed.set()
                for event in added:  # release the lanes waiting for this one
                    event.set()
                raise

        if nworkers == 1:
            run(0)
        else:
            pool = self._get_pool()
            futs = [pool.submit(run, w) for w in range(nworkers)]
            wait(futs)  # all stopped (one failing releases the others) before the workspaces are reused
            for fut in futs:
                fut.result()
        for lst in invalid_lists:
            for fr, pix in lst:
                part = np.empty((fr.size, 2), np.int64)
                part[:, 0] = fr + f0
                part[:, 1] = pix
                invalid_parts.append(part)
        self._finalize(plan, total, f0, nvec, signal, var_out)

    def _finalize(self, plan, total, f0, nvec, signal, var_out):
        """Write the summed accumulator (transposed) into the outputs."""
        nb = self.nbins
        view = plan.acc_view(total, nvec)

        def fin(lo, hi):
            tot = view[lo:hi]
            s = tot[:, 0, :]
            signal[f0 : f0 + nvec, lo:hi] = s.T
            if var_out is not None:
                v = tot[:, 1, :]
                if plan.var_adds_signal:  # W^2 == W: variance = signal + correction
                    v = v + s
                var_out[f0 : f0 + nvec, lo:hi] = v.T

        bounds = list(range(0, nb, _FINALIZE_BINS)) + [nb]
        pairs = list(zip(bounds[:-1], bounds[1:]))
        if self.threads > 1 and len(pairs) > 1:
            pool = self._get_pool()
            for fut in [pool.submit(fin, lo, hi) for lo, hi in pairs]:
                fut.result()
        else:
            for lo, hi in pairs:
                fin(lo, hi)

    def _work_cols(self, ws, plan, X, chunks, acc64, invalid, limits):
        """Blocks of frames: transposed tile buffer, csc_matvecs into the accumulator."""
        ctype = plan.ctype
        nvec = X.shape[0]
        buf = ws.get(("buf", ctype), (plan.max_len, nvec), ctype)
        blocks = _frame_blocks(nvec, X.strides[0])
        single = ctype == np.float32
        # float32 partial sums: all zero between calls (each call flushes and zeroes what it used)
        acc = ws.get("acc32", acc64.shape, np.float32) if single else acc64
        try:
            self._cols_tiles(plan, X, chunks, acc64, acc, buf, blocks, invalid, limits)
        except BaseException:
            ws.bufs.pop("acc32", None)  # partial sums left behind: never reuse them
            raise

    def _cols_tiles(self, plan, X, chunks, acc64, acc, buf, blocks, invalid, limits):
        """The tiles of ``chunks``: products into ``acc``, flushed into ``acc64`` if float32."""
        ctype = plan.ctype
        nvec = X.shape[0]
        nrows = plan.nbins * plan.ncomp
        single = ctype == np.float32
        tiles = plan.tiles
        kernel = _csc_matvecs
        copyto = np.copyto
        vmin, vmax = np.minimum.reduce, np.maximum.reduce
        lower, upper = limits
        want_var = plan.ncomp == 2
        need_min = want_var or X.dtype.kind != "u"  # max alone reveals NaN and unsigned markers
        pend, plo, phi = 0, nrows, 0
        for c0, c1 in chunks:
            for ti in range(c0, c1):
                a, b, n, ip, ix, dat, fill, lo, hi, tmax = tiles[ti]
                bufn = buf[:n]
                src = X[:, a:b]
                for f0, f1 in blocks:
                    copyto(bufn[:, f0:f1], src[f0:f1].T, casting="unsafe")
                if fill is not None:
                    bufn[fill] = 1.0
                mn = vmin(bufn, axis=None) if need_min else 0.0
                mx = vmax(bufn, axis=None)
                bad = None
                if not (mn > lower and mx < upper):
                    bad = self._invalid_entries(src, a, invalid)
                    if bad is not None:
                        bufn[bad[1], bad[0]] = 0.0
                    mn = -np.inf  # min unknown now: scan for low values below
                if single:
                    if pend + tmax > _FLUSH_TERMS and pend:
                        acc64[plo:phi] += acc[plo:phi]
                        acc[plo:phi] = 0.0
                        pend, plo, phi = 0, nrows, 0
                    pend += tmax
                    plo, phi = min(plo, lo), max(phi, hi)
                kernel(nrows, n, nvec, ip, ix, dat, bufn, acc)
                if want_var and mn < 1.0:
                    low = bufn < 1.0
                    if bad is not None:
                        low[bad[1], bad[0]] = False
                    flat = np.flatnonzero(low)
                    if flat.size > _SPARSE_FIX_FRACTION * low.size:
                        self._dense_fix_cols(plan, bufn, low, n, nvec, ip, ix, dat, acc)
                    elif flat.size:
                        loc = flat // nvec
                        fr = flat - loc * nvec
                        bins, vals, rep = self._fix_terms(a + loc, 1.0 - bufn.reshape(-1)[flat])
                        np.add.at(acc.reshape(-1), (bins * 2 + 1) * nvec + fr[rep], vals.astype(acc.dtype))
        if single and phi > plo:
            acc64[plo:phi] += acc[plo:phi]
            acc[plo:phi] = 0.0

    def _work_rows(self, ws, plan, X, chunks, acc64, invalid, limits):
        """One or two frames: per frame and tile, csr_matvec of the tile's CSR."""
        nvec = X.shape[0]
        xb = ws.get("xrow", (plan.max_len,), np.float64)
        tiles = plan.tiles
        kernel = _csr_matvec
        copyto = np.copyto
        vmin, vmax = np.minimum.reduce, np.maximum.reduce
        lower, upper = limits
        want_var = plan.ncomp == 2
        unit = self.unit_weights
        for c0, c1 in chunks:
            for ti in range(c0, c1):
                a, b, n, ap, aj, w, w2, fill, lo, hi, rows = tiles[ti]
                x = xb[:n]
                if rows is not None:
                    ys, yv = ws.get("ylocal", (2, plan.max_rows), np.float64)[:, :hi]
                for f in range(nvec):
                    copyto(x, X[f, a:b], casting="unsafe")
                    if fill is not None:
                        x[fill] = 1.0
                    mn = vmin(x)
                    mx = vmax(x)
                    bad = None
                    if not (mn > lower and mx < upper):
                        bad = self._invalid_entries(X[f : f + 1, a:b], a, invalid, frame=f)
                        if bad is not None:
                            x[bad[1]] = 0.0
                        mn = -np.inf
                    if rows is None:
                        ys, yv = acc64[0, f, lo:hi], acc64[1 % plan.ncomp, f, lo:hi]
                    else:
                        ys.fill(0.0)
                        yv.fill(0.0)
                    kernel(hi - lo, n, ap, aj, w, x, ys)
                    if rows is not None:
                        acc64[0, f, rows] += ys
                    if not want_var:
                        continue
                    if not unit:
                        kernel(hi - lo, n, ap, aj, w2, x, yv)
                    if mn < 1.0:
                        low = x < 1.0
                        if bad is not None:
                            low[bad[1]] = False
                        loc = np.flatnonzero(low)
                        if loc.size > _SPARSE_FIX_FRACTION * n:
                            d = np.subtract(1.0, x, where=low, out=np.zeros_like(x))
                            kernel(hi - lo, n, ap, aj, w2, d, yv)
                        elif loc.size:
                            bins, vals, _ = self._fix_terms(a + loc, 1.0 - x[loc])
                            np.add.at(acc64[1, f], bins, vals)
                    if rows is not None:
                        acc64[1, f, rows] += yv

    def _invalid_entries(self, src, a, invalid, frame=0):
        """(frames, local pixels) of the invalid entries of src = frames[:, a:b] in non-empty
        columns, recorded in ``invalid``; None if there are none."""
        fr, loc = np.nonzero(invalid_mask(src))
        if fr.size:
            keep = self._nonempty[a + loc]
            fr, loc = fr[keep], loc[keep]
        if fr.size == 0:
            return None
        invalid.append((fr.astype(np.int64) + frame, (loc + a).astype(np.int64)))
        return fr, loc

    def _fix_terms(self, pix, dvals):
        """Bins and W**2 * d for the entries of columns ``pix`` (global) with values ``dvals``,
        and for each term the index of its entry."""
        start = self._indptr[pix]
        cnt = self._indptr[pix + 1] - start
        rep = np.repeat(np.arange(pix.size), cnt)
        pos = start[rep] + (np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        w = self._data[pos]
        return self._indices[pos].astype(np.int64), w * w * np.asarray(dvals, np.float64)[rep], rep

    def _dense_fix_cols(self, plan, bufn, low, n, nvec, ip, ix, dat, acc):
        """Variance += W^2 @ (max(x,1) - x) over the valid entries below 1, as one product."""
        d = np.subtract(1.0, bufn, where=low, out=np.zeros_like(bufn))
        if plan.interleaved:  # the variance entries: odd positions, rows 2k+1 already
            vip, vix, vdat = ip // 2, np.ascontiguousarray(ix[1::2]), np.ascontiguousarray(dat[1::2])
        else:  # unit weights: W^2 == W, rows 2k -> 2k+1
            vip, vix, vdat = ip, ix + 1, dat
        _csc_matvecs(plan.nbins * plan.ncomp, n, nvec, vip, vix, vdat, d, acc)
