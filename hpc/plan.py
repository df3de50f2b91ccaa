"""Planning: discover scans (metadata only) and cut them into chunks with stable ids.

A chunk's id is derived from what it reduces (dataset file, scan, frame range) and how (the
config hash), so a re-run finds finished chunks by name and a changed reduction parameter gives
new ids, hence new work. The plan is written once into the output folder; every worker reads
the same file.

The plan is written twice: ``plan.json``, the latest plan (what ``status`` and people read, replaced
by each ``plan``/``run``), and an immutable snapshot ``plans/<hash12>.json`` named by the sha256 of
its content — the work order a running campaign's workers read. A snapshot is written once and never
rewritten (same name, same bytes); a worker checks the content against the name, so a new plan
written while a campaign runs never changes what its workers do.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from reduction.errors import RawDataPending, XReduceError
from reduction.step import Kind, ScanInfo, atomic_output, get_kind, process_map

from .errors import ConfigError, PlanError

__all__ = ["Chunk", "Plan", "make_plan", "write_plan", "read_plan", "chunk_id", "PLAN_NAME", "PLANS_DIR",
           "snapshot_path", "write_snapshot"]

PLAN_NAME = "plan.json"
#: the folder of the immutable plan snapshots, ``<output>/plans/<hash12>.json``
PLANS_DIR = "plans"
_DIGEST_CHARS = 12
_FORMAT = "xreduce-plan-1"


def chunk_id(dataset: str, scan: str, start: int, stop: int, config_hash: str) -> str:
    """Stable id of a chunk: the same inputs and config always give the same id, however the path to
    the dataset is spelled (a symbolic link to RAW_DATA, ``..``): the file's real path counts."""
    text = json.dumps([os.path.realpath(dataset), str(scan), int(start), int(stop), config_hash])
    return "c-" + hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Chunk:
    """Frames [start, stop) of one scan, reduced with one config."""

    id: str
    dataset: str
    experiment: str
    scan: str
    detector: str
    monitor: str | None
    start: int
    stop: int
    nframes_scan: int
    energy_kev: float | None = None
    problem: str | None = None  # set when the scan cannot be reduced: the chunk fails with this reason
    frame_band: int | str = "all"  # campaign.frame_band: which frames of a rank-4 detector dataset

    @property
    def nframes(self) -> int:
        return self.stop - self.start


@dataclass
class Plan:
    """Everything a worker needs: the resolved config, the chunks and how they are grouped."""

    campaign: str
    output: str
    config_hash: str
    config: dict[str, Any]
    chunks: list[Chunk]
    pending_scans: list[dict[str, str]] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    created: str = ""

    @property
    def nframes(self) -> int:
        return sum(c.nframes for c in self.chunks)

    @cached_property
    def config_json(self) -> str:
        """The resolved config as JSON (sorted keys), serialised once: what chunk files and masters record."""
        return json.dumps(self.config, sort_keys=True)

    @property
    def kind(self) -> Kind:
        """The reduction kind of this plan's config."""
        return get_kind(self.config["reduction"]["kind"])

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["chunks"] = [vars(c) for c in self.chunks]  # not asdict: its deep copy of 10 000 chunks costs ~0.5 s
        data["format"] = _FORMAT
        return json.dumps(data, indent=1)

    @cached_property
    def _by_id(self) -> dict[str, Chunk]:
        return {chunk.id: chunk for chunk in self.chunks}

    def chunk(self, chunk_id: str) -> Chunk:
        """The chunk with this id; PlanError when the plan has none (a worker given another plan's chunk).
        Indexed once per plan: a worker process looks up every chunk it is given."""
        if chunk_id in self._by_id:
            return self._by_id[chunk_id]
        raise PlanError(f"chunk {chunk_id} is not in the plan of campaign {self.campaign} (config "
                        f"{self.config_hash[:12]}): the worker was given another plan's chunk")


