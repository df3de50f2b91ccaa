"""Validate NeXus files against their application definitions with *both* pynxtools and nexusformat.

No single validator catches everything (see docs/output.md and the project's NeXus notes):
pynxtools checks enumerations, types, dates, units and undocumented fields but misses missing
required groups; nexusformat checks required groups and fields but not enumerations. So every
NXentry is validated by both, through their Python APIs (their CLIs exit 0 on invalid files
and look at one entry only), and a file is valid only with zero problems from each.

    from nexus_validation import validate_file
    problems = validate_file("master.nxs")      # {entry path: [problem, ...]}, every NXentry
    assert not any(problems.values()), problems

Two known pynxtools 0.16 quirks are handled here:

- it reports "required attribute .../@units hasn't been supplied" for the NXazint NXdata fields
  (their units are declared as ``<attribute>`` children, which it never marks as seen): dropped,
  but only when that ``@units`` attribute really exists in the file;
- ``validate_hdf_group_against`` walks the whole file once per entry (O(entries²)); we walk only
  the entry's own subtree (same visitor, pynxtools internals) and fall back to the public
  function when those internals move.

Both validators use the NXDL definitions they bundle (NXazint1d/NXazint2d included).
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py

__all__ = ["validate_file", "validate_entry", "pynxtools_problems", "nexusformat_problems", "nxentries"]


def _s(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return _s(value.item())
    return str(value)


def nxentries(path: str | Path) -> list[str]:
    """Absolute paths of the NXentry groups at the root of ``path``."""
    with h5py.File(path, "r") as f:
        return [g.name for g in f.values()
                if isinstance(g, h5py.Group) and _s(g.attrs.get("NX_class")) == "NXentry"]


def _definition(path: str | Path, entry: str) -> str | None:
    with h5py.File(path, "r") as f:
        grp = f[entry]
        return _s(grp["definition"][()]) if "definition" in grp else None


# -- pynxtools ----------------------------------------------------------------------------------
def _pynx_units_false_positive(f: h5py.File, problem: str) -> bool:
    path, sep, rest = problem.partition("ValidationProblem.")
    if not (sep and rest.startswith("MissingRequiredAttribute") and path.endswith("/@units")):
        return False
    obj = path[: -len("/@units")]
    return obj in f and "units" in f[obj].attrs


def _pynx_format(problem: str) -> str:
    from pynxtools.dataconverter.helpers import ValidationProblem

    path, sep, rest = problem.partition("ValidationProblem.")
    if not sep:
        return problem
    kind = max((k for k in ValidationProblem.__members__ if rest.startswith(k)), key=len, default="")
    value = rest[len(kind):]
    return f"pynxtools: {kind} at {path}" + (f" ({value})" if value not in ("", "None") else "")


def pynxtools_problems(path: str | Path, entry: str, appdef: str) -> list[str]:
    """pynxtools' problems (warnings and errors, not infos) for one entry, as readable lines."""
    from pynxtools.dataconverter.helpers import collector
    from pynxtools.dataconverter.validation import ValidationVisitor, validate_hdf_group_against

    pynx_logger = logging.getLogger("pynxtools")
    level = pynx_logger.level
    pynx_logger.setLevel(logging.CRITICAL)  # the collector keeps the problems; no log flood
    try:
        from pynxtools.nexus.handler import NexusFileHandler
        from pynxtools.nexus.nexus import _get_inherited_hdf_nodes

        walk_subtree = hasattr(NexusFileHandler, "_full_visit")
    except ImportError:  # internals moved: the public, whole-file walk
        walk_subtree = False
    try:
        with h5py.File(path, "r") as f:
            try:
                if walk_subtree:
                    visitor = ValidationVisitor(appdef, entry, False)  # clears the collector
                    try:
                        NexusFileHandler(f, is_open=True)._full_visit(f, f[entry], entry.lstrip("/"), visitor)
                        visitor.on_complete(f)
                    finally:
                        _get_inherited_hdf_nodes.cache_clear()
                else:
                    validate_hdf_group_against(appdef, f[entry], str(path), False)
            except Exception as exc:  # noqa: BLE001 - e.g. an unknown appdef: a problem, not a pass
                return [f"pynxtools: validation of {entry} against {appdef} failed: {exc!r}"]
            problems = sorted(p for p in collector.get() if not _pynx_units_false_positive(f, p))
    finally:
        pynx_logger.setLevel(level)
    return [_pynx_format(p) for p in problems]


# -- nexusformat --------------------------------------------------------------------------------
class _Capture(logging.Handler):
    """Keeps nexusformat's error/warning lines with the last "Field:/Group:" line before them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.context = ""
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        if record.levelno >= logging.CRITICAL:  # nexusformat's 'all' level: headers and context
            if message.startswith(("Field:", "Group:", "Link:", "Attribute:")):
                self.context = message
            return
        line = f"nexusformat: {self.context}: {message}" if self.context else f"nexusformat: {message}"
        if record.levelno >= logging.ERROR:
            self.errors.append(line)
        elif record.levelno >= logging.WARNING:
            self.warnings.append(line)


def nexusformat_problems(path: str | Path, entry: str, appdef: str, *, warnings: bool = False) -> list[str]:
    """nexusformat's application-validation errors (and warnings if asked) for one entry."""
    from nexusformat.nexus.validate import logger, validate_application

    capture = _Capture()
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    for h in handlers:
        logger.removeHandler(h)
    logger.addHandler(capture)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        result = validate_application(str(path), path=entry, application=appdef)
    except Exception as exc:  # noqa: BLE001 - nexusformat 2.1 crashes on some invalid values
        capture.errors.append(f"nexusformat: validator crashed: {exc!r}")
        result = (0, 1)
    finally:
        logger.removeHandler(capture)
        for h in handlers:
            logger.addHandler(h)
        logger.setLevel(level)
        logger.propagate = propagate
    problems = list(capture.errors)
    if result is None and not problems:
        problems.append("nexusformat: validation did not run (file or entry not found)")
    elif result is not None and result[1] and not problems:
        problems.append(f"nexusformat: {result[1]} error(s) reported")
    return problems + (capture.warnings if warnings else [])


# -- both ---------------------------------------------------------------------------------------
def validate_entry(path: str | Path, entry: str, appdef: str | None = None) -> list[str]:
    """All problems of one NXentry, from both validators ([] = valid). ``appdef`` defaults to
    the entry's own ``definition``; an entry without one is a problem."""
    appdef = appdef or _definition(path, entry)
    if not appdef:
        return [f"{entry}: no 'definition' field (and no appdef given)"]
    return pynxtools_problems(path, entry, appdef) + nexusformat_problems(path, entry, appdef)


def validate_file(path: str | Path, appdef: str | None = None) -> dict[str, list[str]]:
    """Problems of every NXentry of ``path`` ({entry: [problem, ...]}); a file without NXentry
    gives {"/": ["no NXentry"]}."""
    entries = nxentries(path)
    if not entries:
        return {"/": ["no NXentry group in the file"]}
    return {entry: validate_entry(path, entry, appdef) for entry in entries}
