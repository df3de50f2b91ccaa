"""The contract between orchestration (``hpc``) and science: a *reduction kind*, and the registry of kinds.

A kind is everything ``hpc`` needs to run one kind of reduction over a campaign without knowing its
physics: its config schema (``reduction=<kind>``; the schema's fields say which keys name input
files, which do not change the numbers, and how each value is checked), how a scan is cut into
chunks, a step that reduces a chunk into a chunk file, whether a chunk file is done, how the chunk
files of an experiment merge into a master file, a preview picture of it, and a known-answer
selftest. Raw data are found through the kind too (BLISS layout by default, see :class:`Kind`).

Kinds are found by name in a registry: the kinds shipped with xreduce, plus those that installed
packages declare in the ``xreduce.kinds`` entry-point group (``name = "package.module:OBJECT"``),
so a third-party kind is one package and one registration::

    [project.entry-points."xreduce.kinds"]
    saxs = "my_saxs.kind:SAXS"

``hpc`` imports from ``reduction`` only this module, :mod:`reduction.errors` and the demo writer;
this module also hands on the helpers both sides use for the files and programs they share:
:func:`atomic_output` (write, flush, rename into place), :func:`remove_temporaries` (what writers that
died left behind), :func:`call` (run a program, errors named), :func:`process_map` (metadata work over
thousands of files, in a pool of processes) and :func:`parse_frame_band`, the one reading of
``campaign.frame_band``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from .errors import XReduceError
from .io import MERGE_MODES
from .io.bands import parse_frame_band
from .io.files import atomic_output, remove_temporaries
from .io.pool import process_map
from .io.process import call

__all__ = ["MISSING", "MERGE_MODES", "EXPORT_FORMATS", "EXPORT_FRAMES", "master_kind",
           "KeyRule", "key", "rules", "ReductionConfig", "Step", "Kind", "ScanInfo",
           "MasterEntry", "MergeReport", "StageRate", "BenchReport", "SelfCheck", "SelfTest", "OK", "UNAVAILABLE",
           "FAILED", "ENTRY_POINT_GROUP", "kinds", "reload_kinds", "get_kind", "broken_kinds", "atomic_output",
           "call", "process_map", "UnknownKind", "remove_temporaries", "Problem", "parse_frame_band"]


#: ASCII formats a kind may export at merge time (``merge.export``), and which frames (``merge.export_frames``).
EXPORT_FORMATS = ("xye", "dat")
EXPORT_FRAMES = ("sum", "each")
#: OmegaConf's marker of a mandatory value (``???`` in YAML).
MISSING: Any = "???"
#: Entry-point group where installed packages register reduction kinds.
ENTRY_POINT_GROUP = "xreduce.kinds"
#: The kinds shipped with xreduce: name → "module:object".
_BUILTIN = {"azint1d": "reduction.azint.kind:AZINT1D", "azint2d": "reduction.azint.kind:AZINT2D",
            "xpcs": "reduction.xpcs.kind:XPCS"}
_RULE = "xreduce"


class UnknownKind(XReduceError):
    """``reduction.kind`` names no registered kind, or a kind whose package cannot be loaded."""


# -- config schema -------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyRule:
    """How one key of a kind's config is checked and what it means to ``hpc`` (a schema field's metadata).

    ``input_file``: an existing file (``file.h5::/dataset`` allowed) whose *content* enters the config
    hash and whose folder is bound into containers; ``hashed=False``: the key does not change the
    numbers (an engine choice), so changing it does not reprocess; ``example`` is shown when a
    mandatory value is missing.
    """

    choices: tuple[Any, ...] | None = None
    positive: bool = False
    pair: bool = False
    input_file: bool = False
    between: tuple[float, float] | None = None
    pattern: str | None = None
    hint: str = ""
    hashed: bool = True
    example: str = ""


def key(default: Any = MISSING, **rule: Any) -> Any:
    """A schema field with its :class:`KeyRule`: ``npt: int = key(1000, positive=True)``."""
    return field(default=default, metadata={_RULE: KeyRule(**rule)})


def rules(schema: type) -> dict[str, KeyRule]:
    """Every field of a schema dataclass with its rule (the default rule where none was given)."""
    return {f.name: f.metadata.get(_RULE, KeyRule()) for f in dataclasses.fields(schema)}


@dataclass
class ReductionConfig:
    """``reduction``: the key every kind has. A kind's schema extends it, with ``kind`` defaulting to its name."""

    kind: str = MISSING


