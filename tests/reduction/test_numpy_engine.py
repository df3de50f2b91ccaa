"""NumpyEngine: batched sparse reduction agrees with a plain float64 ``W @ x`` for every case.

The matrices are synthetic (no pyFAI): radial bins around a beam centre with bbox-like splitting
over 2-3 adjacent bins, detector gaps as empty columns, on an odd-sized detector so that tiles
never divide the pixel count.  Tiles are shrunk (``small_tiles``) so that a few thousand pixels
already span many tiles, chunks and threads.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import reduction.azint.engines.numpy_engine as ne
from reduction.azint.engines import EngineOutput, NumpyEngine

NY, NX = 67, 59  # npix = 3953: odd, not a multiple of any tile size
RTOL = 1e-6


def synthetic_matrix(ny=NY, nx=NX, nbins=30, split=True, nchi=None, unit=False, seed=0):
    """(nbins[*nchi] x ny*nx) CSR: radial (and azimuthal) bins, bbox-like splitting, gaps."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    cy, cx = 0.43 * ny, 0.55 * nx
    r = np.hypot(yy - cy, xx - cx).ravel()
    mask = np.zeros((ny, nx), bool)
    mask[ny // 2 : ny // 2 + 3] = True  # horizontal gap (long run of empty columns)
    mask[:, nx // 3 : nx // 3 + 2] = True  # vertical gap (short runs inside tiles)
    mask[0, 0] = mask[-1, -1] = True  # first and last pixel masked
    mask = mask.ravel()
    dr = r.max() * 1.0001 / nbins
    half = 1.3 if split else 0.0  # half width of a pixel's footprint, pixels

    def overlaps(centre, hw, nb):
        if not split:
            return [(np.minimum(np.floor(centre).astype(np.int64), nb - 1), np.ones_like(centre))]
        lo, hi = centre - hw, centre + hw
        base = np.floor(lo).astype(np.int64)
        return [(base + k, np.clip(np.minimum(hi, base + k + 1) - np.maximum(lo, base + k), 0, None) / (hi - lo))
                for k in range(4)]

    rad = overlaps(r / dr, half / dr, nbins)
    pieces = []
    if nchi:
        chi = np.arctan2((yy - cy).ravel(), (xx - cx).ravel())
        dchi = 2 * np.pi / nchi
        az = overlaps((chi + np.pi) / dchi, half / np.maximum(r, 1) / dchi, nchi)
        for bq, wq in rad:
            for bc, wc in az:
                pieces.append((np.mod(bc, nchi) * nbins + bq, wq * wc, (bq >= 0) & (bq < nbins)))
        nrows = nbins * nchi
    else:
        for b, w in rad:
            pieces.append((b, w, (b >= 0) & (b < nbins)))
        nrows = nbins
    rows, cols, vals = [], [], []
    pix = np.arange(ny * nx)
    for b, w, ok in pieces:
        ok = ok & (w > 0) & ~mask
        rows.append(b[ok])
        cols.append(pix[ok])
        vals.append(w[ok])
    vals = np.concatenate(vals)
    if unit:
        vals = np.ones_like(vals)
    elif split:  # not exactly representable in float32
        vals = vals * (1 + 1e-3 * np.random.default_rng(seed).random(vals.size))
    w = sp.csr_array((vals, (np.concatenate(rows), np.concatenate(cols))), shape=(nrows, ny * nx))
    w.sum_duplicates()
    return w


def make_frames(matrix, nframes, dtype, *, mean=50.0, seed=1, markers=True):
    """Poisson frames with invalid markers in valid pixels and garbage in masked ones."""
    rng = np.random.default_rng(seed)
    npix = matrix.shape[1]
    lam = mean * (0.2 + rng.random(npix))
    x = rng.poisson(lam, size=(nframes, npix)).astype(np.float64)
    dt = np.dtype(dtype)
    nonempty = np.flatnonzero(np.diff(sp.csc_array(matrix).indptr) > 0)
    empty = np.setdiff1d(np.arange(npix), nonempty)
    if dt.kind == "f":
        x = x + rng.random(x.shape) - 0.3  # fractional values, some below 1 and negative
        bad_values = [np.nan, np.inf, -np.inf]
        garbage = [np.nan, np.inf, -6.5e4]
    else:
        info = np.iinfo(dt)
        bad_values = [info.max] + ([-1, -2] if dt.kind == "i" else [])
        garbage = [info.max, 0] + ([-1, -7] if dt.kind == "i" else [])
    frames = x.astype(dt)
    if markers:
        for k in range(2 * nframes + 3):
            b = rng.integers(nframes)
            j = rng.choice(nonempty)
            frames[b, j] = bad_values[k % len(bad_values)]
        frames[:, empty] = np.array(garbage, dtype=dt)[rng.integers(len(garbage), size=(nframes, empty.size))]
    return frames


def reference(matrix, frames):
    """Plain float64 products and the expected invalid pairs."""
    x = frames.astype(np.float64)
    if frames.dtype.kind == "f":
        bad = ~np.isfinite(x)
    else:
        bad = x == np.iinfo(frames.dtype).max
        if frames.dtype.kind == "i":
            bad |= x < 0
    nonempty = np.diff(sp.csc_array(matrix).indptr) > 0
    valid_x = np.where(bad, 0.0, x)
    var_x = np.where(bad, 0.0, np.maximum(valid_x, 1.0))
    w = sp.csr_array(matrix, dtype=np.float64)
    # masked columns are empty in W, so whatever they hold (NaN included) must not matter
    valid_x[:, ~nonempty] = 0.0
    var_x[:, ~nonempty] = 0.0
    signal = (w @ valid_x.T).T
    variance = ((w.multiply(w)) @ var_x.T).T
    invalid = np.argwhere(bad & nonempty[None, :]).astype(np.int64)
    return signal, variance, invalid


def assert_close(actual, expected, rtol=RTOL):
    scale = np.maximum(np.abs(expected), 1e-12 * max(1.0, np.abs(expected).max()))
    err = np.abs(actual - expected) / scale
    assert np.all(np.isfinite(actual))
    assert err.max() <= rtol, f"max relative error {err.max():.2e} > {rtol:.0e}"


def check(engine, matrix, frames, variance=True, rtol=RTOL):
    out = engine.reduce(frames, variance=variance)
    sig, var, inv = reference(matrix, frames)
    assert isinstance(out, EngineOutput)
    assert out.signal.shape == (frames.shape[0], matrix.shape[0]) and out.signal.dtype == np.float64
    assert_close(out.signal, sig, rtol)
    if variance:
        assert out.variance.shape == out.signal.shape and out.variance.dtype == np.float64
        assert_close(out.variance, var, rtol)
    else:
        assert out.variance is None
    assert out.invalid.dtype == np.int64 and out.invalid.shape[1] == 2
    np.testing.assert_array_equal(out.invalid, inv)
    return out


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of a few hundred pixels: the 3953-pixel test detector spans many tiles."""
    monkeypatch.setattr(ne, "_TILE_BYTES", 8 * 1024)
    monkeypatch.setattr(ne, "_MIN_TILE", 64)
    monkeypatch.setattr(ne, "_ROW_TILE", 512)


MATRICES = {
    "bbox": lambda: synthetic_matrix(split=True),
    "nosplit": lambda: synthetic_matrix(split=False, unit=True),
}


@pytest.mark.parametrize("kind", sorted(MATRICES))
@pytest.mark.parametrize("dtype", ["uint16", "uint32", "int32", "float32", "float64"])
@pytest.mark.parametrize("nframes", [1, 2, 7, 33])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variance", [True, False])
def test_agrees_with_float64_reference(small_tiles, kind, dtype, nframes, threads, variance):
    matrix = MATRICES[kind]()
    frames = make_frames(matrix, nframes, dtype, seed=nframes * 7 + threads)
    check(NumpyEngine(matrix, threads=threads), matrix, frames, variance)


@pytest.mark.parametrize("precision", ["single", "double"])
@pytest.mark.parametrize("dtype", ["uint32", "int32", "float32"])
def test_precisions(small_tiles, precision, dtype):
    matrix = synthetic_matrix()
    frames = make_frames(matrix, 9, dtype)
    rtol = 1e-12 if precision == "double" else RTOL
    check(NumpyEngine(matrix, threads=2, precision=precision), matrix, frames, rtol=rtol)


def test_precision_policy():
    """auto: float32 tile products for integer counts on 1-D bins only."""
    one_d, two_d = synthetic_matrix(), synthetic_matrix(nbins=100, nchi=90)
    auto = NumpyEngine(one_d)
    for dtype in ("uint8", "uint16", "uint32", "int16", "int32"):
        assert auto._compute_type(np.dtype(dtype), 2, 32) == np.float32
    for dtype in ("float32", "float64", "int64", "uint64"):
        assert auto._compute_type(np.dtype(dtype), 2, 32) == np.float64
    assert NumpyEngine(two_d)._compute_type(np.dtype("uint32"), 2, 32) == np.float64
    assert NumpyEngine(two_d, precision="single")._compute_type(np.dtype("float32"), 2, 32) == np.float32
    assert NumpyEngine(one_d, precision="double")._compute_type(np.dtype("uint16"), 2, 32) == np.float64


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int64", "uint64", "float16"])
def test_other_dtypes(small_tiles, dtype):
    matrix = synthetic_matrix()
    frames = make_frames(matrix, 5, dtype, mean=20.0)
    check(NumpyEngine(matrix, threads=2), matrix, frames)


def test_default_tiles_and_many_terms_per_bin():
    """Default tile size: the whole detector fits one tile; float32 sums stay within rtol."""
    matrix = synthetic_matrix(ny=131, nx=127, nbins=12)  # > 1000 terms per bin
    frames = make_frames(matrix, 5, "uint32", mean=500.0)
    check(NumpyEngine(matrix), matrix, frames)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("precision", ["auto", "single"])
def test_two_dimensional_many_bins(small_tiles, threads, precision):
    """2-D cake: many bins with few terms each; "auto" accumulates in float64."""
    matrix = synthetic_matrix(nbins=100, nchi=90)
    assert matrix.shape[0] > ne._SINGLE_MAX_BINS
    frames = make_frames(matrix, 6, "int32")
    rtol = 1e-12 if precision == "auto" else RTOL
    engine = NumpyEngine(matrix, threads=threads, precision=precision)
    for block in (frames, frames[:1], frames[2:5]):  # cols and rows plans
        check(engine, matrix, block, rtol=rtol)
        check(engine, matrix, block, variance=False, rtol=rtol)
    frames = make_frames(matrix, 3, "uint32", mean=0.3)  # dense variance fix-up
    check(engine, matrix, frames, rtol=rtol)
    assert any(t[10] is not None for t in engine._plan("rows", np.float64, 2, 1).tiles)


@pytest.mark.parametrize("mean", [0.05, 0.7, 3.0])
@pytest.mark.parametrize("kind", sorted(MATRICES))
def test_variance_low_counts(small_tiles, mean, kind):
    """Many zeros (dense fix-up of max(x, 1)) and a few zeros (sparse fix-up)."""
    matrix = MATRICES[kind]()
    for dtype in ("uint32", "float32"):
        frames = make_frames(matrix, 11, dtype, mean=mean)
        check(NumpyEngine(matrix, threads=2), matrix, frames)


def test_many_frames_are_chunked(small_tiles):
    matrix = synthetic_matrix()
    frames = make_frames(matrix, ne._MAX_CHUNK + 13, "uint32")
    out = check(NumpyEngine(matrix, threads=2), matrix, frames)
    assert out.invalid[:, 0].max() >= ne._MAX_CHUNK  # frame indices are global, not per chunk


def test_valid_values_next_to_markers():
    """dtype max - 1 is valid; only the max itself is a marker."""
    matrix = synthetic_matrix()
    for dtype in ("uint16", "uint32", "int32"):
        frames = make_frames(matrix, 3, dtype, markers=False)
        info = np.iinfo(dtype)
        j = np.flatnonzero(np.diff(sp.csc_array(matrix).indptr) > 0)[:4]
        frames[0, j[0]] = info.max - 1
        frames[1, j[1]] = info.max
        frames[2, j[2]] = 0
        out = check(NumpyEngine(matrix), matrix, frames)
        np.testing.assert_array_equal(out.invalid, [[1, j[1]]])


def test_masked_garbage_is_ignored():
    """NaN in every masked pixel of every frame: no report, no NaN, same result as zeros."""
    matrix = synthetic_matrix()
    frames = make_frames(matrix, 4, "float32", markers=False)
    empty = np.diff(sp.csc_array(matrix).indptr) == 0
    clean = frames.copy()
    clean[:, empty] = 0
    frames[:, empty] = np.nan
    engine = NumpyEngine(matrix)
    out = engine.reduce(frames)
    assert out.invalid.shape == (0, 2)
    np.testing.assert_array_equal(out.signal, engine.reduce(clean).signal)
    np.testing.assert_array_equal(out.variance, engine.reduce(clean).variance)


def test_reproducible(small_tiles):
    """Same input, same thread count: bitwise the same result."""
    matrix = synthetic_matrix()
    frames = make_frames(matrix, 9, "float32")
    engine = NumpyEngine(matrix, threads=2)
    first = engine.reduce(frames)
    for _ in range(3):
        again = engine.reduce(frames)
        np.testing.assert_array_equal(again.signal, first.signal)
        np.testing.assert_array_equal(again.variance, first.variance)


def test_input_layouts():
    """(B, ny, nx) stacks, non-contiguous views and 1-D single frames are accepted."""
    matrix = synthetic_matrix()
    frames = make_frames(matrix, 6, "uint32")
    engine = NumpyEngine(matrix, threads=2)
    ref = engine.reduce(frames)
    np.testing.assert_array_equal(engine.reduce(frames.reshape(6, NY, NX)).signal, ref.signal)
    wide = np.zeros((12, NY * NX + 5), np.uint32)
    wide[::2, 3:-2] = frames
    view = wide[::2, 3:-2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(engine.reduce(view).signal, ref.signal)
    np.testing.assert_array_equal(engine.reduce(np.asfortranarray(frames)).signal, ref.signal)
    one = engine.reduce(frames[2])
    assert one.signal.shape == (1, matrix.shape[0])
    check(engine, matrix, frames[2:3])


def test_csr_matrix_and_explicit_zeros():
    matrix = synthetic_matrix()
    legacy = sp.csr_matrix(matrix)
    legacy.data[::7] = 0.0  # explicit zeros: a column of only zeros is empty (masked)
    expected = sp.csr_array(legacy)
    expected.eliminate_zeros()
    frames = make_frames(expected, 5, "int32")
    check(NumpyEngine(legacy, threads=2), expected, frames)


def test_fallback_kernel(small_tiles, monkeypatch):
    """The public-API kernel used if scipy's private sparsetools ever changes."""
    monkeypatch.setattr(ne, "_csc_matvecs", ne._public_matvecs)
    monkeypatch.setattr(ne, "_csr_matvec", ne._public_matvec)
    for kind in sorted(MATRICES):
        matrix = MATRICES[kind]()
        for nframes in (1, 2, 5):
            check(NumpyEngine(matrix, threads=2), matrix, make_frames(matrix, nframes, "uint32", mean=0.5))


def test_native_kernel_available():
    assert ne.NATIVE_KERNEL


def test_empty_matrix_and_empty_block():
    matrix = sp.csr_array((5, 40))
    engine = NumpyEngine(matrix)
    out = engine.reduce(np.full((3, 40), np.nan))
    np.testing.assert_array_equal(out.signal, np.zeros((3, 5)))
    np.testing.assert_array_equal(out.variance, np.zeros((3, 5)))
    assert out.invalid.shape == (0, 2)
    out = NumpyEngine(synthetic_matrix()).reduce(np.zeros((0, NY * NX), np.uint32))
    assert out.signal.shape == (0, 30) and out.invalid.shape == (0, 2)


def test_errors():
    matrix = synthetic_matrix()
    engine = NumpyEngine(matrix)
    with pytest.raises(ValueError, match="shape"):
        engine.reduce(np.zeros((2, NY * NX + 1), np.uint32))
    with pytest.raises(ValueError, match="shape"):
        engine.reduce(np.float32(3.0))
    with pytest.raises(TypeError):
        engine.reduce(np.zeros((2, NY * NX), complex))
    with pytest.raises(TypeError):
        NumpyEngine(matrix.toarray())
    with pytest.raises(ValueError):
        NumpyEngine(matrix, threads=0)
    with pytest.raises(ValueError):
        NumpyEngine(matrix, precision="half")


def test_thread_count_from_environment(monkeypatch):
    matrix = synthetic_matrix()
    monkeypatch.setenv("XREDUCE_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert NumpyEngine(matrix).threads == 3
    monkeypatch.delenv("XREDUCE_THREADS")
    assert NumpyEngine(matrix).threads == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert NumpyEngine(matrix).threads >= 1
    assert NumpyEngine(matrix, threads=2).threads == 2


def test_tiles_skip_gaps(small_tiles):
    """Tiles start and end on non-empty columns and never cross the long horizontal gap."""
    matrix = synthetic_matrix()
    engine = NumpyEngine(matrix)
    nonempty = np.diff(sp.csc_array(matrix).indptr) > 0
    for kind, precision in (("cols", np.float32), ("cols", np.float64), ("rows", np.float64)):
        plan = engine._plan(kind, precision, 2, 8)
        covered = np.zeros(NY * NX, bool)
        for a, b, *_ in plan.tiles:
            assert nonempty[a] and nonempty[b - 1]
            assert not covered[a:b].any()
            covered[a:b] = True
        assert covered[nonempty].all()
        gap = slice((NY // 2) * NX, (NY // 2 + 3) * NX)
        assert not covered[gap].any()


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@pytest.mark.parametrize("kind", ["bbox", "nosplit", "2d"])
@pytest.mark.parametrize("dtype", ["uint32", "float32"])
@pytest.mark.parametrize("nframes", [2, 33])
def test_same_bits_for_any_thread_count(small_tiles, kind, dtype, nframes):
    """The order of every sum is fixed by the matrix and the block, never by the threads: 1, 2
    and 3 threads give bit-identical outputs (float32 tile products included), so chunks reduced
    by workers with different thread counts (a resumed run, another backend) never mix numbers."""
    matrix = (synthetic_matrix(nbins=6, nchi=4) if kind == "2d"
              else synthetic_matrix(split=kind == "bbox", unit=kind == "nosplit"))
    frames = make_frames(matrix, nframes, dtype, seed=5)
    outs = []
    for threads in (1, 2, 3):
        engine = NumpyEngine(matrix, threads=threads)
        outs.append(engine.reduce(frames))
        assert max(len(p.lanes) for p in engine._plans.values()) >= 3, "too few lanes for threads to matter"
    for out in outs[1:]:
        assert _bits(out.signal) == _bits(outs[0].signal)
        assert _bits(out.variance) == _bits(outs[0].variance)
        np.testing.assert_array_equal(out.invalid, outs[0].invalid)
    check(NumpyEngine(matrix, threads=3), matrix, frames)  # and still right


def test_a_failing_lane_fails_the_call(small_tiles, monkeypatch):
    """An error in one lane is raised by reduce (the lanes waiting on it do not hang), and the
    engine gives right numbers afterwards (no partial sums left behind)."""
    matrix = synthetic_matrix()
    frames = make_frames(matrix, 33, "uint32")
    engine = NumpyEngine(matrix, threads=2)
    real = NumpyEngine._cols_tiles
    calls = []

    def flaky(self, plan, X, chunks, *args):
        calls.append(chunks)
        if len(calls) == 2:
            raise MemoryError("injected")
        return real(self, plan, X, chunks, *args)

    monkeypatch.setattr(NumpyEngine, "_cols_tiles", flaky)
    with pytest.raises(MemoryError, match="injected"):
        engine.reduce(frames)
    check(engine, matrix, frames)
