"""What every kind's merge shares: which chunk files cover a scan's frames, what has no result, and
the master file around the kind's own entries.

A kind's merge walks each entry's chunks with :func:`cover` (its own check of a chunk file decides
whether the file is merged), writes each entry's per-frame datasets with :func:`frame_dataset`
(HDF5 virtual datasets over the chunk files, or a copy) and its chunk table with
:func:`write_chunk_table`, all inside :func:`write_master_file`, which writes the file atomically
and returns the :class:`MergeReport`. Frames without a result read as NaN — never as zeros — and
are listed in the entry's ``chunks`` group and in the report.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import h5py
import numpy as np

from reduction.errors import OutputError
from reduction.io import MERGE_MODES

from . import h5write
from .files import atomic_output, reserve_space, written_as
from .nexus import PROGRAM, now, nx_group, open_readonly, relative_name, str_array, vds_source_name
from .pool import process_count, process_map

__all__ = ["MissingChunk", "GoodChunk", "EntryReport", "MergeReport", "cover", "identity_problem", "EntryChunks",
           "entry_chunks", "chunk_file_matches", "frame_dataset", "write_chunk_table", "write_master_file",
           "merged_chunk_ids"]

_COPY_BLOCK_BYTES = 64 << 20
_MASTER_SLACK, _VDS_BYTES_PER_CHUNK = 256 << 10, 16 << 10
#: Entries inspected per process of a merge (fewer: inspected here).
ENTRIES_PER_PROCESS = 200


@dataclass(frozen=True)
class MissingChunk:
    """Frames of an entry that have no result in the master (they read as NaN)."""

    frame_start: int
    frame_stop: int
    chunk_id: str | None
    path: str | None
    reason: str


@dataclass(frozen=True)
class GoodChunk:
    """A chunk file that passed its checks: it gives frames [start, stop) of its entry."""

    start: int
    stop: int
    path: Path
    chunk_id: str | None


@dataclass
class EntryReport:
    name: str
    nframes: int
    missing: list[MissingChunk] = field(default_factory=list)
    written: bool = True  # False when not a single chunk of the entry was usable

    @property
    def missing_frames(self) -> list[tuple[int, int]]:
        return [(m.frame_start, m.frame_stop) for m in self.missing]

    @property
    def n_missing_frames(self) -> int:
        return sum(m.frame_stop - m.frame_start for m in self.missing)


@dataclass
class MergeReport:
    """What a merge wrote and which entries / frames have no result (:class:`reduction.step.MergeReport`)."""

    path: Path
    mode: str
    entries: list[EntryReport]
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """True when every entry was written with all its frames."""
        return all(e.written and not e.missing for e in self.entries)

    @property
    def missing_frames(self) -> dict[str, list[tuple[int, int]]]:
        return {e.name: e.missing_frames for e in self.entries if e.missing}

    @property
    def missing_chunk_ids(self) -> list[str]:
        return [m.chunk_id for e in self.entries for m in e.missing if m.chunk_id]

    @property
    def skipped_entries(self) -> list[str]:
        return [e.name for e in self.entries if not e.written]

    def summary(self) -> str:
        n_missing = sum(e.n_missing_frames for e in self.entries)
        text = (f"{self.path}: {sum(e.written for e in self.entries)} of {len(self.entries)} entries "
                f"({self.mode}), {n_missing} frame(s) missing")
        for e in self.entries:
            for m in e.missing:
                text += f"\n  {e.name} frames [{m.frame_start}, {m.frame_stop}) {m.chunk_id or ''}: {m.reason}"
        return text


# -- which chunks give which frames ------------------------------------------------------------
def cover(name: str, nframes: int, chunks: Sequence[tuple[int, int, Path | str | None]], chunk_ids: Sequence[str],
          accept: Callable[[int, int, str | None, Path], str | None]) -> tuple[list[GoodChunk], list[MissingChunk]]:
    """Sort the chunks of entry ``name`` (a scan of ``nframes`` frames) into those to merge and the
    frames without a result: gaps, chunks without a file (failed or not done), and files that
    ``accept(start, stop, chunk_id, path)`` refuses by raising :class:`OutputError` (its message is
    the reason). ``accept`` returns the chunk id the file carries (used where ``chunk_ids`` is empty).

    Raises OutputError for an invalid entry name, chunk ids not parallel to the chunks, and chunks
    outside the scan or overlapping: a plan that is wrong, not a chunk that failed.
    """
    if not name or "/" in name or name in (".", ".."):
        raise OutputError(f"entry name {name!r} is not a valid HDF5 group name")
    if chunk_ids and len(chunk_ids) != len(chunks):
        raise OutputError(f"entry {name}: {len(chunk_ids)} chunk ids for {len(chunks)} chunks")
    ids: list[str | None] = list(chunk_ids) or [None] * len(chunks)
    good: list[GoodChunk] = []
    missing: list[MissingChunk] = []
    covered = 0
    for i in sorted(range(len(chunks)), key=lambda i: chunks[i][0]):
        start, stop, path = chunks[i]
        start, stop, chunk_id = int(start), int(stop), ids[i]
        if not (0 <= start < stop <= nframes):
            raise OutputError(f"entry {name}: chunk frames [{start}, {stop}) outside the scan's {nframes} frames")
        if start < covered:
            raise OutputError(f"entry {name}: chunk frames [{start}, {stop}) overlap the previous chunk")
        if start > covered:
            missing.append(MissingChunk(covered, start, None, None, "no chunk covers these frames"))
        covered = stop
        if path is None:
            missing.append(MissingChunk(start, stop, chunk_id, None, "chunk failed or not done"))
            continue
        try:
            carried = accept(start, stop, chunk_id, Path(path))
        except OutputError as exc:
            missing.append(MissingChunk(start, stop, chunk_id, str(path), str(exc)))
            continue
        good.append(GoodChunk(start, stop, Path(path), chunk_id or carried))
    if covered < nframes:
        missing.append(MissingChunk(covered, nframes, None, None, "no chunk covers these frames"))
    missing.sort(key=lambda m: m.frame_start)
    return good, missing


@dataclass
class EntryChunks:
    """An entry of a master and its chunk files, sorted by :func:`cover`: those to merge, the frames without."""

    entry: Any  # the kind's entry (e.g. reduction.step.MasterEntry)
    good: list[GoodChunk]
    missing: list[MissingChunk]


def entry_chunks(entry: Any, kind: str, read_header: Callable[[Path | str], dict[str, Any]]) -> EntryChunks:
    """Sort the chunk files of ``entry`` (a :class:`reduction.step.MasterEntry`) with :func:`cover`,
    accepting a file when its header (``read_header``: the kind's) says it is this chunk of this scan,
    reduced by ``kind`` (:func:`identity_problem`). For kinds whose chunks need no other check."""

    def accept(start: int, stop: int, chunk_id: str | None, path: Path) -> str | None:
        meta = read_header(path)
        problem = identity_problem(meta, kind=kind, dataset=entry.dataset, scan=entry.scan, start=start, stop=stop,
                                   chunk_id=chunk_id)
        if problem:
            raise OutputError(problem)
        return meta.get("chunk_id")

    return EntryChunks(entry, *cover(entry.name, entry.nframes, entry.chunks, entry.chunk_ids, accept))


def _same_path(a: str, b: str) -> bool:
    """The same file, however spelled (a chunk reduced through a symbolic link to RAW_DATA is the same chunk)."""
    return os.path.realpath(a) == os.path.realpath(b)


def identity_problem(meta: dict[str, Any], *, kind: str, dataset: str, scan: str, start: int, stop: int,
                     chunk_id: str | None) -> str | None:
    """Why a chunk file's root attributes (``meta``) say it is not frames [start, stop) of this scan
    reduced by this kind (or not chunk ``chunk_id``), or None when they match."""
    expected: dict[str, Any] = {"kind": kind, "scan": str(scan), "frame_start": start, "frame_stop": stop}
    if chunk_id:
        expected["chunk_id"] = chunk_id
    for key, value in expected.items():
        if meta.get(key) != value:
            return f"chunk file has {key}={meta.get(key)!r}, expected {value!r}"
    if dataset and meta.get("dataset") and not _same_path(str(meta["dataset"]), str(dataset)):
        return f"chunk file is for dataset {meta['dataset']!r}, expected {dataset!r}"
    return None


def chunk_file_matches(path: Path | str, chunk_id: str, config_hash: str,
                       read_header: Callable[[Path | str], dict[str, Any]]) -> bool:
    """True when ``path`` is a complete chunk file (as the kind's ``read_header`` checks it) whose
    root attributes name ``chunk_id`` and ``config_hash``: a kind's ``is_done``. False for a
    missing, unreadable, truncated or foreign file; never raises."""
    try:
        if not os.path.isfile(path):
            return False
        meta = read_header(path)
        return meta.get("chunk_id") == chunk_id and meta.get("config_hash") == config_hash
    except Exception:  # noqa: BLE001 - a damaged file of any kind is simply "not done"
        return False


# -- writing -----------------------------------------------------------------------------------
def frame_dataset(group: h5py.Group, name: str, nframes: int, good: Sequence[GoodChunk], source: str,
                  frame_shape: tuple[int, ...], mode: str, master_dir: Path) -> h5py.Dataset:
    """A per-frame float64 dataset [nframes, *frame_shape] from dataset ``source`` of the good chunk
    files: a virtual dataset over them (relative paths) or a copy; NaN where no chunk gives a frame."""
    shape = (nframes, *frame_shape)
    if mode == "vds":
        return h5py.Dataset(h5write.put_virtual(group, name, shape, np.float64, [
            (chunk.start, chunk.stop, vds_source_name(chunk.path, master_dir), source) for chunk in good], np.nan))
    frame_bytes = 8 * int(np.prod(frame_shape, dtype=np.int64))
    chunk_frames = int(max(1, min(nframes, (1 << 20) // max(frame_bytes, 1))))
    ds = group.create_dataset(name, shape=shape, dtype=np.float64, fillvalue=np.nan,
                              chunks=(chunk_frames, *frame_shape))
    block = int(max(1, _COPY_BLOCK_BYTES // max(frame_bytes, 1)))
    for chunk in good:
        with open_readonly(chunk.path) as f:
            src = f[source]
            for b0 in range(0, chunk.stop - chunk.start, block):
                b1 = min(b0 + block, chunk.stop - chunk.start)
                ds[chunk.start + b0:chunk.start + b1] = src[b0:b1]
    return ds


def write_chunk_table(entry: h5py.Group, good: Sequence[GoodChunk], missing: Sequence[MissingChunk], mode: str,
                      master_dir: Path) -> None:
    """``<entry>/chunks`` (NXcollection): every chunk with its frames, file and status, and the
    frames without a result."""
    rows = [(g.start, g.stop, g.chunk_id or "", relative_name(g.path, master_dir), "merged") for g in good]
    rows += [(m.frame_start, m.frame_stop, m.chunk_id or "", relative_name(m.path, master_dir) if m.path else "",
              f"missing: {m.reason}") for m in missing]
    rows.sort()
    table = nx_group(entry, "chunks", "NXcollection")
    h5write.set_attrs(table, {"mode": mode})
    h5write.put(table, "frames", np.array([[r[0], r[1]] for r in rows], dtype=np.int64).reshape(-1, 2))
    h5write.put(table, "chunk_id", str_array([r[2] for r in rows]))
    h5write.put(table, "file", str_array([r[3] for r in rows]))
    h5write.put(table, "status", str_array([r[4] for r in rows]))
    h5write.put(table, "missing_frames", np.array([[m.frame_start, m.frame_stop] for m in missing],
                                                  dtype=np.int64).reshape(-1, 2))
    h5write.put(table, "missing_chunk_ids", str_array([m.chunk_id for m in missing if m.chunk_id]))
    h5write.put(table, "n_missing_frames", np.int64(sum(m.frame_stop - m.frame_start for m in missing)))


def merged_chunk_ids(path: Path | str) -> set[str]:
    """The ids of the chunks a master file merged (status "merged" in each entry's chunk table, as
    :func:`write_chunk_table` writes it): what the master holds, to tell whether it is up to date.
    Raises OutputError naming the file when it cannot be read."""
    ids: set[str] = set()
    try:
        with open_readonly(path) as f:
            for entry in f.values():
                table = entry.get("chunks") if isinstance(entry, h5py.Group) else None
                if table is None or "chunk_id" not in table or "status" not in table:
                    continue
                for chunk_id, status in zip(table["chunk_id"].asstr()[()], table["status"].asstr()[()]):
                    if status == "merged" and chunk_id:
                        ids.add(str(chunk_id))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise OutputError(f"master file {path} cannot be read: {exc}") from exc
    return ids


class _Entry(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def nframes(self) -> int: ...


class _Inspected(Protocol):
    good: list[GoodChunk]
    missing: list[MissingChunk]


E = TypeVar("E", bound=_Entry)
P = TypeVar("P", bound=_Inspected)


def _master_bytes(mode: str, inspected: Sequence[_Inspected]) -> int:
    """A generous size of the master file, reserved before HDF5 writes any of it (a full disk then
    fails cleanly): the chunk files' data in copy mode, else the virtual datasets' mappings."""
    good = [g for p in inspected for g in p.good]
    if mode == "copy":
        return _MASTER_SLACK + sum(g.path.stat().st_size for g in good)
    return _MASTER_SLACK + _VDS_BYTES_PER_CHUNK * len(good)


def write_master_file(path: Path | str, entries: Sequence[E], *, mode: str, inspect: Callable[[E], P],
                      write_entry: Callable[[h5py.File, P, str, Path], None]) -> MergeReport:
    """Write the master file ``path``: an NXroot with one entry per item of ``entries`` that has a
    good chunk, in the order given.

    ``inspect(entry)`` sorts an entry's chunks (with :func:`cover`); ``write_entry(file, inspected,
    mode, master_dir)`` writes it. With many entries of virtual datasets and several CPUs, processes
    do both for shares of the entries (:func:`~reduction.io.pool.process_map`: both must pickle) and
    the entries are copied into the master in order. Written under a temporary name and renamed into place
    (:func:`~reduction.io.files.atomic_output`), so an existing master is replaced only by a complete
    new one. Raises :class:`OutputError` for an unknown mode, duplicate entry names, when no entry
    at all can be written, or when the file cannot be written.
    """
    started = time.perf_counter()
    if mode not in MERGE_MODES:
        raise OutputError(f"merge mode {mode!r} is not one of {', '.join(MERGE_MODES)}")
    path = Path(path)
    duplicates = sorted(n for n, times in Counter(e.name for e in entries).items() if times > 1)
    if duplicates:
        raise OutputError(f"{path}: duplicate entry names {', '.join(duplicates)}")
    master_dir = path.parent
    master_dir.mkdir(parents=True, exist_ok=True)
    processes = process_count(len(entries), ENTRIES_PER_PROCESS) if mode == "vds" else 1
    with written_as(path, "master file"), atomic_output(path) as tmp:
        if processes < 2:
            outcome = _inspect_and_write(tmp, entries, inspect, write_entry, mode, master_dir, master=path)
        else:
            outcome = _write_in_parts(tmp, path, entries, processes, inspect, write_entry, mode)
    reports = [EntryReport(e.name, e.nframes, missing, written=written)
               for e, (written, missing) in zip(entries, outcome)]
    return MergeReport(path, mode, reports, time.perf_counter() - started)


def _root(f: h5py.File, default: str, name: str) -> None:
    from reduction import __version__

    f.attrs.update({"NX_class": "NXroot", "default": default, "file_name": name, "file_time": now(),
                    "creator": f"{PROGRAM} {__version__}", "HDF5_Version": h5py.version.hdf5_version,
                    "h5py_version": h5py.version.version})


def _nothing_to_merge(path: Path, entries: Sequence[Any], outcome: list[tuple[bool, list[MissingChunk]]]) -> None:
    if not any(written for written, _ in outcome):
        raise OutputError(f"{path}: none of the {len(entries)} entries has a finished chunk; nothing to merge")


def _inspect_and_write(file: Path, entries: Sequence[E], inspect: Callable[[E], P],
                       write_entry: Callable[[h5py.File, P, str, Path], None], mode: str, master_dir: Path, *,
                       master: Path | None = None) -> list[tuple[bool, list[MissingChunk]]]:
    """Inspect ``entries`` and write those with a good chunk into the new HDF5 file ``file``: the
    temporary name of ``master``, or a part of a master; per entry: (written, missing frames)."""
    inspected = [inspect(e) for e in entries]
    outcome = [(bool(p.good), list(p.missing)) for p in inspected]
    if master is not None:
        _nothing_to_merge(master, entries, outcome)
    with h5py.File(file, "w", track_order=True) as f:  # entries in the order given
        reserve_space(file, _master_bytes(mode, inspected))  # a full disk fails here, cleanly, not in HDF5
        if master is not None:
            _root(f, next(e.name for e, p in zip(entries, inspected) if p.good), master.name)
        for plan in inspected:
            if plan.good:
                write_entry(f, plan, mode, master_dir)
    return outcome


def _write_in_parts(tmp: Path, master: Path, entries: Sequence[E], processes: int, inspect: Callable[[E], P],
                    write_entry: Callable[[h5py.File, P, str, Path], None],
                    mode: str) -> list[tuple[bool, list[MissingChunk]]]:
    """Many entries, several CPUs: each process inspects and writes a share of the entries into a
    part file (reading chunk headers and creating HDF5 objects is a merge's work: ~9 ms an entry),
    then HDF5 copies the entries from the parts into the master in order (~1 ms an entry). A
    virtual dataset names its sources relative to the master's folder, where the parts are too."""
    size = -(-len(entries) // processes)
    shares = [entries[k:k + size] for k in range(0, len(entries), size)]
    with tempfile.TemporaryDirectory(prefix=f"{tmp.name}.parts-", dir=master.parent) as folder:
        parts = [Path(folder) / f"part{k}.h5" for k in range(len(shares))]
        done = process_map(_inspect_and_write, [(part, share, inspect, write_entry, mode, master.parent)
                                                for part, share in zip(parts, shares)], per_process=1)
        outcome = [o for part_outcome in done for o in part_outcome]
        _nothing_to_merge(master, entries, outcome)
        with h5py.File(tmp, "w", track_order=True) as f:  # entries in the order given
            reserve_space(tmp, sum(part.stat().st_size for part in parts) + _MASTER_SLACK)
            _root(f, next(e.name for e, (written, _) in zip(entries, outcome) if written), master.name)
            for part, share, part_outcome in zip(parts, shares, done):
                with open_readonly(part) as source:
                    for entry, (written, _) in zip(share, part_outcome):
                        if written:
                            h5write.copy(source, entry.name, f)
    return outcome
