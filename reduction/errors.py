"""Exceptions of xreduce.

One hierarchy rooted in :class:`XReduceError`; ``hpc`` re-uses it (``reduction`` never imports
``hpc``). Messages name the file, key or value at fault and what was expected.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["XReduceError", "GeometryError", "IntegrationError", "RawDataError", "ScanLayoutError", "RawDataPending",
           "OutputError", "InputError", "EngineUnavailable", "is_permanent"]


class XReduceError(Exception):
    """Base of every error xreduce raises on purpose.

    ``permanent``: running the same chunk again with the same inputs cannot succeed (a layout, a
    shape, a parameter is wrong); the message says what to change. Campaigns do not retry such a
    chunk until its raw dataset file or its config changes. Other errors (I/O, a file still being
    written, a dead worker) are transient and retried by the next run.
    """

    permanent: ClassVar[bool] = False


class GeometryError(XReduceError):
    """A PONI file, detector or geometry parameter is invalid."""

    permanent = True


class IntegrationError(XReduceError):
    """Integration parameters or input frames/masks are invalid."""

    permanent = True


class RawDataError(XReduceError):
    """Raw data (BLISS master files, lima files, counters, masks) are missing, truncated or malformed."""


class ScanLayoutError(RawDataError):
    """A finished scan whose layout cannot be reduced as configured (no such detector, a 4-D dataset,
    a monitor of the wrong length): found from its metadata, the same on every run."""

    permanent = True


class RawDataPending(RawDataError):
    """Raw data still being written (e.g. a dataset file BLISS has just created): not an error yet,
    to be tried again later, unlike a file that is damaged for good."""


class OutputError(XReduceError):
    """A result file (chunk or master) cannot be written or is not what it claims to be."""


class InputError(XReduceError):
    """A file or option given to a command that works on results (``xreduce rebin`` / ``sum``) is not
    what it needs: not a master file, no such entry, a factor that does not divide the bins. The
    command line reports it as a usage error (exit 2)."""


class EngineUnavailable(XReduceError):
    """An accelerator engine cannot run here: no pyopencl/ICD/platform/device, a kernel build
    failure, or too little device memory. The message names the reason; ``engine="auto"`` falls
    back to the numpy engine with it, ``engine="opencl"`` raises it."""


def is_permanent(exc: BaseException) -> bool:
    """Whether running again with the same inputs cannot help (:attr:`XReduceError.permanent`); any
    other exception (an OSError, a dead worker) is transient."""
    return isinstance(exc, XReduceError) and exc.permanent
