"""Config value checks: what a type annotation cannot say (ranges, choices, paths, Slurm times and sizes).

:data:`_CHECKS` lists them as (key, check), one line each; a check runs when its key exists in the
chosen schema, so one table serves every backend. The reduction kind's keys are checked by the
:class:`~reduction.step.KeyRule` its schema gives each field (choices, positive, pair, input file,
range, pattern), with the same check functions. A check raises
:class:`hpc.errors.ConfigError` naming the key and the value, or returns the normalised value (paths
made absolute) to store in its place. Paths are checked to exist only with ``check_paths`` (a plan
read on a machine without the data skips it). :func:`_check_values` also fills in the default
``campaign.output``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from reduction.errors import XReduceError
from reduction.step import EXPORT_FORMATS, EXPORT_FRAMES, get_kind, parse_frame_band, rules

from .config_errors import _did_you_mean, _example
from .config_schema import MERGE_MODES
from .errors import ConfigError
from .slurm_units import mebibytes, minutes


def _check_missing(cfg: DictConfig) -> None:
    missing = [f"{group!s}.{key}" for group in cfg for key in cfg[group]
               if OmegaConf.is_missing(cfg[group], key)]
    if missing:
        key = missing[0]
        others = f" (also not set: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ConfigError(f"{key} is mandatory and not set{others}: set it in your campaign file or on the "
                          f"command line, e.g. {_example(key, cfg.reduction.get('kind'))}")


def _check_values(cfg: DictConfig, check_paths: bool) -> None:
    """Apply each check of :data:`_CHECKS` and of the reduction kind's key rules whose key is
    present, storing its normalised value; fill in the default output folder."""
    kind = get_kind(cfg.reduction.kind)
    for dotted, check in [*_CHECKS, *_rule_checks(kind.schema)]:
        group, key = dotted.split(".")
        if key in cfg[group]:
            value = check(dotted, cfg[group][key], check_paths)
            if value is not _UNCHANGED:
                cfg[group][key] = value
    try:
        kind.check_scans(cfg.campaign.scans)
    except ValueError as err:
        raise ConfigError(f"campaign.scans: {err}") from None
    if cfg.campaign.output is None:
        cfg.campaign.output = str(kind.default_output(cfg.campaign.raw_data, cfg.campaign.name))


def _rule_checks(schema: type) -> list[tuple[str, _Check]]:
    """The checks a reduction kind's schema asks for, through the :class:`~reduction.step.KeyRule`
    of each field: one vocabulary for every kind, applied here."""
    checks: list[tuple[str, _Check]] = []
    for name, rule in rules(schema).items():
        key = f"reduction.{name}"
        if rule.input_file:
            checks.append((key, _file))
        if rule.positive:
            checks.append((key, _positive))
        if rule.pair:
            checks.append((key, _pair))
        if rule.choices is not None:
            checks.append((key, _choice(rule.choices)))
        if rule.between is not None:
            checks.append((key, _between(*rule.between, rule.hint)))
        if rule.pattern is not None:
            checks.append((key, _pattern(rule.pattern, rule.hint)))
    return checks


_UNCHANGED = object()
_Check = Callable[[str, Any, bool], Any]


def _positive(key: str, value: int, check_paths: bool) -> Any:
    if value <= 0:
        raise ConfigError(f"{key}={value} must be a positive integer (> 0)")
    return _UNCHANGED


def _choice(options: tuple[Any, ...]) -> _Check:
    def check(key: str, value: Any, check_paths: bool) -> Any:
        if value not in options:
            shown = ", ".join("null" if o is None else str(o) for o in options)
            raise ConfigError(f"{key}={value!r} is not allowed{_did_you_mean(str(value), options)}; "
                              f"allowed: {shown}")
        return _UNCHANGED
    return check


def _choices(options: tuple[Any, ...]) -> _Check:
    """A list whose every item is one of ``options``."""
    one = _choice(options)

    def check(key: str, value: Any, check_paths: bool) -> Any:
        for item in value or []:
            one(key, item, check_paths)
        return _UNCHANGED
    return check


def _pattern(regex: str, hint: str) -> _Check:
    def check(key: str, value: Any, check_paths: bool) -> Any:
        if not re.fullmatch(regex, str(value)):
            raise ConfigError(f"{key}={value!r} {hint or f'must match {regex}'}")
        return _UNCHANGED
    return check


def _between(low: float, high: float, hint: str) -> _Check:
    def check(key: str, value: float | None, check_paths: bool) -> Any:
        if value is not None and not low <= value <= high:
            raise ConfigError(f"{key}={value} must be between {low:g} and {high:g}{f' ({hint})' if hint else ''}")
        return _UNCHANGED
    return check


def _pair(key: str, value: Any, check_paths: bool) -> Any:
    if value is None:
        return _UNCHANGED
    if len(value) != 2 or not value[0] < value[1] or not all(map(_finite, value)):
        raise ConfigError(f"{key}={list(value)} must be a pair [min, max] of finite numbers with min < max")
    return _UNCHANGED


def _finite(x: float) -> bool:
    return x - x == 0


def _name(key: str, value: str, check_paths: bool) -> Any:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", value):
        raise ConfigError(f"{key}={value!r} must be a file-name-safe label (letters, digits, '.', '_', '+', '-'; "
                          f"no '/' or spaces): it names the output folder")
    return _UNCHANGED


def _text(key: str, value: str | None, check_paths: bool) -> Any:
    if value is not None and not value.strip():
        raise ConfigError(f"{key} is empty: give a name under /<scan>/measurement/ (or null where allowed)")
    return _UNCHANGED


def _globs(key: str, value: list[str] | None, check_paths: bool) -> Any:
    if value is None:
        return _UNCHANGED
    if not value:
        raise ConfigError(f"{key} is empty: give globs relative to campaign.raw_data, e.g. ['sample*/*/*.h5'], "
                          f"or null for every dataset master file")
    for pattern in value:
        if not isinstance(pattern, str) or not pattern or os.path.isabs(pattern) or ".." in Path(pattern).parts:
            raise ConfigError(f"{key}: {pattern!r} must be a glob relative to campaign.raw_data, "
                              f"e.g. 'sample*/**/*.h5'")
    return _UNCHANGED




def _frame_band(key: str, value: Any, check_paths: bool) -> Any:
    """``all``, ``sum`` or a band index (:func:`reduction.step.parse_frame_band`), normalised: ``"2"`` → 2."""
    try:
        return parse_frame_band(value)
    except ValueError as err:
        raise ConfigError(f"{key}={value!r}: {str(err).removeprefix(f'{value!r} ')}") from None


def _absolute(path: str) -> Path:
    return Path(os.path.normpath(Path(path).expanduser().absolute()))


def _directory(key: str, value: str, check_paths: bool) -> Any:
    path = _absolute(value)
    if check_paths and not path.is_dir():
        raise ConfigError(f"{key}={value}: no such directory ({path}; relative paths are taken from the "
                          f"current directory {Path.cwd()})")
    return str(path)


def _file(key: str, value: str | None, check_paths: bool) -> Any:
    """An existing file, optionally followed by ``::/dataset`` inside it (HDF5)."""
    if value is None:
        return _UNCHANGED
    file, sep, inner = value.partition("::")
    path = _absolute(file)
    if check_paths and not path.is_file():
        raise ConfigError(f"{key}={value}: no such file ({path}; relative paths are taken from the "
                          f"current directory {Path.cwd()})")
    return f"{path}{sep}{inner}"


def _output(key: str, value: str | None, check_paths: bool) -> Any:
    if value is None:
        return _UNCHANGED
    path = _absolute(value)
    if check_paths and path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={value}: exists and is not a directory")
    return str(path)


def check_output_writable(cfg: Any) -> None:
    """``campaign.output`` must be a folder xreduce can create and write in: checked before any work
    (a full disk is only found while writing). Only for the commands that write there; ``status``
    reads a campaign on a read-only mount as well."""
    value = cfg.campaign.output
    path = _absolute(value)
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "exists and is not a directory" if existing == path else f"{existing} is a file, not a folder"
        raise ConfigError(f"campaign.output={value}: {what}")
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise ConfigError(f"campaign.output={value}: {existing} is on a read-only filesystem; choose a "
                          "writable folder, e.g. campaign.output=/path/to/PROCESSED_DATA/...")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"campaign.output={value}: no permission to write in {existing}")


def check_inputs(cfg: Any) -> None:
    """Mistakes that would fail every chunk, found before any work (ConfigError, exit 2): an output
    folder inside the raw data (never written), and what the reduction kind finds wrong in the
    config and in the names of the campaign's first finished scan (detector, monitor, a radial range
    off the detector, ...). Unreadable raw data are left to the planner, which records them."""
    camp = cfg.campaign
    raw, output = Path(os.path.realpath(camp.raw_data)), Path(os.path.realpath(camp.output))
    inside = raw if output.is_relative_to(raw) else next((p for p in output.parents if p.name == "RAW_DATA"), None)
    if inside is not None or output.name == "RAW_DATA":
        raise ConfigError(f"campaign.output={camp.output}: inside the raw data ({inside or output}); raw data are "
                          "never written: choose a folder outside, e.g. PROCESSED_DATA beside RAW_DATA (the "
                          "default when campaign.output is not set)")
    kind = get_kind(cfg.reduction.kind)
    sample = _first_finished_scans(kind, camp)
    if sample is None:
        return
    dataset, scans = sample
    values = {"detector": camp.detector, "monitor": camp.monitor}
    try:
        found = kind.check_names(dataset, [s.scan for s in scans], camp.detector, camp.monitor)
    except XReduceError:  # unreadable now: the planner records it
        found = []
    problems = [f"campaign.{p.key}={values.get(p.key)}: {p.message}" for p in found]
    reduction = cast("dict[str, Any]", OmegaConf.to_container(cfg.reduction, resolve=True))
    problems += [f"reduction.{p.key}={_shown(reduction.get(p.key))}: {p.message}"
                 for p in kind.check(reduction, scans[0])]
    if problems:
        raise ConfigError("; ".join(problems))


def _first_finished_scans(kind: Any, camp: Any, datasets_tried: int = 3, scans: int = 20) -> tuple[str, list] | None:
    """(dataset, ScanInfos) of the first finished scans (at most ``scans``) of the campaign's first
    readable dataset with any."""
    try:
        datasets = kind.datasets(camp.raw_data, list(camp.datasets) if camp.datasets else None)
    except XReduceError:
        return None
    for dataset in map(str, datasets[:datasets_tried]):
        try:
            found = kind.scans(dataset, camp.detector, camp.monitor, camp.scans, camp.frame_band)
        except XReduceError:
            continue
        finished = [s for s in found if s.finished][:scans]
        if finished:
            return dataset, finished
    return None


def _shown(value: Any) -> str:
    return "null" if value is None else str(value).replace("'", "")


def _slurm_time(key: str, value: str, check_paths: bool) -> Any:
    """Slurm's --time formats (one grammar: :func:`hpc.slurm_units.minutes`)."""
    try:
        minutes(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a Slurm time: use minutes, HH:MM:SS or D-HH:MM:SS "
                          f"(e.g. {key}=01:30:00)") from None
    return _UNCHANGED


