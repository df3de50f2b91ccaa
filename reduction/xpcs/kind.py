"""The ``xpcs`` kind: multi-tau g2 and two-time correlation of whole scans, one NXxpcs entry per scan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reduction.step import BenchReport, Kind, MasterEntry, MergeReport, SelfTest, Step

from .config import XpcsConfig

__all__ = ["XpcsKind", "XPCS"]


class XpcsKind(Kind):
    """One chunk per scan (lags reach half the scan and the normalisation needs every frame)."""

    name = "xpcs"
    schema = XpcsConfig
    whole_scan = True

    def open(self, reduction: Mapping[str, Any]) -> Step:
        from .step import XpcsStep

        return XpcsStep(reduction)

    def is_done(self, path: Path, chunk_id: str, config_hash: str) -> bool:
        from .chunkfile import chunk_matches

        return chunk_matches(path, chunk_id, config_hash)

    def merge(self, master: Path, entries: Sequence[MasterEntry], *, mode: str, config_json: str) -> MergeReport:
        from .nexus import write_master

        return write_master(master, entries, kind=self.name, mode=mode, config_json=config_json)

    def preview(self, master: Path, png: Path) -> None:
        from .nexus import write_preview

        write_preview(master, png)

    def bench(self, step: Step, chunk: Mapping[str, Any], workdir: Path) -> BenchReport:
        from .bench import bench_step
        from .step import XpcsStep

        assert isinstance(step, XpcsStep), f"{self.name}: a step of another kind ({type(step).__name__})"
        return bench_step(step, chunk, workdir)

    def selftest(self, device: str = "auto", require: Sequence[str] = ()) -> SelfTest:
        from .selftest import run_selftest

        return run_selftest(self.name)


XPCS = XpcsKind()