# -- what a kind gives hpc -------------------------------------------------------------------------
@runtime_checkable
class Step(Protocol):
    """A kind's reducer, built once per worker process; turns chunks into chunk files."""

    #: what reduced the last chunk (e.g. "opencl on 0:0 'NVIDIA H100'"), "" when nothing worth saying
    engine_used: str
    #: seconds per stage of the last chunk (read, wait, reduce, write: reduction.io.blocks.StageTimes)
    stages: dict[str, float]

    def __call__(self, chunk: Mapping[str, Any], out: Path, *, config_hash: str, config_json: str) -> int:
        """Reduce ``chunk`` (a plan entry: id, dataset, scan, detector, monitor, frame_band, start, stop, energy_kev;
        never one of a scan planning found unreadable: those fail before) into the chunk file ``out``,
        renamed into place only when complete (:func:`atomic_output`); return the number of frames
        reduced. Raise on failure: the caller records the error."""
        ...


@dataclass(frozen=True)
class ScanInfo:
    """What planning needs to know about one scan, from metadata only.

    ``problem`` says why the scan cannot be reduced (None: it can); an unfinished scan (no end time)
    is pending, not a problem.
    """

    scan: str
    finished: bool
    nframes: int | None
    energy_kev: float | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Problem:
    """A mistake found before any work, that would fail (or empty) every chunk: the config key at
    fault, as the kind knows it (``"detector"``, ``"radial_range"``), and what is wrong, in one line."""

    key: str
    message: str


@dataclass(frozen=True)
class MasterEntry:
    """One scan of an experiment as the merge sees it: its frames and the chunk files holding them."""

    name: str  # the NXentry name, e.g. "sample_0001_1.1"
    dataset: str  # raw dataset master file
    scan: str
    nframes: int  # frames of the whole scan
    chunks: list[tuple[int, int, Path | None]]  # (frame_start, frame_stop, done chunk file or None)
    chunk_ids: list[str]  # parallel to chunks
    beamline: str = "unknown"


class MergeReport(Protocol):
    """What a merge says back: complete or not, and a summary naming what is missing."""

    @property
    def complete(self) -> bool: ...

    def summary(self) -> str: ...


OK, UNAVAILABLE, FAILED = "ok", "unavailable", "failed"


@dataclass
class SelfCheck:
    """One capability and how it fared: ``ok``, ``unavailable`` (an optional part is missing here) or
    ``failed``; ``part`` names what ``selftest --require PART`` makes mandatory (e.g. "opencl")."""

    name: str
    status: str
    detail: str
    part: str | None = None


@dataclass
class SelfTest:
    """A kind's selftest: its checks, and facts worth printing (e.g. ``{"OpenCL": [devices]}``)."""

    checks: list[SelfCheck]
    facts: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StageRate:
    """One stage of a kind's benchmark (``xreduce bench``): ``frames`` in ``seconds``."""

    stage: str  # e.g. "read+decompress", "kernel", "end to end"
    frames: int
    seconds: float
    detail: str = ""  # how it was measured, in a few words

    @property
    def rate(self) -> float:
        """Frames per second."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class BenchReport:
    """A kind's stage rates on real frames, and the rate its stages allow together (the bound)."""

    rates: list[StageRate]
    bound: float  # frames/s
    bound_rule: str  # how the bound follows from the rates, and why
    reached: float  # the end-to-end rate as a fraction of the bound
    engine: str = ""
    notes: list[str] = field(default_factory=list)