def _slurm_mem(key: str, value: str | None, check_paths: bool) -> Any:
    """Slurm's --mem formats (one grammar: :func:`hpc.slurm_units.mebibytes`)."""
    if value is None:
        return _UNCHANGED
    try:
        mebibytes(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a Slurm memory size: a whole number with K, M, G or T "
                          f"(no unit: M), e.g. {key}=16G") from None
    return _UNCHANGED


_SBATCH_OPTION = re.compile(r"--[A-Za-z][\w-]*(=.+)?")


def _sbatch_options(key: str, value: list[str], check_paths: bool) -> Any:
    """Long sbatch options, the form every batch backend can pass on (submitit takes them as a mapping)."""
    for option in value:
        if not _SBATCH_OPTION.fullmatch(option):
            raise ConfigError(f"{key}: {option!r} must be a long sbatch option, '--name' or '--name=value' "
                              f"(e.g. '--constraint=v100')")
    return _UNCHANGED


def _optional_positive(key: str, value: int | None, check_paths: bool) -> Any:
    return _UNCHANGED if value is None else _positive(key, value, check_paths)


def _not_negative(key: str, value: int, check_paths: bool) -> Any:
    if value < 0:
        raise ConfigError(f"{key}={value} must be 0 or more")
    return _UNCHANGED


