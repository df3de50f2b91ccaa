"""Frames kept compressed: the raw bitshuffle-LZ4 chunks of a block, for an engine that decompresses
them on its own device (:mod:`reduction.azint.engines.bslz4_opencl`), and their chunk header.

A bitshuffle-LZ4 chunk (the HDF5 bitshuffle filter, as lima and Eiger write it) starts with a
12-byte header: the uncompressed size (uint64, big-endian) and the block size in bytes (uint32,
big-endian); then each block is a uint32 big-endian compressed size and an LZ4 block of bitshuffled
elements, and the last ``elements % 8`` elements follow raw. No h5py here: engines import this.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["CompressedFrames", "bslz4_block_bytes"]


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
        from .direct import decode_bslz4  # h5py and bitshuffle: only when decoding here

        return decode_bslz4(self.chunks, self.dtype, self.frame_shape)


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
