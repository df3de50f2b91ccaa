"""Bitshuffle-LZ4 chunks decompressed on an OpenCL device, into a device buffer of frames.

Detectors write one frame per HDF5 chunk, bitshuffle-LZ4 (about 0.8 MB for an Eiger 4M frame of
17.9 MB of uint32). Shipping those bytes to a GPU and decompressing them there keeps PCIe and the
host's cores out of the way; the frames then feed the integration kernels where they are
(:meth:`OpenCLEngine.reduce_compressed <reduction.azint.engines.opencl_engine.OpenCLEngine.reduce_compressed>`).

How (``_bslz4.cl``; silx's ``silx.opencl.codec.bitshuffle_lz4`` showed the way): the 12-byte
chunk headers are checked here on the host (total size = one frame, a block size of whole groups
of 8 elements); on the device one work-item per chunk walks its block headers (where each LZ4
block starts), then one work-group per block decodes it in local memory and bit-unshuffles it
into its place in the frame. Every read and write is bounded; a damaged chunk ends in
:class:`CorruptChunk` naming it, never in a hang or a write out of bounds.

``XREDUCE_DEVICE_DECOMPRESSION``: ``1`` on, ``0`` off, unset or ``auto`` on for GPUs and off for
CPU devices (PoCL), where the ``bitshuffle`` library on the host's threads is faster
(docs/performance.md has the figures).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reduction.errors import EngineUnavailable, RawDataError

__all__ = ["BSLZ4Decoder", "CorruptChunk", "device_decompression"]

_KERNEL_FILE = Path(__file__).with_name("_bslz4.cl")
_STATUS = {1: "its block headers run past the chunk or give impossible sizes",
           2: "an LZ4 block does not decode to its size", 3: "damaged block headers and LZ4 stream"}


class CorruptChunk(RawDataError):
    """A chunk that does not decompress; ``index`` is its position in the batch."""

    def __init__(self, index: int, why: str) -> None:
        super().__init__(f"compressed chunk {index} of the batch cannot be decompressed: {why}")
        self.index, self.why = index, why


def device_decompression(kind: str, env: dict[str, str] | None = None) -> bool:
    """Whether to decompress on an OpenCL device of this kind ("gpu", "cpu", ...):
    ``XREDUCE_DEVICE_DECOMPRESSION`` = 1 / 0, else (``auto``) on GPUs only."""
    value = (os.environ if env is None else env).get("XREDUCE_DEVICE_DECOMPRESSION", "auto").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    return kind == "gpu"


class BSLZ4Decoder:
    """Decompress batches of bitshuffle-LZ4 chunks into (B, ny, nx) device buffers.

    Parameters
    ----------
    ctx, queue : the pyopencl context and command queue to work in (the engine's: its kernels
        then read the frames where they are).
    work_group : work-items per LZ4 block; default 1 on CPU devices (one core decodes a block,
        as the C library does) and 64 elsewhere.

    Examples
    --------
    >>> decoder = BSLZ4Decoder(ctx, queue)
    >>> frames = decoder.decompress(chunks, np.dtype("uint32"), (2162, 2068))   # a pyopencl Buffer
    >>> host = np.empty((len(chunks), 2162, 2068), np.uint32); cl.enqueue_copy(queue, host, frames)
    """

    def __init__(self, ctx: Any, queue: Any, *, work_group: int | None = None) -> None:
        import pyopencl as cl

        self._cl, self._ctx, self._queue = cl, ctx, queue
        device = queue.device
        if work_group is None:
            work_group = 1 if device.type & cl.device_type.CPU else 64
        self._wg = max(1, min(int(work_group), int(device.max_work_group_size)))
        self._local = int(device.local_mem_size)
        self._programs: dict[int, dict[str, Any]] = {}
        self._scratch: dict[str, Any] = {}

    def _kernels(self, itemsize: int) -> dict[str, Any]:
        """The two kernels for elements of ``itemsize`` bytes, built on first use."""
        kernels = self._programs.get(itemsize)
        if kernels is None:
            cl = self._cl
            try:
                source = _KERNEL_FILE.read_text()
            except OSError as exc:
                raise EngineUnavailable(f"OpenCL kernel source {_KERNEL_FILE} is missing ({exc})") from None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # pyopencl's CompilerWarning on non-empty build logs
                    program = cl.Program(self._ctx, source).build(options=[f"-DITEMSIZE={itemsize}"])
            except cl.Error as exc:
                raise EngineUnavailable(f"bitshuffle-LZ4 kernel build failed: {str(exc).strip()[-2000:]}") from None
            kernels = {name: cl.Kernel(program, name) for name in ("bslz4_blocks", "bslz4_decode")}
            self._programs[itemsize] = kernels
        return kernels

    def _buffer(self, name: str, nbytes: int) -> Any:
        """A scratch device buffer of at least nbytes, reused across calls."""
        buf = self._scratch.get(name)
        if buf is None or buf.size < nbytes:
            buf = self._cl.Buffer(self._ctx, self._cl.mem_flags.READ_WRITE, max(int(nbytes), 8))
            self._scratch[name] = buf
        return buf

    def decompress(self, chunks: Sequence[bytes], dtype: Any, shape: tuple[int, ...], out: Any = None) -> Any:
        """The frames of ``chunks`` (one bitshuffle-LZ4 chunk per frame of ``shape`` and ``dtype``)
        as a device buffer of (len(chunks), *shape) elements (``out`` when given, else a new one).

        Raises :class:`CorruptChunk` naming the first chunk that does not decompress; the
        buffer's content is then undefined.
        """
        from reduction.io.direct import bslz4_block_bytes  # h5py: imported where chunks are read anyway

        cl = self._cl
        dtype = np.dtype(dtype)
        itemsize = dtype.itemsize
        nframes = len(chunks)
        frame_bytes = int(np.prod(shape)) * itemsize
        if out is None:
            out = cl.Buffer(self._ctx, cl.mem_flags.READ_WRITE, max(nframes * frame_bytes, 8))
        elif out.size < nframes * frame_bytes:
            raise ValueError(f"output buffer of {out.size} bytes, {nframes} frames need {nframes * frame_bytes}")
        if nframes == 0:
            return out
        blocks = set()
        for i, raw in enumerate(chunks):
            try:
                blocks.add(bslz4_block_bytes(raw, frame_bytes, itemsize))
            except ValueError as exc:
                raise CorruptChunk(i, str(exc)) from None
        if len(blocks) != 1:
            raise ValueError(f"chunks of one batch must share a block size, got {sorted(blocks)} bytes")
        block_bytes = blocks.pop()
        nelem = frame_bytes // itemsize
        tail = nelem % 8 * itemsize
        full, rest = divmod(frame_bytes - tail, block_bytes)
        nblocks = full + (rest > 0)
        last = rest if rest else block_bytes
        bound = block_bytes + block_bytes // 255 + 16  # LZ4's compressBound
        if bound + block_bytes > self._local:
            raise EngineUnavailable(f"bitshuffle-LZ4 blocks of {block_bytes} bytes do not fit the device's "
                                    f"{self._local} bytes of local memory")

        starts = np.zeros(nframes + 1, np.uint64)
        starts[1:] = np.cumsum([len(raw) for raw in chunks])
        src = self._buffer("src", int(starts[-1]))
        host_src = np.frombuffer(b"".join(chunks), np.uint8)
        q = self._queue
        ev = [cl.enqueue_copy(q, src, host_src, is_blocking=False)]
        starts_buf = self._buffer("starts", starts.nbytes)
        ev.append(cl.enqueue_copy(q, starts_buf, starts, is_blocking=False))
        pos = self._buffer("block_pos", max(nframes * nblocks, 1) * 8)
        lens = self._buffer("block_len", max(nframes * nblocks, 1) * 4)
        status = self._buffer("status", nframes * 4)
        kernels = self._kernels(itemsize)
        ev = [kernels["bslz4_blocks"](q, (nframes,), None, src, starts_buf, np.uint32(nframes), np.uint32(nblocks),
                                   np.uint32(bound), np.uint32(tail), np.uint64(frame_bytes), pos, lens, out,
                                   status, wait_for=ev)]
        if nblocks:
            wg = self._wg
            ev = [kernels["bslz4_decode"](q, (nblocks * wg, nframes), (wg, 1), src, pos, lens, np.uint32(nblocks),
                                       np.uint32(block_bytes), np.uint32(last), np.uint64(frame_bytes), out, status,
                                       cl.LocalMemory(bound), cl.LocalMemory(block_bytes), wait_for=ev)]
        codes = np.empty(nframes, np.int32)
        cl.enqueue_copy(q, codes, status, wait_for=ev)  # blocking: the frames are ready when it returns
        bad = np.flatnonzero(codes)
        if bad.size:
            raise CorruptChunk(int(bad[0]), _STATUS.get(int(codes[bad[0]]), f"status {codes[bad[0]]}"))
        return out