#: (key, check) in order; a check runs when its key exists in the chosen schema.
_CHECKS: list[tuple[str, _Check]] = [
    ("campaign.name", _name),
    ("campaign.raw_data", _directory),
    ("campaign.datasets", _globs),
    ("campaign.detector", _text),
    ("campaign.monitor", _text),
    ("campaign.frame_band", _frame_band),
    ("campaign.output", _output),
    ("backend.workers", _positive),
    ("backend.time", _slurm_time),
    ("backend.cpus_per_task", _positive),
    ("backend.mem", _slurm_mem),
    ("backend.gpus_per_task", _not_negative),
    ("backend.extra_directives", _sbatch_options),
    ("backend.mode", _choice(("array", "mpi"))),
    ("backend.ntasks", _positive),
    ("backend.cluster", _choice(("local", "slurm"))),
    ("backend.threads_per_worker", _positive),
    ("backend.connect_timeout", _positive),
    ("backend.processes", _positive),
    ("backend.merge_time", _slurm_time),
    ("backend.chunks_per_task", _positive),
    ("backend.array_parallelism", _optional_positive),
    ("backend.max_array_size", _optional_positive),
    ("partition.frames_per_chunk", _positive),
    ("merge.mode", _choice(MERGE_MODES)),
    ("merge.export", _choices(EXPORT_FORMATS)),
    ("merge.export_frames", _choice(EXPORT_FRAMES)),
]
