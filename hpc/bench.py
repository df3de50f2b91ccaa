"""``xreduce bench``: where a campaign's time goes, measured on its own first scan.

Takes the same overrides as ``xreduce run``, finds the campaign's first finished scan with frames,
and has the reduction kind time its stages on (up to ``frames``) frames of it: reading, the
kernel alone, the step end to end, and the bound the stages allow together
(:meth:`reduction.step.Kind.bench`). Nothing is written to the campaign's output folder.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reduction.errors import XReduceError
from reduction.step import BenchReport, get_kind

from .commands import _open_step, _say, _table
from .errors import ConfigError
from .plan import Chunk

__all__ = ["bench", "first_scan_chunk", "format_report"]


def first_scan_chunk(cfg: Any, frames: int) -> Chunk:
    """The first ``frames`` frames of the campaign's first finished, readable scan with frames."""
    camp = cfg.campaign
    kind = get_kind(cfg.reduction.kind)
    skipped: list[str] = []
    for dataset in map(str, kind.datasets(camp.raw_data, list(camp.datasets) if camp.datasets else None)):
        try:
            scans = kind.scans(dataset, camp.detector, camp.monitor, camp.scans, camp.frame_band)
        except XReduceError as exc:
            skipped.append(f"{dataset}: {exc}")
            continue
        for scan in scans:
            if scan.finished and scan.nframes and not scan.problem:
                return Chunk(id="bench", dataset=dataset, experiment=kind.experiment(dataset) or camp.name,
                             scan=scan.scan, detector=camp.detector, monitor=camp.monitor, start=0,
                             stop=min(frames, scan.nframes), nframes_scan=scan.nframes, energy_kev=scan.energy_kev,
                             frame_band=camp.frame_band)
            skipped.append(f"{dataset} scan {scan.scan}: {scan.problem or 'no frames' if scan.finished else 'running'}")
    reasons = "; ".join(skipped[:3]) or "no dataset master file"
    raise ConfigError(f"xreduce bench: no finished scan with frames in campaign.raw_data = {camp.raw_data} "
                      f"(campaign.datasets, campaign.scans = {camp.scans!r}): {reasons}")


def format_report(chunk: Chunk, report: BenchReport) -> str:
    rows = [[r.stage, r.frames, f"{r.seconds:.2f}", f"{r.rate:.1f}", r.detail] for r in report.rates]
    lines = [f"bench: {chunk.dataset} scan {chunk.scan}, frames [{chunk.start}, {chunk.stop}) of {chunk.nframes_scan}",
             f"engine: {report.engine}", "",
             _table(rows, ["stage", "frames", "seconds", "frames/s", "how"]), "",
             f"bound: {report.bound:.1f} frames/s = {report.bound_rule}",
             f"end to end reached {100 * report.reached:.0f} % of the bound", *report.notes]
    return "\n".join(lines)


def bench(cfg: Any, frames: int = 128) -> int:
    """Measure and print the stage rates of the campaign's reduction on its first scan."""
    if frames < 1:
        raise ConfigError(f"xreduce bench --frames {frames}: give a positive number of frames")
    step = _open_step(cfg)
    chunk = first_scan_chunk(cfg, frames)
    kind = get_kind(cfg.reduction.kind)
    with tempfile.TemporaryDirectory(prefix="xreduce-bench-") as workdir:
        report = kind.bench(step, asdict(chunk), Path(workdir))
    _say(format_report(chunk, report))
    return 0