def make_plan(cfg: Any, config_hash: str, config: dict[str, Any]) -> Plan:
    """Discover datasets and finished scans of the campaign and cut them into chunks, as the
    reduction kind says (raw-data layout, frame ranges or whole scans)."""
    camp = cfg.campaign
    kind = get_kind(cfg.reduction.kind)
    per_chunk = int(cfg.partition.frames_per_chunk)
    datasets = kind.datasets(camp.raw_data, list(camp.datasets) if camp.datasets else None)
    if not datasets:
        patterns = ", ".join(camp.datasets or ["(default: every dataset master file)"])
        raise ConfigError(f"no dataset master file under campaign.raw_data = {camp.raw_data} matches "
                          f"campaign.datasets = {patterns}")
    chunks: list[Chunk] = []
    pending: list[dict[str, str]] = []
    name, detector, monitor = camp.name, camp.detector, camp.monitor  # read once: a config lookup costs ~50 µs
    found = discover_scans(kind, list(map(str, datasets)), detector, monitor, camp.scans, camp.frame_band)
    for dataset, scans, unreadable, pending_file in found:
        experiment = kind.experiment(dataset) or name
        if pending_file:  # BLISS is creating the file right now: try again next run
            pending.append({"dataset": dataset, "scan": "*", "reason": f"master file being written: {unreadable}"})
            continue
        if unreadable is not None:  # damaged for good: a failure every run reports until it is fixed
            chunks.append(Chunk(id=chunk_id(dataset, "*", 0, 0, config_hash), dataset=dataset, experiment=experiment,
                                scan="*", detector=detector, monitor=monitor, start=0, stop=0,
                                nframes_scan=0, problem=f"unreadable dataset master file: {unreadable}"))
            continue
        for scan in scans:
            base = dict(dataset=dataset, experiment=experiment, scan=scan.scan, detector=detector,
                        monitor=monitor, energy_kev=scan.energy_kev, frame_band=camp.frame_band)
            if not scan.finished:
                pending.append({"dataset": dataset, "scan": scan.scan, "reason": "no end_time: still running"})
                continue
            if scan.problem or not scan.nframes:
                problem = scan.problem or "scan has no frames"
                chunks.append(Chunk(id=chunk_id(dataset, scan.scan, 0, 0, config_hash), start=0, stop=0,
                                    nframes_scan=0, problem=problem, **base))
                continue
            for start, stop in kind.partition(scan.nframes, per_chunk):
                chunks.append(Chunk(id=chunk_id(dataset, scan.scan, start, stop, config_hash), start=start,
                                    stop=stop, nframes_scan=scan.nframes, **base))
    if not chunks and not pending:
        raise ConfigError(f"campaign.scans = {camp.scans!r} matches no scan of the {len(datasets)} dataset(s) under "
                          f"campaign.raw_data = {camp.raw_data}")
    return Plan(campaign=camp.name, output=str(camp.output), config_hash=config_hash, config=config,
                chunks=chunks, pending_scans=pending, groups=[[i] for i in range(len(chunks))],
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


#: Dataset files per discovery process: fewer are read in this process (a pool costs more than it saves).
FILES_PER_PROCESS = 8


def _scans_of(kind: str, dataset: str, detector: str, monitor: str | None, selection: str,
              frame_band: str) -> tuple[list[ScanInfo], str | None, bool]:
    """The scans of one dataset file; or why it is unreadable (a message: it crosses processes) and
    whether that is because BLISS is still writing it (pending) rather than damaged."""
    try:
        return get_kind(kind).scans(dataset, detector, monitor, selection, frame_band), None, False
    except RawDataPending as exc:
        return [], str(exc), True
    except XReduceError as exc:
        return [], str(exc), False


def discover_scans(kind: Kind, datasets: Sequence[str], detector: str, monitor: str | None, selection: str,
                   frame_band: str = "all") -> Iterator[tuple[str, list[ScanInfo], str | None, bool]]:
    """(dataset, its scans, why it is unreadable or None, whether it is still being written) for each
    dataset file, in order (plain values: they cross processes). Reading the metadata of thousands of
    scans is bound by HDF5 calls (about 1 ms a scan): the files are read by a pool of processes
    (:func:`reduction.step.process_map`)."""
    found = process_map(_scans_of, [(kind.name, d, detector, monitor, selection, frame_band) for d in datasets],
                        per_process=FILES_PER_PROCESS)
    for dataset, (scans, unreadable, pending) in zip(datasets, found):
        yield dataset, scans, unreadable, pending


def write_plan(plan: Plan, output: Path) -> Path:
    """Write ``<output>/plan.json`` atomically (temp name, then rename) and return its path."""
    path = output / PLAN_NAME
    _write(path, plan.to_json())
    return path


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; PlanError naming the file when it cannot be (disk full...)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot write the plan {path}: {exc.strerror or exc}") from exc


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]


def snapshot_path(plan: Plan) -> Path:
    """Where the immutable snapshot of ``plan`` lies: ``<output>/plans/<hash12>.json``, named by its content."""
    return Path(plan.output) / PLANS_DIR / f"{_digest(plan.to_json())}.json"


def write_snapshot(plan: Plan) -> Path:
    """Write the snapshot of ``plan`` unless it exists (same name, same content), and return its path.

    This is the work order workers read: never rewritten, so that a plan written while a campaign
    runs (another ``plan`` or ``run``) cannot change it.
    """
    path = snapshot_path(plan)
    if not path.is_file():
        _write(path, plan.to_json())
    return path


def read_plan(path: Path) -> Plan:
    """Read a plan file written by :func:`write_plan` or :func:`write_snapshot`; PlanError naming
    the file if it is not one, or if a snapshot's content no longer matches the hash in its name."""
    path = Path(path)
    if path.is_dir():
        path = path / PLAN_NAME
    try:
        text = path.read_text(encoding="utf-8")
        if path.parent.name == PLANS_DIR and _digest(text) != path.stem:
            raise PlanError(f"plan snapshot {path} was altered: its content hash is {_digest(text)}, not the "
                            f"{path.stem} of its name; snapshots are written once and never edited: run "
                            "`xreduce run` (or `submit`) again to plan afresh")
        data = json.loads(text)
    except FileNotFoundError:
        raise PlanError(f"no plan at {path}: run `xreduce plan` (or `xreduce run`) for this campaign first") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"plan file {path} is unreadable: {exc}") from None
    if not isinstance(data, dict) or data.pop("format", None) != _FORMAT:
        raise PlanError(f"{path} is not an xreduce plan ({_FORMAT})")
    try:
        data["chunks"] = [Chunk(**c) for c in data["chunks"]]
        return Plan(**data)
    except TypeError as exc:
        raise PlanError(f"plan file {path} is damaged: {exc}") from None