class Kind:
    """A reduction kind: subclass it, set ``name`` and ``schema``, implement the abstract methods.

    Raw data are BLISS dataset master files by default (:mod:`reduction.io.bliss`); a kind reading
    another layout overrides :meth:`datasets`, :meth:`experiment`, :meth:`scans`,
    :meth:`check_scans` and :meth:`default_output`. ``whole_scan`` kinds (those that need every
    frame of a scan at once, e.g. a correlation) get one chunk per scan.
    """

    name: ClassVar[str] = ""
    schema: ClassVar[type] = ReductionConfig
    whole_scan: ClassVar[bool] = False
    #: the NeXus application definitions of the entries its merge writes (how a master file's kind is known)
    definitions: ClassVar[tuple[str, ...]] = ()

    # -- partitioning
    def partition(self, nframes: int, frames_per_chunk: int) -> list[tuple[int, int]]:
        """Frame ranges [start, stop) of a scan's chunks."""
        if self.whole_scan:
            return [(0, nframes)]
        return [(start, min(start + frames_per_chunk, nframes)) for start in range(0, nframes, frames_per_chunk)]

    # -- reducing and merging (the kind's own)
    def open(self, reduction: Mapping[str, Any]) -> Step:
        """Build the step from the resolved ``reduction`` config (once per process): read the input
        files, build what every chunk shares. A bad input file raises here, naming it."""
        raise NotImplementedError

    def is_done(self, path: Path, chunk_id: str, config_hash: str) -> bool:
        """True when ``path`` is a complete chunk file made for ``chunk_id`` with ``config_hash``;
        False for a missing, truncated or foreign file. Never raises."""
        raise NotImplementedError

    def looks_done(self, path: Path, chunk_id: str, config_hash: str) -> bool:
        """A cheap :meth:`is_done` for ``xreduce status`` and the merge, which look at thousands of chunk
        files at once: a kind whose chunk files are renamed into place when complete, under a name made
        from ``chunk_id`` (which encodes ``config_hash``), may trust the name and check the file's
        integrity only (e.g. :func:`reduction.io.nexus.hdf5_complete`). ``xreduce run`` skips a chunk
        only on :meth:`is_done`, and a merge checks each file it merges. Default: :meth:`is_done`."""
        return self.is_done(path, chunk_id, config_hash)

    def merge(self, master: Path, entries: Sequence[MasterEntry], *, mode: str, config_json: str) -> MergeReport:
        """Write one master file from the chunk files of an experiment (atomically). ``mode``:
        ``vds`` (virtual datasets over the chunk files) or ``copy`` (self-contained); ``config_json``:
        the campaign's resolved config as JSON, for the provenance."""
        raise NotImplementedError

    def preview(self, master: Path, png: Path) -> None:
        """A PNG picture of a master file, for a person to glance at."""
        raise NotImplementedError

    def bench(self, step: Step, chunk: Mapping[str, Any], workdir: Path) -> BenchReport:
        """Measure the stages of ``step`` on the frames of ``chunk`` (a plan entry, as a step gets it):
        each stage alone and the whole step end to end (its chunk file written under ``workdir``)."""
        raise XReduceError(f"reduction kind {self.name!r} has no benchmark (`xreduce bench`)")

    def warm_up(self) -> None:
        """Import what :meth:`merge` and :meth:`preview` need. Called in a background thread while the
        chunks of a run are reduced, so that a run does not pay those imports (a plotting library, for
        instance) after its last frame. Default: nothing."""

    def merged_chunks(self, master: Path) -> set[str]:
        """The ids of the chunks the master file ``master`` holds (``status`` compares them with the
        finished chunks to tell a stale master). Raises XReduceError naming the file when it cannot be
        read. Default: the ids in the master's chunk tables, as every kind whose merge writes them with
        :func:`reduction.io.merge.write_chunk_table` has them; a kind without them raises
        NotImplementedError, and status then checks only the file's age."""
        from .io.merge import merged_chunk_ids

        return merged_chunk_ids(master)

    # -- working on master files (results, never the raw data)
    def export(self, master: Path, folder: Path, formats: Sequence[str], frames: str = "sum") -> list[Path]:
        """Write the master's results as ASCII files (``formats`` from :data:`EXPORT_FORMATS`) in
        ``folder``, the sum of each scan's frames or every frame (``frames``: :data:`EXPORT_FRAMES`),
        each file atomically; returns the files. Default: not supported by this kind."""
        raise XReduceError(f"merge.export: ASCII export is not supported for reduction kind {self.name!r}")

    def rebin(self, master: Path, out: Path, *, factor: int, azimuthal_factor: int = 1,
              entries: Sequence[str] | None = None, overwrite: bool = False) -> Path:
        """Write ``out``, a new master with ``factor`` adjacent (radial) bins merged, from the results
        stored in ``master``; returns ``out``. Default: not supported by this kind."""
        raise XReduceError(f"xreduce rebin is not supported for reduction kind {self.name!r}")

    def sum_frames(self, master: Path, out: Path, *, entries: Sequence[str] | None = None, frames: str | None = None,
                   mean: bool = False, combine: str | None = None, overwrite: bool = False) -> Path:
        """Write ``out``, a new master holding the sum (or ``mean``) of frames ``frames`` ("A:B") of each
        entry, or with ``combine`` of all the entries together, from the results stored in ``master``;
        returns ``out``. Default: not supported by this kind."""
        raise XReduceError(f"xreduce sum is not supported for reduction kind {self.name!r}")

    def selftest(self, device: str = "auto", require: Sequence[str] = ()) -> SelfTest:
        """Known-answer checks that this kind works on this machine. ``device``: the engine device to
        test; ``require``: parts the user needs (a check for each, even where it cannot run here)."""
        raise NotImplementedError

    # -- checks before any work
    def check(self, reduction: Mapping[str, Any], scan: ScanInfo) -> list[Problem]:
        """Mistakes in the resolved ``reduction`` config that would fail or empty every chunk, found
        up front (``scan``: the campaign's first finished scan, for what the config leaves to the raw
        data, e.g. the energy). Keys are the ``reduction`` group's. Default: none."""
        return []

    def check_names(self, dataset: str, scans: Sequence[str], detector: str, monitor: str | None) -> list[Problem]:
        """The detector and monitor names the campaign reads, absent from every one of ``scans`` of
        ``dataset`` (metadata only): keys ``"detector"`` / ``"monitor"``, with what is there instead."""
        from .io import bliss

        names = {"detector": detector, "monitor": monitor}
        return [Problem(k, m) for k, m in bliss.missing_names(dataset, scans, names)]

    # -- raw data (BLISS by default)
    def datasets(self, raw_data: str, patterns: Sequence[str] | None) -> list[Path]:
        """The dataset files of a campaign, sorted."""
        from .io import bliss

        return bliss.find_datasets(raw_data, patterns)

    def experiment(self, dataset: str) -> str | None:
        """The experiment ("proposal/beamline/session") a dataset belongs to, None if unknown."""
        from .io import bliss

        return bliss.experiment_of(dataset)

    def scans(self, dataset: str, detector: str, monitor: str | None, selection: str,
              frame_band: int | str = "all") -> list[ScanInfo]:
        """The selected scans of a dataset, from metadata, with their frames counted as ``frame_band``
        says (``campaign.frame_band``: rank-4 detector datasets, :mod:`reduction.io.bands`). Raises
        XReduceError when the file cannot be read."""
        from .io import bliss

        return [ScanInfo(s.scan, s.finished, s.nframes, s.energy_kev, s.problem)
                for s in bliss.read_scans(dataset, detector, monitor, selection, frame_band)]

    def check_scans(self, selection: str) -> None:
        """Raise ValueError naming the problem when ``selection`` is not a valid scan selection."""
        from .io import bliss

        bliss.parse_scan_selection(selection)

    def default_output(self, raw_data: str, campaign: str) -> Path:
        """Where results go unless the user says: ``PROCESSED_DATA/xreduce/<campaign>`` beside
        RAW_DATA, else ``<raw_data>/../xreduce_output/<campaign>``."""
        from .io import bliss

        try:
            return bliss.processed_data_dir(raw_data) / "xreduce" / campaign
        except XReduceError:
            return Path(os.path.abspath(raw_data)).parent / "xreduce_output" / campaign


