"""Facts about this installation that the command line and the selftest both need (no heavy imports)."""

from __future__ import annotations

__all__ = ["installed_version", "REQUIRABLE"]

#: ``selftest --require``: parts that are optional in general but must work for a given use.
REQUIRABLE = ("opencl", "gpu", "mpi")


def installed_version() -> str:
    """xreduce's version: the installed distribution's, else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xreduce")
    except PackageNotFoundError:  # running from a source tree without installation
        from reduction import __version__

        return __version__
