"""The sum kind's step: frames of a chunk read block by block, summed, written as one chunk file.

Built once per worker process from the resolved ``reduction`` config (the mask is read there, so a
bad mask file stops the command before anything runs); called for each chunk. It is the
:class:`reduction.step.Step` of the sum kind.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from reduction.errors import RawDataError
from reduction.io import bliss
from reduction.io.blocks import StageTimes, read_ahead
from reduction.io.images import load_image

from .chunkfile import ChunkMeta, write_chunk
from .sums import FrameSums, frame_sums

__all__ = ["SumStep", "READ_BLOCK"]

#: Frames read per block: memory stays bounded whatever the chunk size.
READ_BLOCK = 64


class SumStep:
    """Per frame of a chunk: total counts, maximum and number of the valid, unmasked pixels.

    Raw counts: ``campaign.monitor`` is not applied (the sums are what the detector counted).
    """

    #: nothing worth saying: numpy on the CPU (the Step protocol's run summary)
    engine_used = ""

    def __init__(self, reduction: Mapping[str, Any]) -> None:
        self.kind = str(reduction["kind"])
        self.stages: dict[str, float] = {}
        self.mask_file = reduction.get("mask")
        self.masked = None if not self.mask_file else load_image(self.mask_file, what="mask") != 0

    def __call__(self, chunk: Mapping[str, Any], out: Path, *, config_hash: str, config_json: str) -> int:
        """Sum the frames [start, stop) of the chunk's scan into ``out``; return the frame count."""
        dataset, scan, detector = str(chunk["dataset"]), str(chunk["scan"]), str(chunk["detector"])
        start, stop = int(chunk["start"]), int(chunk["stop"])
        parts = []
        times = StageTimes()
        blocks = [(b, min(b + READ_BLOCK, stop)) for b in range(start, stop, READ_BLOCK)]
        read = partial(bliss.read_frames, dataset, scan, detector, frame_band=chunk.get("frame_band", "all"))
        for _, _, frames in read_ahead(read, blocks, times):
            if self.masked is not None and self.masked.shape != frames.shape[1:]:
                raise RawDataError(f"mask file {self.mask_file} has shape {self.masked.shape}, but the frames of "
                                   f"{dataset} scan {scan} (/{scan}/measurement/{detector}) are {frames.shape[1:]}")
            t0 = time.perf_counter()
            parts.append(frame_sums(frames, self.masked))
            times.reduce += time.perf_counter() - t0
        meta = ChunkMeta(chunk_id=str(chunk["id"]), config_hash=config_hash, kind=self.kind, dataset=dataset,
                         scan=scan, frame_start=start, frame_stop=stop, config_json=config_json)
        t0 = time.perf_counter()
        write_chunk(out, meta, FrameSums.concat(parts))
        times.write += time.perf_counter() - t0
        self.stages = times.as_dict()
        return stop - start