# -- registry --------------------------------------------------------------------------------------
_KINDS: dict[str, Kind] | None = None
_BROKEN: dict[str, str] = {}


def _load(name: str, target: str) -> Kind:
    import importlib

    module, _, attr = target.partition(":")
    kind = getattr(importlib.import_module(module), attr)
    if not isinstance(kind, Kind) or kind.name != name:
        raise TypeError(f"{target} is not a reduction.step.Kind named {name!r}")
    return kind


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def kinds() -> dict[str, Kind]:
    """Every usable kind by name: the shipped ones, then those of installed packages (a package
    cannot replace a shipped kind). Kinds that fail to load are left out and listed by
    :func:`broken_kinds` — never silently: asking for one raises with the reason."""
    global _KINDS
    if _KINDS is None:
        found: dict[str, Kind] = {}
        for name, target in {**_entry_points(), **_BUILTIN}.items():
            try:
                found[name] = _load(name, target)
            except Exception as exc:  # a broken plugin must not take the other kinds down
                _BROKEN[name] = f"{target}: {type(exc).__name__}: {exc}"
        _KINDS = dict(sorted(found.items()))
    return _KINDS


def reload_kinds() -> dict[str, Kind]:
    """Find the kinds again, for packages installed while this process runs (tests, a plugin
    installed from a notebook). A process started after the installation never needs it. ``hpc``
    registers the kinds' config schemas with Hydra when it is imported: a kind found only here is
    not yet a ``reduction=<kind>`` choice of this process."""
    import importlib

    global _KINDS
    importlib.invalidate_caches()
    _KINDS = None
    _BROKEN.clear()
    return kinds()


