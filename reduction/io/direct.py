"""Detector frames read as raw HDF5 chunks and decompressed in threads, without HDF5's filter pipeline.

Detectors (lima, Eiger) store one frame per chunk, compressed: bitshuffle-LZ4 mostly, sometimes
plain LZ4 or deflate. h5py decompresses those chunks one after the other, holding its global
lock, inside HDF5's filter pipeline. Reading the raw bytes of each chunk (``read_direct_chunk``,
hundreds of frames/s) and decompressing them with a library call that releases the GIL, in a pool
of threads, gives the same bytes faster and leaves the caller's thread free (Eiger 4M, 0.78 MB per
compressed frame, 2 cores: 100 frames/s through h5py, 243 direct; docs/performance.md).

Libraries, chosen by measurement: the ``bitshuffle`` package (its ``decompress_lz4`` is the
reference implementation, C, and releases the GIL); ``lz4.block`` for HDF5's LZ4 filter; ``zlib``
for deflate. (hdf5plugin offers only HDF5 filters, not a decompress call; blosc2 does not read
bitshuffle-LZ4 chunks, whose framing is bitshuffle's own.)

:func:`read_direct` serves a frame range only when every frame is one whole chunk of a source it
can decode — a plain or external-link dataset, or a virtual dataset whose mappings give each frame
one source row; anything else (other filters, chunk shapes, gaps, type conversions, a chunk that
does not decode) answers None, and the caller reads through h5py, which also names a damaged file.
``XREDUCE_DIRECT_READS=0`` turns the direct path off (to compare, or to rule it out).
A rank-4 dataset ``(points, band, ny, nx)`` (lima2 frame bands, :mod:`reduction.io.bands`) is read
the same way when each (point, band) frame is one chunk ``(1, 1, ny, nx)``: ``band=None`` reads
frames of the flattened, point-major sequence, ``band=k`` band k of points [start, stop).
:func:`read_compressed` walks the same chunks but keeps bitshuffle-LZ4 ones as they are
(:class:`CompressedFrames`), for an engine that decompresses on its device.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

__all__ = ["CompressedFrames", "read_direct", "read_compressed", "decode_bslz4", "bslz4_block_bytes", "decoder_for",
           "frame_locations", "read_threads"]

log = logging.getLogger(__name__)

BITSHUFFLE, LZ4, DEFLATE = 32008, 32004, 1
_BSHUF_LZ4 = 2  # bitshuffle's cd_values[4]: 0 none, 2 LZ4, 3 zstd

Decoder = Callable[[bytes], np.ndarray]


def enabled() -> bool:
    """False when ``XREDUCE_DIRECT_READS=0``: every read goes through h5py."""
    return os.environ.get("XREDUCE_DIRECT_READS", "1") != "0"


def read_threads() -> int:
    """Decompression threads: ``XREDUCE_READ_THREADS``, else the CPUs this process may use."""
    value = os.environ.get("XREDUCE_READ_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(read_threads(), thread_name_prefix="xreduce-decompress")
    return _POOL


# -- decoders -----------------------------------------------------------------------------------
def _bitshuffle_lz4(shape: tuple[int, ...], dtype: np.dtype) -> Decoder:
    import bitshuffle

    def decode(raw: bytes) -> np.ndarray:
        _, block_bytes = struct.unpack(">QI", raw[:12])  # total size, block size (bytes)
        return bitshuffle.decompress_lz4(np.frombuffer(raw, np.uint8, offset=12), shape, dtype,
                                         block_bytes // dtype.itemsize)
    return decode


def bslz4_block_bytes(raw: bytes, frame_bytes: int, itemsize: int) -> int:
    """The block size (bytes) of a bitshuffle-LZ4 chunk that must hold ``frame_bytes``, from its
    header; ValueError saying what is wrong when the header does not describe such a chunk."""
    if len(raw) < 12:
        raise ValueError(f"{len(raw)} bytes, shorter than its 12-byte header")
    total, block = struct.unpack(">QI", raw[:12])
    if total != frame_bytes:
        raise ValueError(f"its header gives {total} uncompressed bytes, a frame has {frame_bytes}")
    if block <= 0 or block % (8 * itemsize):
        raise ValueError(f"its header gives blocks of {block} bytes, not a multiple of 8 elements of {itemsize} bytes")
    return int(block)


def _lz4(shape: tuple[int, ...], dtype: np.dtype) -> Decoder:
    import lz4.block

    nbytes = int(np.prod(shape)) * dtype.itemsize

    def decode(raw: bytes) -> np.ndarray:
        total, block = struct.unpack(">QI", raw[:12])
        if total != nbytes:
            raise ValueError(f"LZ4 chunk holds {total} bytes, a frame {nbytes}")
        out, pos = bytearray(), 12
        while len(out) < total:
            size = struct.unpack(">I", raw[pos:pos + 4])[0]
            want = min(block, total - len(out))
            data = raw[pos + 4:pos + 4 + size]
            out += data if size == want else lz4.block.decompress(data, uncompressed_size=want)
            pos += 4 + size
        return np.frombuffer(bytes(out), dtype).reshape(shape)
    return decode


def _deflate(shape: tuple[int, ...], dtype: np.dtype) -> Decoder:
    return lambda raw: np.frombuffer(zlib.decompress(raw), dtype).reshape(shape)


def decoder_for(dset: h5py.Dataset) -> Decoder | None:
    """How to turn one raw chunk of ``dset`` into a frame, or None when this path does not apply
    (not one frame per chunk, no filter, another filter, or its library missing)."""
    lead = _lead(dset)
    if lead is None:
        return None
    frame = tuple(dset.shape[lead:])
    if dset.chunks is None or tuple(dset.chunks) != (*(1,) * lead, *frame):
        return None
    plist = dset.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return None
    code, _, values, _ = plist.get_filter(0)
    dtype = dset.dtype
    if dtype.kind not in "uif" or not dtype.isnative:
        return None
    try:
        if code == BITSHUFFLE and len(values) > 4 and values[4] == _BSHUF_LZ4:
            return _bitshuffle_lz4(frame, dtype)
        if code == LZ4:
            return _lz4(frame, dtype)
        if code == DEFLATE:
            return _deflate(frame, dtype)
    except ImportError as exc:  # the library is an install option: h5py (with hdf5plugin) still reads
        log.debug("no direct-chunk decoder for filter %d: %s", code, exc)
    return None


def _lead(dset: h5py.Dataset) -> int | None:
    """Axes before the frame's (ny, nx): 1 for (frames, ny, nx), 2 for (points, band, ny, nx), else None."""
    return {3: 1, 4: 2}.get(dset.ndim)


