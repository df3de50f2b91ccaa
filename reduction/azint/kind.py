"""The azimuthal-integration kinds, ``azint1d`` (I(radial) per frame, NXazint1d) and ``azint2d``
(a cake I(χ, radial) per frame, NXazint2d), as :class:`reduction.step.Kind` registrations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reduction.step import BenchReport, Kind, MasterEntry, MergeReport, Problem, ScanInfo, SelfTest, Step

from .config import Azint1dConfig, Azint2dConfig

__all__ = ["AzintKind", "AZINT1D", "AZINT2D"]


class AzintKind(Kind):
    """Integrate every frame; chunks are frame ranges, merged into one NXazint entry per scan."""

    def open(self, reduction: Mapping[str, Any]) -> Step:
        from .step import AzintStep

        return AzintStep(reduction)

    def is_done(self, path: Path, chunk_id: str, config_hash: str) -> bool:
        from .chunkfile import chunk_matches

        return chunk_matches(path, chunk_id, config_hash)

    def check(self, reduction: Mapping[str, Any], scan: ScanInfo) -> list[Problem]:
        from reduction.errors import GeometryError

        from .checks import radial_range_problem

        try:
            problem = radial_range_problem(reduction, scan.energy_kev)
        except GeometryError as exc:  # a PONI that every chunk would fail to read
            return [Problem("poni", str(exc))]
        return [Problem("radial_range", problem)] if problem else []

    def looks_done(self, path: Path, chunk_id: str, config_hash: str) -> bool:
        from reduction.io.nexus import hdf5_complete

        return hdf5_complete(path)  # the name is the chunk id; the file was renamed into place once complete

    def merge(self, master: Path, entries: Sequence[MasterEntry], *, mode: str, config_json: str) -> MergeReport:
        from .nexus import EntrySpec, write_master

        # the PONI comes from the chunk files: the one the frames were integrated with
        specs = [EntrySpec(name=e.name, kind=self.name, dataset=e.dataset, scan=e.scan, nframes=e.nframes,
                           chunks=list(e.chunks), config_json=config_json, chunk_ids=list(e.chunk_ids),
                           beamline=e.beamline) for e in entries]
        return write_master(master, specs, mode=mode)

    def preview(self, master: Path, png: Path) -> None:
        from .nexus import write_preview

        write_preview(master, png)

    def bench(self, step: Step, chunk: Mapping[str, Any], workdir: Path) -> BenchReport:
        from .bench import bench_step
        from .step import AzintStep

        assert isinstance(step, AzintStep), f"{self.name}: a step of another kind ({type(step).__name__})"
        return bench_step(step, chunk, workdir)

    def warm_up(self) -> None:
        from . import nexus

        nexus.import_plotting()

    def export(self, master: Path, folder: Path, formats: Sequence[str], frames: str = "sum") -> list[Path]:
        from .export import export_master

        return export_master(master, folder, formats, frames)

    def rebin(self, master: Path, out: Path, *, factor: int, azimuthal_factor: int = 1,
              entries: Sequence[str] | None = None, overwrite: bool = False) -> Path:
        from .derive import rebin_master

        return rebin_master(master, out, factor=factor, azimuthal_factor=azimuthal_factor, entries=entries,
                            overwrite=overwrite)

    def sum_frames(self, master: Path, out: Path, *, entries: Sequence[str] | None = None, frames: str | None = None,
                   mean: bool = False, combine: str | None = None, overwrite: bool = False) -> Path:
        from .derive import sum_master

        return sum_master(master, out, entries=entries, frames=frames, mean=mean, combine=combine,
                          overwrite=overwrite)

    def selftest(self, device: str = "auto", require: Sequence[str] = ()) -> SelfTest:
        from .selftest import run_selftest

        return run_selftest(self.name, device, require)


class Azint1d(AzintKind):
    name = "azint1d"
    schema = Azint1dConfig
    definitions = ("NXazint1d",)


class Azint2d(AzintKind):
    name = "azint2d"
    schema = Azint2dConfig
    definitions = ("NXazint2d",)


AZINT1D = Azint1d()
AZINT2D = Azint2d()
