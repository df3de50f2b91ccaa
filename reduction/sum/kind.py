"""The ``sum`` kind: per frame, the total counts and the maximum of the valid pixels.

Registered through the ``xreduce.kinds`` entry-point group (pyproject.toml), not as a built-in.
Another package can reuse it under its own name by subclassing :class:`SumKind` with its ``name``
and a schema whose ``kind`` defaults to that name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reduction.step import Kind, MasterEntry, MergeReport, SelfTest, Step

from .config import SumConfig

__all__ = ["SumKind", "SUM"]


class SumKind(Kind):
    """Chunks are frame ranges; each scan becomes one NXentry of per-frame sums."""

    name = "sum"
    schema = SumConfig

    def open(self, reduction: Mapping[str, Any]) -> Step:
        from .step import SumStep

        return SumStep(reduction)

    def is_done(self, path: Path, chunk_id: str, config_hash: str) -> bool:
        from .chunkfile import chunk_matches

        return chunk_matches(path, chunk_id, config_hash)

    def looks_done(self, path: Path, chunk_id: str, config_hash: str) -> bool:
        from reduction.io.nexus import hdf5_complete

        return hdf5_complete(path)  # the name is the chunk id; the file was renamed into place once complete

    def merge(self, master: Path, entries: Sequence[MasterEntry], *, mode: str, config_json: str) -> MergeReport:
        from .nexus import write_master

        return write_master(master, entries, kind=self.name, mode=mode, config_json=config_json)

    def preview(self, master: Path, png: Path) -> None:
        from .nexus import write_preview

        write_preview(master, png)

    def selftest(self, device: str = "auto", require: Sequence[str] = ()) -> SelfTest:
        from .selftest import run_selftest

        return run_selftest(self.name)


SUM = SumKind()