def broken_kinds() -> dict[str, str]:
    """Registered kinds that could not be loaded, with the reason."""
    kinds()
    return dict(_BROKEN)


def master_kind(path: Path) -> Kind:
    """The kind whose merge writes the entries of the master file ``path`` (by their NeXus
    ``definition``, :attr:`Kind.definitions`); InputError naming the file otherwise."""
    import h5py

    from .errors import InputError
    from .io.nexus import attr_value, open_readonly

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        with open_readonly(path) as f:
            found = {str(attr_value(g["definition"][()])) for g in f.values()
                     if isinstance(g, h5py.Group) and "definition" in g}
    except OSError as exc:
        raise InputError(f"{path} is not an HDF5 file: {exc}") from None
    for kind in kinds().values():
        if found & set(kind.definitions):
            return kind
    raise InputError(f"{path} is not a master file of xreduce: no entry with a definition any kind writes "
                     f"(found {', '.join(sorted(found)) or 'none'})")


def get_kind(name: str) -> Kind:
    """The kind registered as ``name``; :class:`UnknownKind` naming the known ones otherwise."""
    known = kinds()
    if name in known:
        return known[name]
    if name in _BROKEN:
        raise UnknownKind(f"reduction kind {name!r} is registered but cannot be loaded: {_BROKEN[name]}")
    raise UnknownKind(f"no reduction kind {name!r}; known: {', '.join(known)}")
