"""Exceptions of xreduce.

One hierarchy rooted in :class:`XReduceError`; ``hpc`` re-uses it (``reduction`` never imports
``hpc``). Messages name the file, key or value at fault and what was expected.
"""

from __future__ import annotations

__all__ = ["XReduceError", "GeometryError", "IntegrationError", "RawDataError", "RawDataPending", "OutputError",
           "EngineUnavailable"]


class XReduceError(Exception):
    """Base of every error xreduce raises on purpose."""


class GeometryError(XReduceError):
    """A PONI file, detector or geometry parameter is invalid."""


class IntegrationError(XReduceError):
    """Integration parameters or input frames/masks are invalid."""


class RawDataError(XReduceError):
    """Raw data (BLISS master files, lima files, counters, masks) are missing, truncated or malformed."""


class RawDataPending(RawDataError):
    """Raw data still being written (e.g. a dataset file BLISS has just created): not an error yet,
    to be tried again later, unlike a file that is damaged for good."""


class OutputError(XReduceError):
    """A result file (chunk or master) cannot be written or is not what it claims to be."""


class EngineUnavailable(XReduceError):
    """An accelerator engine cannot run here: no pyopencl/ICD/platform/device, a kernel build
    failure, or too little device memory. The message names the reason; ``engine="auto"`` falls
    back to the numpy engine with it, ``engine="opencl"`` raises it."""