# -- where the frames are -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    file: Path | None  # None: the dataset itself (a plain dataset, or the target of an external link)
    dset: str
    rows: list[int]  # source row of each frame, in frame order
    frames: list[int]  # position of each in the range read


def _rows(space: h5py.h5s.SpaceID) -> np.ndarray | None:
    """Indices along axis 0 a regular hyperslab covers, in order (whole frames only), else None."""
    if space.get_select_type() != h5py.h5s.SEL_HYPERSLABS or not space.is_regular_hyperslab():
        return None
    start, stride, count, block = space.get_regular_hyperslab()
    if count[0] >= h5py.h5s.UNLIMITED or block[0] >= h5py.h5s.UNLIMITED:
        return None
    return (start[0] + stride[0] * np.arange(count[0])[:, None] + np.arange(block[0])[None, :]).ravel()


def _whole_frames(space: h5py.h5s.SpaceID, frame: tuple[int, ...]) -> bool:
    """A hyperslab selection that takes every pixel of the frames it covers."""
    rows = _rows(space)
    lo, hi = space.get_select_bounds()
    return rows is not None and tuple(lo[1:]) == (0,) * len(frame) and tuple(h + 1 for h in hi[1:]) == frame \
        and space.get_select_npoints() == len(rows) * int(np.prod(frame))


