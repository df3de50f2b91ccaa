"""Batched sparse reduction of detector frames on an OpenCL device (pyopencl).

Same contract and numbers as :class:`~reduction.azint.engines.numpy_engine.NumpyEngine`: for a block of
B frames (B, npix), in any integer or float type,

    signal[b, k]   = sum_j W[k, j] * x[b, j]              (valid entries only)
    variance[b, k] = sum_j W[k, j]**2 * max(x[b, j], 1)   (pyFAI's Poisson rule)

and the (frame, pixel) list of invalid entries (integers: negative or the dtype's max; floats:
NaN/inf) in non-empty columns of W, sorted by frame then pixel.

How
---
* **Layout, once per matrix** (:func:`build_layout`): the non-empty columns of W are cut into
  *runs* of consecutive pixels packed into *tiles*; each distinct bin a tile touches is one of its
  *slots*.  Tiles add into their own slots of a partial buffer and ``combine`` sums each bin's
  slots: no atomics, deterministic results -- bit-identical for any number of compute units (a
  sub-device of ``threads`` units on a CPU), since the tiling depends on the matrix alone.
  Frames are read in their natural (B, npix) order, as they come (uint8/16/32, int8/16/32,
  float32/64: no transpose, no conversion on the host; the kernels check validity, convert and
  accumulate in one pass).  The layout (~16 bytes per non-zero) is uploaded once and stays on
  the device.
* **Kernels** (``_opencl_kernels.cl``).  ``cpu``, for CPU devices: one work-item per tile and
  group of 8/16/32 frames; runs stay in pixel order (long sequential reads), the 8*NV values of
  a pixel are gathered into ``double8`` vectors (SIMD across frames: each matrix entry is read
  once per group).  ``group``, for GPUs: one work-group per tile of <= 1024 pixels whose runs
  (32 pixels, one coalesced segment) are sorted by bin so that a tile has few slots; frames
  are staged in local memory, one work-item per (slot, frame).  Sums are float64; weights are
  read as float32 where no sum can cancel (integer frames, non-negative weights: <= 6e-8
  relative), else as float64.  Devices without ``cl_khr_fp64`` are refused.
* **Frames**: on devices sharing host memory (CPU devices: PoCL) the block is wrapped in place
  (``USE_HOST_PTR``, zero copy), outputs likewise.  On discrete GPUs a block is cut into two
  launches whose uploads (non-blocking, on a copy queue) overlap the other launch's kernels
  (double buffering); launches shrink until their buffers fit the device's memory, and halve
  again on an out-of-memory error.  64-bit integer and float16 frames are converted on the host.
* **Trust**: the kernels of each frame type are built on first use (uint32's in the constructor)
  and self-tested on a tiny problem with markers against numpy; before that, once per device,
  driver and kernel source, a child process builds and self-tests them (``XREDUCE_OPENCL_PROBE=0``
  skips it), so that a compiler crash costs a fallback, not the worker.  Every failure is an
  :class:`EngineUnavailable` naming the reason: ``engine="auto"`` can fall back to numpy.
* **Binaries**: pyopencl caches them under ``$XREDUCE_CACHE_DIR/opencl`` (default
  ``~/.cache/xreduce/opencl``), except on PoCL and NVIDIA, whose drivers cache builds themselves
  (``POCL_CACHE_DIR``, default ``~/.cache/pocl``; ``CUDA_CACHE_PATH``, default ``~/.nv``) and
  pyopencl defers to them; either way a second process does not recompile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from reduction.io.process import call

from .bslz4_opencl import BSLZ4Decoder, CorruptChunk, device_decompression
from .contract import EngineOutput, canonical_matrix, default_threads, frame_block, invalid_mask
from .device import DeviceInfo, EngineUnavailable, open_device

__all__ = ["OpenCLEngine", "EngineUnavailable", "build_layout"]

if TYPE_CHECKING:
    from reduction.io.direct import CompressedFrames

    from ..cache import MatrixCache

log = logging.getLogger(__name__)

_KERNEL_FILE = Path(__file__).with_name("_opencl_kernels.cl")

#: (kind, itemsize) -> OpenCL type, XKIND (0 unsigned, 1 signed, 2 float), maximum (the gap marker)
#: 64-bit integers are not here: PoCL 3.0 (LLVM 14) miscompiles their conversion to double8 without
#: AVX-512, so they are turned into float64 (markers into NaN) on the host; detectors write <= 32 bits.
_TYPES = {("u", 1): ("uchar", 0, "255"), ("u", 2): ("ushort", 0, "65535"), ("u", 4): ("uint", 0, "4294967295u"),
          ("i", 1): ("char", 1, "127"), ("i", 2): ("short", 1, "32767"), ("i", 4): ("int", 1, "2147483647"),
          ("f", 4): ("float", 2, "0"), ("f", 8): ("double", 2, "0")}

_CAP, _CAP_FRACTION = 64, 1 / 512  # invalid entries listed per tile and frame group: at least _CAP, or this
# fraction of a 32-frame tile's values; beyond, the host rescans the tile (slow for big cpu tiles)
_CPU_RUN, _CPU_TILE_NNZ = 4096, (32768, 1 << 20)  # cpu kernel: pixels per run, non-zeros per tile (range)
_CPU_TILES = 64  # cpu kernel: tiles aimed at (8 per compute unit up to 8); never the device's count,
# which would make the tiling, hence the order of the sums, depend on the compute units (threads)
_GROUP_RUN, _GROUP_PMAX, _GROUP_FB = 32, 1024, 4  # group kernel: run, pixels per tile, frames staged
_MEM_FRACTION = 0.7  # of the device's global memory the engine allows itself
_PROBED_TYPES = ("uint16", "uint32", "int32", "float32", "float64")  # built in the probe process


@dataclass
class TileLayout:
    """The matrix cut into tiles (see the module docstring); int32 arrays unless noted."""

    tile_pos: np.ndarray  # (ntiles+1,) ordered-pixel range of each tile
    tile_slot: np.ndarray  # (ntiles+1,) slot range of each tile
    pos_pix: np.ndarray  # (npos,) pixel index of each ordered position
    pos_ptr: np.ndarray  # (npos+1,) entries of each position (cpu kernel order)
    ent_slot: np.ndarray  # (nnz,) slot of each entry (cpu order)
    ent_w: np.ndarray  # (nnz,) float64 weight (cpu order)
    slot_ptr: np.ndarray | None  # (nslots+1,) entries of each slot (group kernel order)
    slot_pos: np.ndarray | None  # (nnz,) uint16 position within its tile (group order)
    slot_w: np.ndarray | None  # (nnz,) float64 weight (group order)
    bin_ptr: np.ndarray  # (nbins+1,) slots of each bin
    bin_slot: np.ndarray  # (nslots,)

    @property
    def ntiles(self) -> int:
        return len(self.tile_pos) - 1

    @property
    def nslots(self) -> int:
        return len(self.bin_slot)

    def arrays(self, kernel: str) -> dict[str, np.ndarray]:
        """The device arrays of a kernel; weights as ``w64`` and, when none is negative, ``w32``."""
        names = ["tile_pos", "tile_slot", "pos_pix", "bin_ptr", "bin_slot"]
        names += ["pos_ptr", "ent_slot"] if kernel == "cpu" else ["slot_ptr", "slot_pos"]
        out = {n: getattr(self, n) for n in names}
        out["w64"] = self.ent_w if kernel == "cpu" else self.slot_w
        if not (out["w64"] < 0).any():
            out["w32"] = out["w64"].astype(np.float32)
        return out


def _runs(indptr: np.ndarray, run: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of runs of consecutive non-empty columns, at most ``run`` long."""
    ne = np.flatnonzero(np.diff(indptr) > 0)
    if ne.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.flatnonzero(np.diff(ne) != 1) + 1
    starts = np.concatenate(([0], brk))
    lens = np.diff(np.concatenate((starts, [ne.size])))
    pieces = -(-lens // run)
    owner = np.repeat(np.arange(starts.size), pieces)
    k = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    return ne[starts[owner]] + k * run, np.minimum(run, lens[owner] - k * run)


def build_layout(matrix: sp.csc_array, *, run: int, tile_nnz: int, tile_pixels: int, sort: bool = True,
                 group_order: bool = False) -> TileLayout:
    """Cut the columns of ``matrix`` (CSC, sorted) into tiles of pixel runs.

    A tile holds whole runs (at most ``run`` consecutive non-empty pixels), at most
    ``tile_pixels`` pixels and, unless a single run exceeds it, about ``tile_nnz`` non-zeros.
    ``sort``: runs ordered by the lowest bin they touch (few slots per tile), else in pixel order
    (long sequential reads).  ``group_order``: also the slot-ordered entries of the group kernel.
    """
    indptr, indices = matrix.indptr.astype(np.int64), matrix.indices
    nbins = matrix.shape[0]
    start, length = _runs(indptr, run)
    if start.size and sort:
        order = np.argsort(np.minimum.reduceat(indices, indptr[start]), kind="stable")
        start, length = start[order], length[order]
    run_nnz = (indptr[start + length] - indptr[start]).tolist()
    # greedy packing (one pass over the runs: ~1e5 of them for a 4 Mpixel detector)
    bounds, nnz, pix = [0], 0, 0
    for i, (n, p) in enumerate(zip(run_nnz, length.tolist())):
        if i and (nnz + n > tile_nnz or pix + p > tile_pixels):
            bounds.append(i)
            nnz, pix = 0, 0
        nnz += n
        pix += p
    bounds.append(len(run_nnz))
    bound_arr = np.asarray(bounds if run_nnz else [0], np.int64)
    cum_len = np.concatenate(([0], np.cumsum(length)))
    tile_pos = cum_len[bound_arr]
    npos = int(cum_len[-1])
    pos_pix = np.repeat(start - cum_len[:-1], length) + np.arange(npos)
    count = indptr[pos_pix + 1] - indptr[pos_pix]
    pos_ptr = np.concatenate(([0], np.cumsum(count)))
    ent = np.repeat(indptr[pos_pix] - pos_ptr[:-1], count) + np.arange(int(pos_ptr[-1]))
    ent_bin = indices[ent].astype(np.int64)
    ent_w = matrix.data[ent].astype(np.float64)
    tile_of_pos = np.repeat(np.arange(len(tile_pos) - 1), np.diff(tile_pos))
    key = np.repeat(tile_of_pos, count) * nbins + ent_bin
    slot_key, ent_slot = _rank(key, (len(tile_pos) - 1) * nbins)
    slot_tile, slot_bin = slot_key // nbins, slot_key % nbins
    tile_slot = np.searchsorted(slot_tile, np.arange(len(tile_pos)))
    by_bin = np.argsort(slot_bin, kind="stable")
    bin_ptr = np.concatenate(([0], np.cumsum(np.bincount(slot_bin, minlength=nbins))))
    i32 = np.int32
    layout = TileLayout(tile_pos.astype(i32), tile_slot.astype(i32), pos_pix.astype(i32), pos_ptr.astype(i32),
                        ent_slot.astype(i32), ent_w, None, None, None, bin_ptr.astype(i32), by_bin.astype(i32))
    if group_order:  # entries by slot for the group kernel, with their position within the tile
        by_slot = np.argsort(ent_slot, kind="stable")
        layout.slot_ptr = np.concatenate(([0], np.cumsum(np.bincount(ent_slot, minlength=slot_key.size)))).astype(i32)
        local_pos = np.repeat(np.arange(npos) - tile_pos[tile_of_pos], count)
        layout.slot_pos = local_pos[by_slot].astype(np.uint16)
        layout.slot_w = ent_w[by_slot]
    return layout


#: The TileLayout arrays each kernel uses (what the matrix cache keeps of a layout).
_LAYOUT_ARRAYS = {
    "cpu": ("tile_pos", "tile_slot", "pos_pix", "pos_ptr", "ent_slot", "ent_w", "bin_ptr", "bin_slot"),
    "group": ("tile_pos", "tile_slot", "pos_pix", "pos_ptr", "ent_slot", "ent_w", "slot_ptr", "slot_pos", "slot_w",
              "bin_ptr", "bin_slot"),
}


def _list_cap(layout: TileLayout) -> int:
    """Capacity of each invalid-entry list of this layout."""
    longest = int(np.diff(layout.tile_pos).max()) if layout.ntiles else 0
    return max(_CAP, int(_CAP_FRACTION * longest * 32))


def _rank(key: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, index of each key among them): np.unique(return_inverse), in
    O(n + size) with a dense table where ``size`` (the key range) allows it."""
    if size > 1 << 27:
        return np.unique(key, return_inverse=True)
    seen = np.zeros(size, bool)
    seen[key] = True
    rank = np.cumsum(seen, dtype=np.int64) - 1
    return np.flatnonzero(seen), rank[key]


def _kernel_source() -> str:
    try:
        return _KERNEL_FILE.read_text()
    except OSError as exc:
        raise EngineUnavailable(f"OpenCL kernel source {_KERNEL_FILE} is missing ({exc}): the package was "
                                "installed without its *.cl data files") from None


def _cache_dir() -> str:
    from reduction.azint.cache import default_cache_dir
    return str(default_cache_dir() / "opencl")


def _host_frames(frames: np.ndarray) -> np.ndarray:
    """C-contiguous, native byte order, in a type the kernels read; float16 and 64-bit integers
    become float32/float64 (their invalid markers NaN), the only host-side conversions."""
    dt = frames.dtype
    if (dt.kind, dt.itemsize) not in _TYPES:
        if dt.kind == "f":  # float16: NaN/inf survive the cast
            return np.ascontiguousarray(frames, dtype=np.float32)
        out = frames.astype(np.float64)
        out[invalid_mask(frames)] = np.nan
        return out
    return np.ascontiguousarray(frames, dtype=dt.newbyteorder("="))


class _DeviceMatrix:
    """A :class:`TileLayout` on the device, with the scratch buffers of its launches."""

    def __init__(self, cl: Any, ctx: Any, layout: TileLayout, kernel: str, nbins: int, npix: int) -> None:
        self.layout, self.nbins, self.npix = layout, nbins, npix
        arrays = layout.arrays(kernel)
        flags = cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR
        self.bufs = {n: cl.Buffer(ctx, flags, hostbuf=a if a.size else np.zeros(1, a.dtype)) for n, a in arrays.items()}
        self.nbytes = sum(a.nbytes for a in arrays.values())
        self.cap = _list_cap(layout)
        self._cl, self._ctx = cl, ctx
        self.scratch: dict[str, Any] = {}

    def buffer(self, name: str, nbytes: int) -> Any:
        """A scratch device buffer of at least nbytes, reused across calls."""
        buf = self.scratch.get(name)
        if buf is None or buf.size < nbytes:
            self.scratch.pop(name, None)
            buf = self._cl.Buffer(self._ctx, self._cl.mem_flags.READ_WRITE, max(int(nbytes), 8))
            self.scratch[name] = buf
        return buf


class OpenCLEngine:
    """Batched sparse reduction on an OpenCL device; a drop-in for :class:`NumpyEngine`.

    Parameters
    ----------
    matrix : scipy.sparse array or matrix (nbins x npix)
        Integration weights; laid out and uploaded once.
    device : None or "auto" (a GPU first, the one Slurm assigned on a GPU node, else a CPU
        device), "cpu", "gpu" or "platform:device" indices such as "0:1"
        (see :mod:`reduction.azint.engines.device`).
    threads : on a CPU device, the compute units to use (a sub-device); default
        :func:`~reduction.azint.engines.numpy_engine.default_threads` (``XREDUCE_THREADS``,
        ``OMP_NUM_THREADS`` or the CPUs this process may use: PoCL itself ignores the affinity).
    kernel : "auto" (``cpu`` on CPU devices, ``group`` elsewhere), "cpu" or "group".
    max_frames : frames per kernel launch at most (default: as many as fit the device memory).
    zero_copy : wrap host frames in place (default: where the device shares host memory);
        False forces device copies with double buffering, as on a discrete GPU.

    Raises
    ------
    EngineUnavailable
        No pyopencl/platform/device, no float64 on the device, kernel build failure or failed
        self-test, or the matrix does not fit the device memory.

    Examples
    --------
    >>> engine = OpenCLEngine(matrix, device="auto")
    >>> out = engine.reduce(frames)          # frames: (B, npix), e.g. uint32 as read
    >>> out.signal.shape, out.variance.shape, out.invalid.shape
    ((B, nbins), (B, nbins), (K, 2))
    """

    name = "opencl"

    def __init__(self, matrix: Any, *, device: str | None = None, threads: int | None = None,
                 kernel: str = "auto", max_frames: int | None = None, zero_copy: bool | None = None,
                 layout_cache: tuple[MatrixCache, str] | None = None) -> None:
        if kernel not in ("auto", "cpu", "group"):
            raise ValueError(f"kernel must be 'auto', 'cpu' or 'group', got {kernel!r}")
        csc = canonical_matrix(matrix)
        self.nbins, self.npix = (int(s) for s in csc.shape)
        if max(self.nbins, csc.nnz, self.npix) >= 2**31 - 1:
            raise ValueError(f"matrix too large for 32-bit indices: shape {csc.shape}, nnz {csc.nnz}")
        self.nnz = int(csc.nnz)

        self.device: DeviceInfo
        self.device, dev = open_device(device)
        import pyopencl as cl  # importable: open_device succeeded

        self._cl = cl
        if not self.device.fp64:
            raise EngineUnavailable(f"OpenCL device {self.device} has no float64 (cl_khr_fp64), needed for "
                                    "1e-5 agreement with the numpy engine")
        if self.device.kind == "cpu":  # PoCL ignores the CPU affinity (Slurm's cpus-per-task): use what we may
            threads = default_threads() if threads is None else int(threads)
            if 0 < threads < dev.max_compute_units:
                dev = self._sub_device(dev, threads)
        self.kernel = kernel if kernel != "auto" else ("cpu" if self.device.kind == "cpu" else "group")
        self._unified = bool(dev.host_unified_memory) if zero_copy is None else bool(zero_copy)
        self._dev = dev
        self._mem_budget = int(_MEM_FRACTION * dev.global_mem_size)
        self._max_alloc = int(dev.max_mem_alloc_size)
        self._max_frames = max_frames
        self._wg = int(min(128, dev.max_work_group_size))
        self._fb = min(_GROUP_FB, (int(dev.local_mem_size) - 1024) // (16 * _GROUP_PMAX))  # frames staged
        if self.kernel == "group" and self._fb < 1:
            raise EngineUnavailable(f"OpenCL device {self.device} has {dev.local_mem_size} bytes of local memory; "
                                    f"the group kernel stages {16 * _GROUP_PMAX + 1024}")
        self._fb = max(self._fb, 1)
        self._programs: dict[tuple[str, int], dict[str, Any]] = {}
        self._decoder: BSLZ4Decoder | None = None  # built on the first reduce_compressed
        self._lock = threading.Lock()
        try:
            self._ctx = cl.Context([dev])
            self._queue = cl.CommandQueue(self._ctx)
            self._copy_queue = self._queue if self._unified else cl.CommandQueue(self._ctx)
        except cl.Error as exc:
            raise EngineUnavailable(f"cannot open OpenCL device {self.device}: {exc}") from None
        self.layout = self._cached_layout(csc, layout_cache)
        need = self.layout_bytes() + self._launch_bytes(1)
        if need > self._mem_budget:
            raise EngineUnavailable(f"the integration matrix needs {need / 2**20:.0f} MiB on {self.device}, more "
                                    f"than {_MEM_FRACTION:.0%} of its {dev.global_mem_size / 2**20:.0f} MiB")
        try:
            self._matrix = _DeviceMatrix(cl, self._ctx, self.layout, self.kernel, self.nbins, self.npix)
        except cl.Error as exc:
            raise EngineUnavailable(f"cannot upload the integration matrix to {self.device}: {exc}") from None
        if os.environ.get("XREDUCE_OPENCL_PROBE", "1") != "0":
            self._probe(dev)
        self._kernels(np.dtype(np.uint32))  # build and self-test now: failures surface here, not mid-run

    def __repr__(self) -> str:
        return (f"OpenCLEngine(nbins={self.nbins}, npix={self.npix}, nnz={self.nnz}, device={self.device}, "
                f"kernel={self.kernel!r}, tiles={self.layout.ntiles}, slots={self.layout.nslots})")

    # ------------------------------------------------------------------ set-up
    def _tile_sizes(self, csc: sp.csc_array, small: bool = False) -> tuple[int, int, int]:
        """(run, tile_nnz, tile_pixels) of this engine's kernel (``small``: tiny tiles, for the self-test)."""
        if self.kernel == "cpu":  # runs in pixel order: long sequential reads; a fixed number of tiles
            lo, hi = _CPU_TILE_NNZ
            tile_nnz = int(np.clip(csc.nnz // _CPU_TILES, lo, hi))
            return (8, 40, 1 << 30) if small else (_CPU_RUN, tile_nnz, 1 << 30)
        return (8, 1 << 30, 32) if small else (_GROUP_RUN, 1 << 30, _GROUP_PMAX)  # runs sorted by bin

    def _layout(self, csc: sp.csc_array, small: bool = False) -> TileLayout:
        """The tiling for this engine's kernel (``small``: tiny tiles, for the self-test)."""
        run, tile_nnz, tile_pixels = self._tile_sizes(csc, small)
        group = self.kernel != "cpu"  # the group kernel: runs sorted by bin (few slots per tile)
        return build_layout(csc, run=run, tile_nnz=tile_nnz, tile_pixels=tile_pixels, sort=group, group_order=group)

    def _cached_layout(self, csc: sp.csc_array, cache: tuple[MatrixCache, str] | None) -> TileLayout:
        """The tiling, from the matrix cache when it holds one for this matrix and tiling (building it
        costs ~0.4 s for an Eiger 4M matrix: paid once, not by every array task)."""
        if cache is None:
            return self._layout(csc)
        store, key = cache
        what = f"opencl-{self.kernel}-{self._tiling(csc)}"
        names = _LAYOUT_ARRAYS[self.kernel]
        arrays = store.load_arrays(key, what, names)
        if arrays is not None:
            fields: dict[str, Any] = {f.name: arrays.get(f.name) for f in dataclasses.fields(TileLayout)}
            layout = TileLayout(**fields)
            if len(layout.bin_ptr) == self.nbins + 1 and int(layout.pos_ptr[-1]) == csc.nnz \
                    and (layout.pos_pix.size == 0 or int(layout.pos_pix.max()) < self.npix):
                return layout
            log.warning("ignoring an OpenCL layout in the matrix cache that does not fit its matrix (%s)", what)
        layout = self._layout(csc)
        store.store_arrays(key, what, {name: getattr(layout, name) for name in names})
        return layout

    def _tiling(self, csc: sp.csc_array) -> str:
        """The tiling parameters of this engine's kernel, as a name."""
        run, nnz, pixels = self._tile_sizes(csc)
        return f"r{run}-n{nnz}-p{pixels}"

    def layout_bytes(self) -> int:
        """Device memory held by the uploaded matrix."""
        return sum(a.nbytes for a in self.layout.arrays(self.kernel).values())

    def _sub_device(self, dev: Any, n: int) -> Any:
        cl = self._cl
        try:
            props = [cl.device_partition_property.BY_COUNTS, n, cl.device_partition_property.BY_COUNTS_LIST_END]
            return dev.create_sub_devices(props)[0]
        except cl.Error as exc:
            log.info("cannot restrict %s to %d compute units (%s): using all", self.device, n, exc)
            return dev

    def _probe(self, dev: Any) -> None:
        """Build and self-test the kernels in a child process first, once per device, driver and
        kernel source (a marker under the cache directory remembers success): an OpenCL compiler
        that aborts or segfaults (seen with PoCL 3.0 on constructs these kernels now avoid) then
        costs a fallback to the numpy engine, not this process."""
        ident = "|".join([_kernel_source(), self.kernel, self.device.platform, self.device.name,
                          dev.platform.version, dev.driver_version, str(_GROUP_PMAX), str(self._fb)])
        marker = Path(_cache_dir()) / "probed" / hashlib.sha256(ident.encode()).hexdigest()[:32]
        if marker.exists():
            return
        code = (f"import scipy.sparse as sp; from reduction.azint.engines.opencl_engine import OpenCLEngine; "
                f"e = OpenCLEngine(sp.random(40, 3000, density=0.02, format='csr', random_state=0), "
                f"device={self.device.index!r}, kernel={self.kernel!r}); import numpy as np; "
                f"[e._kernels(np.dtype(t)) for t in {_PROBED_TYPES!r}]")
        env = {**os.environ, "XREDUCE_OPENCL_PROBE": "0",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[3]), os.environ.get("PYTHONPATH", "")])}
        try:
            done = call([sys.executable, "-c", code], env=env, timeout=600, check=False, error=EngineUnavailable)
        except EngineUnavailable as exc:
            raise EngineUnavailable(f"the OpenCL kernel probe on {self.device} did not finish: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise EngineUnavailable(f"building/testing the OpenCL kernels on {self.device} failed in a probe "
                                    f"process (exit code {done.returncode}): {' | '.join(tail)}")
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{self.device}\n")
        except OSError as exc:  # a read-only cache: probe again next time
            log.info("cannot record the OpenCL probe in %s: %s", marker, exc)

    def _kernels(self, dtype: np.dtype) -> dict[str, Any]:
        """Kernels for frames of this dtype: built (or fetched from pyopencl's binary cache) and
        self-tested on first use."""
        key = (dtype.kind, dtype.itemsize)
        kernels = self._programs.get(key)
        if kernels is not None:
            return kernels
        cl = self._cl
        ctype, xkind, xmax = _TYPES[key]
        # float32 weights (less to read) only where no sum can cancel: valid integer values are >= 0
        weights = "w32" if dtype.kind in "ui" and "w32" in self._matrix.bufs else "w64"
        options = [f"-D{self.kernel.upper()}_KERNELS", f"-DXT={ctype}", f"-DXT8={ctype}8", f"-DXKIND={xkind}",
                   f"-DXSIZE={dtype.itemsize}", f"-DXMAXV={xmax}", f"-DPMAX={_GROUP_PMAX}", f"-DFB={self._fb}",
                   f"-DWT={'float' if weights == 'w32' else 'double'}"]
        source = _kernel_source()
        names = ["combine"] + ([f"reduce_cpu{nv}_{c}" for nv in (1, 2, 4) for c in "sv"] if self.kernel == "cpu"
                               else ["reduce_group_s", "reduce_group_v"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pyopencl's CompilerWarning on non-empty build logs
                program = cl.Program(self._ctx, source).build(options=options, cache_dir=_cache_dir())
            kernels = {n: cl.Kernel(program, n) for n in names}
        except cl.Error as exc:
            raise EngineUnavailable(
                f"OpenCL kernel build failed on {self.device} for {dtype} frames: {str(exc).strip()[-2000:]} (after a "
                "crashed build, PoCL's cache ~/.cache/pocl/kcache may hold a broken entry: remove it)") from None
        if self.kernel == "group":  # what the compiled kernels allow (registers, local memory)
            self._wg = min([self._wg] + [int(kernels[n].get_work_group_info(
                cl.kernel_work_group_info.WORK_GROUP_SIZE, self._dev)) for n in names if n.startswith("reduce")])
        kernels["weights"] = weights
        self._self_test(kernels, np.dtype(dtype))
        self._programs[key] = kernels
        return kernels

    def _self_test(self, kernels: dict[str, Any], dtype: np.dtype) -> None:
        """Run the kernels on a tiny problem with markers and compare with numpy: a broken OpenCL
        stack that compiles but computes wrong numbers is refused instead of trusted."""
        rng = np.random.default_rng(12345)
        nbins, npix = 7, 160
        cols = np.repeat(np.setdiff1d(np.arange(npix), np.arange(40, 50)), 2)  # a gap: empty columns
        rows = np.minimum(cols * nbins // npix + np.tile([0, 1], cols.size // 2), nbins - 1)
        w = sp.csc_array((rng.random(cols.size) + 0.1, (rows, cols)), shape=(nbins, npix))
        w.sum_duplicates()
        w.sort_indices()
        matrix = _DeviceMatrix(self._cl, self._ctx, self._layout(w, small=True), self.kernel, nbins, npix)
        for nframes, with_var in ((5, True), (13, True), (27, True), (9, False)):
            frames = rng.integers(0, 100, size=(nframes, npix)).astype(dtype)
            flat = frames.reshape(-1)
            spots = rng.choice(flat.size, size=flat.size // 30, replace=False)
            flat[spots] = np.nan if dtype.kind == "f" else np.iinfo(dtype).max
            if dtype.kind == "i":
                flat[spots[::2]] = -1
            signal = np.empty((nframes, nbins))
            variance = np.empty((nframes, nbins)) if with_var else None
            try:
                invalid = self._run(kernels, matrix, _HostFrames(frames), signal, variance, nframes)
            except self._cl.Error as exc:
                raise EngineUnavailable(f"OpenCL kernels fail to run on {self.device} for {dtype} frames "
                                        f"(self-test): {exc}") from None
            bad = invalid_mask(frames)
            x = np.where(bad, 0.0, frames.astype(np.float64))
            ref_s = (w @ x.T).T
            ref_v = (w.multiply(w) @ np.where(bad, 0.0, np.maximum(x, 1.0)).T).T
            ref_i = np.argwhere(bad & (np.diff(w.indptr) > 0)[None, :])
            err = np.max(np.abs(signal - ref_s) / np.maximum(ref_s, 1.0))
            if with_var:
                err = max(err, np.max(np.abs(variance - ref_v) / np.maximum(ref_v, 1.0)))
            if not err < 1e-6 or not np.array_equal(invalid, ref_i):
                raise EngineUnavailable(f"OpenCL kernels compute wrong results on {self.device} for {dtype} frames "
                                        f"(self-test, {nframes} frames: max relative error {err:.1e}, invalid "
                                        f"entries {len(invalid)} for {len(ref_i)}); not used")

    # ------------------------------------------------------------------ launches and memory
    def _vectors(self, n: int) -> int:
        """double8 vectors per work-item of the cpu kernel for n frames."""
        return 1 if n <= 8 else 2 if n <= 16 else 4

    def _padded(self, n: int) -> int:
        """Frames the partial buffer holds for a launch of n frames."""
        if self.kernel != "cpu":
            return n
        width = 8 * self._vectors(n)
        return -(-n // width) * width

    def _lists(self, layout: TileLayout, n: int) -> int:
        """Invalid-entry lists of a launch of n frames."""
        groups = self._padded(n) // (8 * self._vectors(n)) if self.kernel == "cpu" else 1
        return layout.ntiles * groups

    def _launch_bytes(self, n: int, itemsize: int = 4, nframes: int | None = None) -> int:
        """Device memory of a launch of n frames (of a block of nframes)."""
        part = self.layout.nslots * 2 * self._padded(n) * 8
        frames = 0 if self._unified else 2 * n * self.npix * itemsize
        outputs = 0 if self._unified else 2 * (nframes or n) * self.nbins * 8
        return part + frames + outputs + self._lists(self.layout, n) * (4 + 8 * _list_cap(self.layout))

    def _launch_size(self, nframes: int, itemsize: int) -> int:
        """Frames per launch: all, halves on discrete GPUs (double buffering), then what fits."""
        n = nframes if self._unified or nframes <= 8 else -(-nframes // 2)
        if self._max_frames:
            n = min(n, self._max_frames)
        free = self._mem_budget - self.layout_bytes()
        while n > 1 and (self._launch_bytes(n, itemsize, nframes) > free
                         or self.layout.nslots * 2 * self._padded(n) * 8 > self._max_alloc
                         or (not self._unified and n * self.npix * itemsize > self._max_alloc)):
            n = (n + 1) // 2
        return n

    # ------------------------------------------------------------------ public API
    def reduce(self, frames: np.ndarray, *, variance: bool = True) -> EngineOutput:
        """Signal (and variance) of every frame and bin, and the invalid entries met.

        Raises :class:`EngineUnavailable` when the device fails (out of memory even for one
        frame per launch, a lost device): the caller may redo the block with the numpy engine.
        """
        frames = frame_block(frames, self.npix)
        return self._reduce(_HostFrames(_host_frames(frames)), variance)

    @property
    def device_decompression(self) -> bool:
        """Whether :meth:`reduce_compressed` decompresses on this device (``XREDUCE_DEVICE_DECOMPRESSION``:
        1, 0 or auto = on GPUs only; :mod:`.bslz4_opencl`); when False it decompresses on the host."""
        return device_decompression(self.device.kind)

    def reduce_compressed(self, frames: CompressedFrames, *, variance: bool = True) -> EngineOutput:
        """:meth:`reduce` of frames given as their bitshuffle-LZ4 chunks: shipped to the device
        compressed, decompressed there (:class:`~.bslz4_opencl.BSLZ4Decoder`) and integrated where
        they are, with the same numbers as ``reduce(frames.decode())``. Without
        :attr:`device_decompression`, or for a frame type the kernels do not read, the frames are
        decompressed on the host. Raises :class:`~.bslz4_opencl.CorruptChunk` for a chunk that
        does not decompress.
        """
        if int(np.prod(frames.frame_shape)) != self.npix:
            raise ValueError(f"frames of shape {frames.frame_shape} do not match the matrix's {self.npix} pixels")
        dt = np.dtype(frames.dtype)
        if not self.device_decompression or (dt.kind, dt.itemsize) not in _TYPES or not dt.isnative:
            return self.reduce(frames.decode().reshape(len(frames), -1), variance=variance)
        with self._lock:
            if self._decoder is None:
                self._decoder = BSLZ4Decoder(self._ctx, self._queue)
        return self._reduce(_ChunkFrames(frames, self._decoder), variance)

    def _reduce(self, frames: _HostFrames | _ChunkFrames, variance: bool) -> EngineOutput:
        """Launch the kernels over a block (see :meth:`reduce`), halving launches on out-of-memory."""
        nframes = len(frames)
        signal = np.empty((nframes, self.nbins), np.float64)
        var_out = np.empty((nframes, self.nbins), np.float64) if variance else None
        if nframes == 0:
            return EngineOutput(signal, var_out, np.empty((0, 2), np.int64))
        cl = self._cl
        with self._lock:
            kernels = self._kernels(frames.dtype)
            step = self._launch_size(nframes, frames.dtype.itemsize)
            while True:
                try:
                    invalid = self._run(kernels, self._matrix, frames, signal, var_out, step)
                    break
                except cl.Error as exc:
                    self._matrix.scratch.clear()
                    oom = getattr(exc, "code", None) in (cl.status_code.MEM_OBJECT_ALLOCATION_FAILURE,
                                                         cl.status_code.OUT_OF_RESOURCES,
                                                         cl.status_code.OUT_OF_HOST_MEMORY)
                    if not oom or step == 1:
                        raise EngineUnavailable(f"OpenCL failure on {self.device} ({step} frames per launch): "
                                                f"{exc}") from None
                    step = (step + 1) // 2
                    self._max_frames = step
                    log.warning("out of memory on %s: %d frames per launch from now on", self.device, step)
        return EngineOutput(signal=signal, variance=var_out, invalid=invalid)

    # ------------------------------------------------------------------ internals
    def _run(self, kernels: dict[str, Any], matrix: _DeviceMatrix, frames: _HostFrames | _ChunkFrames,
             signal: np.ndarray, var_out: np.ndarray | None, step: int) -> np.ndarray:
        """Launch the kernels over ``frames`` in launches of ``step`` frames; return the invalid list."""
        cl = self._cl
        mf = cl.mem_flags
        nframes = len(frames)
        q = self._queue
        with_var = var_out is not None
        if self._unified:
            sig_buf = cl.Buffer(self._ctx, mf.WRITE_ONLY | mf.USE_HOST_PTR, hostbuf=signal)
            var_buf = cl.Buffer(self._ctx, mf.WRITE_ONLY | mf.USE_HOST_PTR, hostbuf=var_out) if with_var else sig_buf
        else:
            sig_buf = matrix.buffer("signal", signal.nbytes)
            var_buf = matrix.buffer("variance", signal.nbytes) if with_var else sig_buf
        last_use: list[Any] = [None, None]  # kernel events of the two frame buffers (double buffering)
        lists = []
        for i, f0 in enumerate(range(0, nframes, step)):
            n = min(step, nframes - f0)
            deps = [last_use[i % 2]] if last_use[i % 2] is not None else []
            xbuf, wait = frames.load(self, matrix, i, f0, n, step, deps)
            last_use[i % 2], lists_i = self._launch(kernels, matrix, xbuf, n, f0, step, with_var, sig_buf, var_buf,
                                                    f"{i}", wait)
            lists.append(lists_i)
        if self._unified:  # map/unmap: the host copies are made valid (a no-op where memory is shared)
            for arr, buf in ((signal, sig_buf), (var_out, var_buf)):
                if arr is not None:
                    mapped, _ = cl.enqueue_map_buffer(q, buf, cl.map_flags.READ, 0, arr.shape, arr.dtype)
                    mapped.base.release(q)
        else:
            cl.enqueue_copy(q, signal, sig_buf, is_blocking=False)
            if with_var:
                cl.enqueue_copy(q, var_out, var_buf, is_blocking=False)
        q.finish()
        return self._invalid(matrix, frames.host, lists)

    def _launch(self, kernels: dict[str, Any], matrix: _DeviceMatrix, xbuf: Any, n: int, f0: int, step: int,
                with_var: bool, sig_buf: Any, var_buf: Any, tag: str, wait: list) -> tuple[Any, tuple]:
        """Enqueue one launch: n frames of ``xbuf`` into output rows [f0, f0+n); returns the main
        kernel's event and the launch's invalid-list buffers."""
        cl, q = self._cl, self._queue
        layout, lb = matrix.layout, matrix.bufs
        nlist = self._lists(layout, n)
        ninv, inv = matrix.buffer(f"ninv{tag}", nlist * 4), matrix.buffer(f"inv{tag}", nlist * matrix.cap * 8)
        part = matrix.buffer("part", layout.nslots * 2 * self._padded(step) * 8)
        bp = self._padded(n)
        ev = None
        if layout.ntiles == 0:  # an empty matrix: all sums are 0
            pass
        elif self.kernel == "cpu":
            nv = self._vectors(n)
            ev = kernels[f"reduce_cpu{nv}_{'v' if with_var else 's'}"](
                q, (layout.ntiles, bp // (8 * nv)), (1, 1), xbuf, np.int64(matrix.npix), np.int32(n),
                lb["tile_pos"], lb["tile_slot"], lb["pos_pix"], lb["pos_ptr"], lb["ent_slot"], lb[kernels["weights"]],
                part, np.int32(bp // 8), ninv, inv, np.int32(matrix.cap), wait_for=wait)
        else:
            wait = wait + [cl.enqueue_fill_buffer(q, ninv, np.int32(0), 0, nlist * 4)]
            ev = kernels[f"reduce_group_{'v' if with_var else 's'}"](
                q, (layout.ntiles * self._wg,), (self._wg,), xbuf, np.int64(matrix.npix), np.int32(n),
                lb["tile_pos"], lb["tile_slot"], lb["pos_pix"], lb["slot_ptr"], lb["slot_pos"], lb[kernels["weights"]],
                part, np.int32(bp), ninv, inv, np.int32(matrix.cap), wait_for=wait)
        kernels["combine"](q, (matrix.nbins, n), None, part, np.int32(bp), np.int32(n), np.int32(f0), lb["bin_ptr"],
                           lb["bin_slot"], np.int32(matrix.nbins), np.int32(with_var), sig_buf, var_buf,
                           wait_for=[ev] if ev is not None else wait)
        return ev, (f0, n, ninv, inv, nlist if ev is not None else 0)

    def _invalid(self, matrix: _DeviceMatrix, frames: Callable[[int, int], np.ndarray],
                 lists: list[tuple]) -> np.ndarray:
        """Collect the kernels' invalid lists; rescan on the host the tiles whose list overflowed."""
        cl = self._cl
        parts = []
        for f0, n, ninv, inv, nlist in lists:
            if nlist == 0:
                continue
            counts = np.empty(nlist, np.int32)
            cl.enqueue_copy(self._queue, counts, ninv)
            if not counts.any():
                continue
            cap = matrix.cap
            entries = np.empty((nlist, cap, 2), np.int32)
            cl.enqueue_copy(self._queue, entries, inv)
            ok = (counts > 0) & (counts <= cap)
            if ok.any():
                take = np.arange(cap)[None, :] < counts[ok, None]
                parts.append(entries[ok][take].astype(np.int64) + np.array([f0, 0]))
            for idx in np.flatnonzero(counts > cap):
                parts.append(self._rescan(matrix.layout, frames, f0, n, int(idx)))
        if not parts:
            return np.empty((0, 2), np.int64)
        out = np.concatenate(parts)
        return out[np.lexsort((out[:, 1], out[:, 0]))]

    def _rescan(self, layout: TileLayout, frames: Callable[[int, int], np.ndarray], f0: int, n: int,
                idx: int) -> np.ndarray:
        """Invalid entries of one overflowing list: its tile's pixels in its frames (``frames(b0, b1)``
        gives frames [b0, b1) on the host)."""
        if self.kernel == "cpu":
            groups = self._lists(layout, n) // layout.ntiles
            tile, group = divmod(idx, groups)
            width = 8 * self._vectors(n)
            b0, b1 = f0 + group * width, f0 + min(n, (group + 1) * width)
        else:
            tile, b0, b1 = idx, f0, f0 + n
        pix = layout.pos_pix[layout.tile_pos[tile]:layout.tile_pos[tile + 1]]
        fr, loc = np.nonzero(invalid_mask(frames(b0, b1)[:, pix]))
        return np.stack([fr.astype(np.int64) + b0, pix[loc].astype(np.int64)], axis=1)


class _HostFrames:
    """A block of frames on the host, wrapped in place (shared memory) or uploaded per launch."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames, self.dtype = frames, frames.dtype

    def __len__(self) -> int:
        return self.frames.shape[0]

    def host(self, b0: int, b1: int) -> np.ndarray:
        return self.frames[b0:b1]

    def load(self, engine: OpenCLEngine, matrix: _DeviceMatrix, i: int, f0: int, n: int, step: int,
             deps: list) -> tuple[Any, list]:
        """The device buffer of frames [f0, f0+n) (launch i) and the events a launch waits for."""
        cl, mf, part = engine._cl, engine._cl.mem_flags, self.frames[f0:f0 + n]
        if engine._unified:
            return cl.Buffer(engine._ctx, mf.READ_ONLY | mf.USE_HOST_PTR, hostbuf=part), []
        xbuf = matrix.buffer(f"frames{i % 2}", step * matrix.npix * self.dtype.itemsize)
        return xbuf, [cl.enqueue_copy(engine._copy_queue, xbuf, part, is_blocking=False, wait_for=deps)]


class _ChunkFrames:
    """A block of frames as compressed chunks, decompressed on the device launch by launch."""

    def __init__(self, frames: CompressedFrames, decoder: BSLZ4Decoder) -> None:
        self.frames, self.decoder, self.dtype = frames, decoder, np.dtype(frames.dtype)

    def __len__(self) -> int:
        return len(self.frames)

    def host(self, b0: int, b1: int) -> np.ndarray:
        return self.frames[b0:b1].decode().reshape(b1 - b0, -1)

    def load(self, engine: OpenCLEngine, matrix: _DeviceMatrix, i: int, f0: int, n: int, step: int,
             deps: list) -> tuple[Any, list]:
        xbuf = matrix.buffer(f"frames{i % 2}", step * matrix.npix * self.dtype.itemsize)
        try:
            self.decoder.decompress(self.frames.chunks[f0:f0 + n], self.dtype, self.frames.frame_shape, out=xbuf)
        except CorruptChunk as exc:  # its index in the block, not in the launch
            raise CorruptChunk(f0 + exc.index, exc.why) from None
        return xbuf, []  # same in-order queue: the launch follows the decompression
