"""``xreduce selftest``: can this installation — or this Apptainer image — do its job here?

It gathers a :class:`Report` (versions, the MPI library, the OpenCL devices) and runs a few
checks, each ending ``ok``, ``unavailable`` (an optional part is missing here: fine, unless asked
for with ``require``) or ``failed`` (something is broken). The checks prove the parts work
rather than that they import: a bitshuffle-LZ4 HDF5 dataset is written and read back, and a flat
image is integrated on each engine and compared with the answer known without computing it.
The image's ``%test`` runs it, and so can a user on a login node or a GPU node.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from reduction.step import FAILED, OK, UNAVAILABLE, broken_kinds, kinds
from reduction.step import SelfCheck as Check

from .about import REQUIRABLE, installed_version
from .container import running_image
from .errors import BackendError
from .process import call

__all__ = ["Check", "Report", "REQUIRABLE", "run_selftest", "format_report", "report_json"]

#: Checks of the installation itself (the rest are the reduction kinds' and MPI).
_CORE_CHECKS = ("imports", "hdf5plugin")
#: Modules every installation needs (the core dependencies of pyproject.toml).
CORE_MODULES = ("numpy", "scipy", "h5py", "hdf5plugin", "bitshuffle", "lz4", "matplotlib", "hydra", "omegaconf", "tqdm")
#: Distributions whose versions are reported (None: not installed).
PACKAGES = ("numpy", "scipy", "h5py", "hdf5plugin", "bitshuffle", "lz4", "hydra-core", "mpi4py", "pyopencl",
            "pocl-binary-distribution", "submitit", "dask", "distributed", "dask-jobqueue")


@dataclass
class Report:
    """Everything ``selftest`` found; ``ok`` is False when any check failed."""

    xreduce: str
    python: str
    executable: str
    image: str | None
    packages: dict[str, str | None]
    hdf5: str | None
    mpi_library: str | None
    facts: dict[str, list[str]] = field(default_factory=dict)  # from the kinds' selftests, e.g. OpenCL devices
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(check.status != FAILED for check in self.checks)


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _image() -> str | None:
    """The Apptainer image this runs in (and its revision label), or None on a plain host."""
    path = running_image()
    if not path:
        return None
    labels = Path("/.singularity.d/labels.json")
    try:
        revision = json.loads(labels.read_text(encoding="utf-8")).get("org.opencontainers.image.revision")
    except (OSError, ValueError):
        revision = None
    return f"{path} (revision {revision})" if revision else path


# -- checks -------------------------------------------------------------------------------------
def _imports() -> Check:
    missing = []
    for name in CORE_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an ImportError, or a broken compiled extension
            missing.append(f"{name} ({type(exc).__name__}: {exc})")
    if missing:
        return Check("imports", FAILED, "cannot import " + "; ".join(missing) + ": reinstall xreduce")
    return Check("imports", OK, ", ".join(CORE_MODULES))


def _hdf5_roundtrip(workdir: Path) -> Check:
    """Write and read back a bitshuffle-LZ4 dataset, as detectors write frames."""
    try:
        import h5py
        import hdf5plugin

        available = {name: bool(h5py.h5z.filter_avail(fid))
                     for name, fid in (("bitshuffle", hdf5plugin.BSHUF_ID), ("LZ4", hdf5plugin.LZ4_ID))}
        frames = (np.arange(4 * 32 * 32, dtype=np.uint32) % 1000).reshape(4, 32, 32)
        path = workdir / "bitshuffle_lz4.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("frames", data=frames, chunks=(1, 32, 32), **hdf5plugin.Bitshuffle(cname="lz4"))
        with h5py.File(path, "r") as f:
            back = f["frames"][()]
            filters = f["frames"].id.get_create_plist().get_nfilters()
    except Exception as exc:
        return Check("hdf5plugin", FAILED, f"bitshuffle-LZ4 write/read failed: {type(exc).__name__}: {exc}")
    if not np.array_equal(back, frames) or filters < 1:
        return Check("hdf5plugin", FAILED, "bitshuffle-LZ4 dataset read back differs from what was written")
    shown = ", ".join(f"{name} {'yes' if yes else 'no'}" for name, yes in available.items())
    return Check("hdf5plugin", OK, f"bitshuffle-LZ4 dataset written and read back (filters: {shown})")


_MPI_PROBE = ("import mpi4py; mpi4py.rc.initialize = False; mpi4py.rc.finalize = False\n"
              "from mpi4py import MPI\nprint(MPI.Get_library_version().strip().splitlines()[0].strip())")


def _mpi() -> tuple[Check, str | None]:
    """mpi4py and the MPI library it loads, probed in a child process (no MPI_Init here)."""
    if _version("mpi4py") is None:
        return Check("mpi", UNAVAILABLE, "mpi4py is not installed (pip install 'xreduce[mpi]')", "mpi"), None
    try:
        done = call([sys.executable, "-c", _MPI_PROBE], timeout=60, check=False)
    except BackendError:  # it hung: a broken MPI installation, not a missing one
        return Check("mpi", FAILED, "loading the MPI library took more than 60 s", "mpi"), None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return Check("mpi", UNAVAILABLE, f"mpi4py cannot load an MPI library: {last} (install Open MPI: "
                                         "apt-get install openmpi-bin)", "mpi"), None
    library = done.stdout.replace("\0", "").strip()  # Open MPI ends the string with a NUL
    return Check("mpi", OK, f"mpi4py {_version('mpi4py')} with {library}", "mpi"), library


# -- the report ------------------------------------------------------------------------------
def run_selftest(require: tuple[str, ...] | list[str] = (), device: str = "auto",
                 workdir: str | Path | None = None) -> Report:
    """Run every check and return the report.

    Parameters
    ----------
    require : parts that must work here (``opencl``, ``gpu``, ``mpi``): their ``unavailable``
        becomes ``failed``.
    device : the OpenCL device the kinds' opencl engine checks run on (``auto``, ``cpu``, ``gpu``, ``P:D``).
    workdir : where the HDF5 test file goes (default: a temporary folder, removed after).

    Example
    -------
    >>> report = run_selftest(require=["opencl"])
    >>> report.ok, [c.name for c in report.checks if c.status == "ok"][:4]
    (True, ['imports', 'hdf5plugin', 'azint1d numpy', 'azint1d opencl'])
    """
    unknown = sorted(set(require) - set(REQUIRABLE))
    if unknown:
        raise ValueError(f"cannot require {', '.join(unknown)}: choose among {', '.join(REQUIRABLE)}")
    start = time.perf_counter()
    import h5py

    report = Report(xreduce=installed_version(), python=platform.python_version(), executable=sys.executable,
                    image=_image(), packages={name: _version(name) for name in PACKAGES},
                    hdf5=h5py.version.hdf5_version, mpi_library=None)
    report.checks.append(_imports())
    with tempfile.TemporaryDirectory(prefix="xreduce-selftest-", dir=workdir) as tmp:
        report.checks.append(_hdf5_roundtrip(Path(tmp)))
    for kind in kinds().values():  # each reduction kind's known answer, on each engine it has
        result = kind.selftest(device, require)
        report.checks += result.checks
        report.facts.update(result.facts)
    report.checks += [Check(f"kind {name}", FAILED, reason) for name, reason in broken_kinds().items()]

    mpi_check, report.mpi_library = _mpi()
    report.checks.append(mpi_check)
    for check in report.checks:
        if check.status == UNAVAILABLE and check.part in require:
            check.status = FAILED
            check.detail += f" (required: --require {check.part})"
    report.seconds = time.perf_counter() - start
    return report


def format_report(report: Report) -> str:
    """The report as text for a terminal or a job log."""
    packages = ", ".join(f"{name} {ver}" for name, ver in report.packages.items() if ver)
    absent = [name for name, ver in report.packages.items() if not ver]
    lines = [f"xreduce {report.xreduce} selftest",
             f"  python    {report.python} ({report.executable})",
             f"  image     {report.image or 'none (not inside an Apptainer image)'}",
             f"  packages  {packages}, HDF5 {report.hdf5}",
             f"  missing   {', '.join(absent) if absent else 'none'}",
             f"  MPI       {report.mpi_library or 'none'}"]
    for fact, values in report.facts.items():
        values = values or ["none"]
        lines += [f"  {fact:<9} {values[0]}"] + [f"            {v}" for v in values[1:]]
    width = max(len(c.name) for c in report.checks)
    lines.append("checks")
    lines += [f"  {c.status:<12} {c.name:<{width}}  {c.detail}" for c in report.checks]
    working = [c.name for c in report.checks if c.status == OK and c.name not in _CORE_CHECKS]
    counts = {s: sum(c.status == s for c in report.checks) for s in (OK, UNAVAILABLE, FAILED)}
    verdict = "passed" if report.ok else "FAILED"
    lines.append(f"working: {', '.join(working) or 'none'}")
    lines.append(f"selftest {verdict}: {counts[OK]} ok, {counts[UNAVAILABLE]} unavailable, {counts[FAILED]} failed "
                 f"in {report.seconds:.1f} s" + (" (--require makes an unavailable part a failure)"
                                                  if counts[UNAVAILABLE] else ""))
    return "\n".join(lines)


def report_json(report: Report) -> str:
    """The report as JSON (``--json``), with ``ok`` added."""
    return json.dumps({**asdict(report), "ok": report.ok}, indent=1)