def frame_locations(dset: h5py.Dataset, start: int, stop: int,
                    resolve: Callable[[str], Path]) -> list[_Source] | None:
    """The source rows holding frames [start, stop) of ``dset`` (a plain dataset, an external link's
    target, or a virtual dataset; ``resolve`` turns a VDS source file name into a path), or None when
    some frame is not exactly one row of one source (gaps, partial or irregular mappings)."""
    if not dset.is_virtual:
        frames = list(range(stop - start))
        return [_Source(None, "", list(range(start, stop)), frames)]
    frame = tuple(dset.shape[1:])
    where: dict[int, tuple[str, str, int]] = {}
    for vmap in dset.virtual_sources():
        if "%b" in vmap.file_name or "%b" in vmap.dset_name:
            return None
        vrows = _rows(vmap.vspace)
        if vrows is None or not _whole_frames(vmap.vspace, frame):
            return None
        srows: np.ndarray | None
        if vmap.src_space.get_select_type() == h5py.h5s.SEL_ALL:  # row k of the mapping is row k of the source
            srows = np.arange(len(vrows))  # (its frame shape is checked on the dataset when read)
        else:
            srows = _rows(vmap.src_space)
            if srows is None or len(srows) != len(vrows) or not _whole_frames(vmap.src_space, frame):
                return None
        for v, s in zip(vrows.tolist(), srows.tolist()):
            if start <= v < stop:
                where[v] = (vmap.file_name, vmap.dset_name, s)
    if len(where) != stop - start:
        return None  # a gap: HDF5's fill value belongs there
    sources: dict[tuple[str, str], _Source] = {}
    for v in range(start, stop):
        name, inner, row = where[v]
        key = (name, inner)
        if key not in sources:
            sources[key] = _Source(resolve(name), inner, [], [])
        sources[key].rows.append(row)
        sources[key].frames.append(v - start)
    return list(sources.values())


# -- reading ------------------------------------------------------------------------------------
def decode_bslz4(chunks: list[bytes], dtype: np.dtype, frame: tuple[int, ...]) -> np.ndarray:
    """Frames from their bitshuffle-LZ4 chunks, decompressed on the host in threads (as read_direct)."""
    out = np.empty((len(chunks), *frame), dtype)
    decode = _bitshuffle_lz4(frame, np.dtype(dtype))
    for job in [_pool().submit(_decode_into, out, k, raw, decode) for k, raw in enumerate(chunks)]:
        job.result()
    return out


@dataclass(frozen=True)
class CompressedFrames:
    """A block of frames as their raw bitshuffle-LZ4 chunks, one per frame (what
    :func:`reduction.io.direct.read_compressed` reads); :meth:`decode` gives the frames on the host."""

    chunks: list[bytes]
    dtype: np.dtype
    frame_shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.chunks), *self.frame_shape)

    def __getitem__(self, frames: slice) -> CompressedFrames:
        return CompressedFrames(self.chunks[frames], self.dtype, self.frame_shape)

    def decode(self) -> np.ndarray:
        """The frames (B, *frame_shape), decompressed on the host in threads."""
        return decode_bslz4(self.chunks, self.dtype, self.frame_shape)


class _NotHere(Exception):
    """A chunk this path does not take: the caller reads another way."""


#: where frames are: (source, [(chunk offset before the frame axes, position in the range read)])
_Chunks = list[tuple[_Source, list[tuple[tuple[int, ...], int]]]]


def _chunk_places(dset: h5py.Dataset, start: int, stop: int, band: int | None,
                  resolve: Callable[[str], Path]) -> _Chunks | None:
    """The chunk of each frame in [start, stop): for a rank-4 dataset, of the flattened point-major
    sequence (``band`` None) or band ``band`` of points [start, stop); None where
    :func:`frame_locations` gives none."""
    if dset.ndim != 4:
        sources = frame_locations(dset, start, stop, resolve)
        return None if sources is None else [(s, [((r,), k) for r, k in zip(s.rows, s.frames)]) for s in sources]
    nbands = int(dset.shape[1])
    if band is not None:
        sources = frame_locations(dset, start, stop, resolve)
        return None if sources is None else [(s, [((r, band), k) for r, k in zip(s.rows, s.frames)]) for s in sources]
    p0, p1 = start // nbands, -(-stop // nbands)
    sources = frame_locations(dset, p0, p1, resolve)
    if sources is None:
        return None
    places: _Chunks = []
    for s in sources:
        items = [((r, b), (p0 + pk) * nbands + b - start) for r, pk in zip(s.rows, s.frames) for b in range(nbands)]
        places.append((s, [(offset, k) for offset, k in items if 0 <= k < stop - start]))
    return places


