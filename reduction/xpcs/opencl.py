"""The XPCS correlator on OpenCL (pyopencl): multi-tau ΣG2 per pixel, and two-time tiles.

Same numbers as the numpy correlator (:mod:`reduction.xpcs.multitau`, :mod:`reduction.xpcs.twotime`):

* **Multi-tau**: one work-item per pixel (per 8 pixels, as double8 vectors, on a CPU device) of the
  q partition streams the block's frames through
  every level (a shift register of the last 2·dpl frames at level 0, rings of 2·dpl binned frames
  and one carried frame per level above, on the device between blocks), accumulating ΣG2 in float64.
  Binned frames are sums, so integer counts give integer-valued float64 sums (exact below 2^53):
  **the same bits as numpy**; float frames differ by float64 rounding only (relative ~1e-15). The
  per-static-bin sums (the intensity trace, ΣIP, ΣIF, the frame sum) stay on the host, shared with
  the numpy correlator.
* **Two-time**: each tile of C is a matrix product of two blocks of the (float32) normalised series,
  by 16×16 work-groups through local memory, float64 sums; groups wholly below the diagonal skip.
  Products of float32 numbers are exact in float64: the tiles differ from numpy's (BLAS, float64)
  by the order of the additions only, far below the float32 the matrix is stored in.

Only the partition's pixels reach the device (the step selects them on the host), so pixels outside
the q map are never read. The device is chosen by :func:`reduction.azint.engines.device.open_device`
(``reduction.device``, Slurm's GPU assignment); a device without float64 is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reduction.azint.engines.device import DeviceInfo, open_device
from reduction.errors import EngineUnavailable

from .multitau import MultiTau

__all__ = ["OpenCLContext", "OpenCLMultiTau", "open_context"]

_SOURCE = Path(__file__).with_name("_xpcs_kernels.cl")
#: numpy frame types the kernel reads as they are (others are converted to float64 on the host)
_TYPES = {"u1": "uchar", "u2": "ushort", "u4": "uint", "i1": "char", "i2": "short", "i4": "int", "f4": "float",
          "f8": "double"}
_TS = 16  # two-time work-group side
_GROUP = 64  # multi-tau work-group size


class OpenCLContext:
    """A device, its queue and the kernels built for it (once per step, whatever the scans)."""

    def __init__(self, info: DeviceInfo, device: Any) -> None:
        import pyopencl as cl

        if not info.fp64:
            raise EngineUnavailable(f"OpenCL device {info} has no float64 (cl_khr_fp64): the correlator sums in "
                                    "float64")
        self.cl, self.info = cl, info
        try:
            self.ctx = cl.Context([device])
            self.queue = cl.CommandQueue(self.ctx)
        except Exception as exc:  # pyopencl's LogicError/RuntimeError: the device cannot be used
            raise EngineUnavailable(f"OpenCL device {info}: {exc}") from None
        self._kernels: dict[tuple[str, int, int, str], Any] = {}
        #: pixels per work-item: SIMD across pixels on a CPU device, coalesced reads on a GPU
        self.vector = 8 if info.kind == "cpu" else 1

    def __str__(self) -> str:
        return str(self.info)

    def kernel(self, name: str, ctype: str, r: int, nlev: int) -> Any:
        """Kernel ``name`` for frames of OpenCL type ``ctype``, R = 2·dpl and ``nlev`` levels (built once)."""
        key = (ctype, r, nlev, name)
        if key not in self._kernels:
            options = [f"-DT={ctype}", f"-DR={r}", f"-DNLEV={nlev}", f"-DTS={_TS}", f"-DVW={self.vector}"]
            try:
                program = self.cl.Program(self.ctx, _SOURCE.read_text()).build(options=options)
            except Exception as exc:  # a driver's build failure: say which device and options
                raise EngineUnavailable(f"OpenCL device {self.info} cannot build the XPCS kernels "
                                        f"({' '.join(options)}): {exc}") from None
            self._kernels[key] = self.cl.Kernel(program, name)
        return self._kernels[key]

    def twotime_product(self, x: np.ndarray) -> Callable[[int, int, int, int], np.ndarray]:
        """The raw products ``x[i0:i1] @ x[j0:j1].T`` (float64) of the series ``x`` (frames, pixels),
        float32, uploaded once; entries wholly below the diagonal of a tile are left unset."""
        cl = self.cl
        x = np.ascontiguousarray(x, dtype=np.float32)
        n_frames, npix = x.shape
        kernel = self.kernel("twotime_tile", "float", 2, 1)
        series = cl.Buffer(self.ctx, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR, hostbuf=x)

        def product(i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
            ni, nj = i1 - i0, j1 - j0
            out = np.zeros((ni, nj))
            buf = cl.Buffer(self.ctx, cl.mem_flags.WRITE_ONLY, out.nbytes)
            size = (-(-ni // _TS) * _TS, -(-nj // _TS) * _TS)
            kernel(self.queue, size, (_TS, _TS), series, np.int32(npix), np.int32(i0), np.int32(j0), np.int32(ni),
                   np.int32(nj), buf)
            cl.enqueue_copy(self.queue, out, buf)
            return out

        return product


def open_context(request: str = "auto") -> OpenCLContext:
    """The OpenCL device ``request`` names (``auto``, ``cpu``, ``gpu``, ``P:D``); EngineUnavailable if none."""
    info, device = open_device(request)
    return OpenCLContext(info, device)


class OpenCLMultiTau(MultiTau):
    """:class:`~reduction.xpcs.multitau.MultiTau` with ΣG2 of every pixel on an OpenCL device."""

    def __init__(self, context: OpenCLContext, static_index: np.ndarray, n_static: int, nframes: int,
                 dpl: int = 4) -> None:
        super().__init__(static_index, n_static, nframes, dpl)
        cl = context.cl
        self.context = context
        self._G2 = np.zeros((0, self.npix))  # on the device
        self._r = 2 * self.dpl
        self._k0 = int((self.level == 0).sum())
        first = np.searchsorted(self.level, np.arange(self.n_levels + 1)).astype(np.int32)
        lag_bins = (self.delay >> self.level).astype(np.int32)
        self._seen = np.zeros(self.n_levels, dtype=np.int64)
        mf = cl.mem_flags

        def zeros(n: int) -> Any:
            return cl.Buffer(context.ctx, mf.READ_WRITE | mf.COPY_HOST_PTR, hostbuf=np.zeros(max(n, 1)))

        self._padded = -(-max(self.npix, 1) // context.vector) * context.vector
        P, K = self._padded, max(len(self.delay), 1)
        self._d_G2, self._d_hist = zeros(K * P), zeros(self._r * P)
        self._d_ring, self._d_carry = zeros(self.n_levels * self._r * P), zeros(self.n_levels * P)
        self._d_first = cl.Buffer(context.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=first)
        self._d_lags = cl.Buffer(context.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                 hostbuf=lag_bins if len(lag_bins) else np.zeros(1, np.int32))

    def _correlate_pixels(self, block: np.ndarray) -> None:
        if not len(block) or not self.npix:
            return
        cl = self.context.cl
        ctype = _TYPES.get(f"{block.dtype.kind}{block.dtype.itemsize}") if block.dtype.isnative else None
        frames = np.ascontiguousarray(block if ctype else block.astype(np.float64))
        if self._padded != self.npix:  # whole vectors of pixels: pad with zeros (their sums are dropped)
            frames = np.pad(frames, ((0, 0), (0, self._padded - self.npix)))
        kernel = self.context.kernel("multitau", ctype or "double", self._r, self.n_levels)
        mf = cl.mem_flags
        d_frames = cl.Buffer(self.context.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=frames)
        d_seen = cl.Buffer(self.context.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=self._seen.astype(np.int32))
        items = self._padded // self.context.vector
        size = -(-items // _GROUP) * _GROUP
        try:
            kernel(self.context.queue, (size,), (_GROUP,), d_frames, np.int32(len(frames)),
                             np.int32(self._padded), np.int32(self._k0), self._d_G2, self._d_hist, self._d_ring,
                             self._d_carry, d_seen, self._d_first, self._d_lags)
            self.context.queue.finish()
        except cl.Error as exc:
            raise EngineUnavailable(f"OpenCL device {self.context}: the multi-tau kernel failed: {exc}") from None
        # the frames each level has seen: level l+1 gets one per pair closed at level l
        n = len(frames)
        for lv in range(self.n_levels):
            before = int(self._seen[lv])
            self._seen[lv] += n
            n = int(self._seen[lv]) // 2 - before // 2

    def _G2_sums(self) -> np.ndarray:
        out = np.zeros((len(self.delay), self._padded))
        if out.size:
            self.context.cl.enqueue_copy(self.context.queue, out, self._d_G2)
        return out[:, :self.npix]