def _each_chunk(dset: h5py.Dataset, places: _Chunks, open_file: Callable[[Path], h5py.File],
                take: Callable[[int, bytes, int, int | None, Decoder], None]) -> bool:
    """Call ``take(k, raw, filter_mask, filter_code, decoder)`` for the raw chunk of each frame k of ``places``;
    False when some source has no direct-chunk decoder (another filter, chunk shape or dtype)."""
    for source, frames in places:
        with nullcontext(None) if source.file is None else open_file(source.file) as f:
            src = dset if f is None else f[source.dset]
            code, decode = _filter_code(src), decoder_for(src)
            if decode is None or src.dtype != dset.dtype or tuple(src.shape[1:]) != tuple(dset.shape[1:]):
                log.debug("%s in %s: no direct-chunk decoder (chunks %s, dtype %s); read through h5py",
                          source.dset, source.file, src.chunks, src.dtype)
                return False
            pad = (0,) * 2  # the frame's (ny, nx): a chunk holds a whole frame
            for offset, k in frames:
                mask, raw = src.id.read_direct_chunk((*offset, *pad))
                take(k, raw, mask, code, decode)
    return True


def _filter_code(dset: h5py.Dataset) -> int | None:
    """The HDF5 filter id of a dataset with exactly one filter, else None."""
    plist = dset.id.get_create_plist()
    return plist.get_filter(0)[0] if plist.get_nfilters() == 1 else None


def read_direct(dset: h5py.Dataset, start: int, stop: int, resolve: Callable[[str], Path],
                open_file: Callable[[Path], h5py.File], band: int | None = None) -> np.ndarray | None:
    """Frames [start, stop) of ``dset`` from their raw chunks, decompressed in threads; None when
    this path cannot give exactly what h5py would (the caller then reads through h5py). A rank-4
    dataset gives frames of its flattened point-major sequence, or band ``band`` of points [start, stop)."""
    if not enabled():  # h5py's path, e.g. to compare the two
        return None
    lead = _lead(dset)
    places = None if lead is None else _chunk_places(dset, start, stop, band, resolve)
    if lead is None or places is None:
        log.debug("%s [%d, %d): not one source row per frame; read through h5py", dset.name, start, stop)
        return None
    out = np.empty((stop - start, *dset.shape[lead:]), dset.dtype)
    pending = []

    def take(k: int, raw: bytes, mask: int, code: int | None, decode: Decoder) -> None:
        pending.append(_pool().submit(_decode_into, out, k, raw, decode if not mask & 1 else None))

    try:
        if not _each_chunk(dset, places, open_file, take):
            return None
        for job in pending:
            job.result()
    except Exception as exc:  # noqa: BLE001 - an unallocated or damaged chunk: h5py reads (and names) it
        log.debug("%s [%d, %d): direct-chunk read failed (%s); read through h5py", dset.name, start, stop, exc)
        for job in pending:
            job.cancel()
        return None
    return out


def read_compressed(dset: h5py.Dataset, start: int, stop: int, resolve: Callable[[str], Path],
                    open_file: Callable[[Path], h5py.File], band: int | None = None) -> CompressedFrames | None:
    """Frames [start, stop) of ``dset`` as their raw bitshuffle-LZ4 chunks, not decompressed (for
    :mod:`reduction.azint.engines.bslz4_opencl`); None where :func:`read_direct` would not apply or
    some chunk is not bitshuffle-LZ4 with a header that fits a frame (the caller reads another way).
    ``band`` as :func:`read_direct`."""
    if not enabled():
        return None
    lead = _lead(dset)
    places = None if lead is None else _chunk_places(dset, start, stop, band, resolve)
    if lead is None or places is None:
        return None
    frame, dtype = tuple(dset.shape[lead:]), dset.dtype
    nbytes = int(np.prod(frame)) * dtype.itemsize
    chunks: list[bytes] = [b""] * (stop - start)

    def take(k: int, raw: bytes, mask: int, code: int | None, decode: Decoder) -> None:
        if mask & 1 or code != BITSHUFFLE:
            raise _NotHere(f"frame {start + k}: not a bitshuffle-LZ4 chunk")
        try:
            bslz4_block_bytes(raw, nbytes, dtype.itemsize)
        except ValueError as exc:
            raise _NotHere(f"frame {start + k}: {exc}") from None
        chunks[k] = raw

    try:
        if not _each_chunk(dset, places, open_file, take):
            return None
    except Exception as exc:  # noqa: BLE001 - as read_direct: another path reads (and names) it
        log.debug("%s [%d, %d): compressed chunks not taken (%s)", dset.name, start, stop, exc)
        return None
    return CompressedFrames(chunks, dtype, frame)


def _decode_into(out: np.ndarray, k: int, raw: bytes, decode: Decoder | None) -> None:
    frame = np.frombuffer(raw, out.dtype) if decode is None else decode(raw)  # filter skipped: raw bytes
    out[k] = frame.reshape(out.shape[1:])
