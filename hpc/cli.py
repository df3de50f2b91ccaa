"""The ``xreduce`` command line.

The campaign commands of the architecture (plan, run, submit, status, merge, demo, bench)
arrive with the campaign and backend issues; today the command reports its version and points
to the Python API.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("xreduce")
    except PackageNotFoundError:  # running from a source tree without installation
        from reduction import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xreduce`` console script; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="xreduce",
        description="Reduce X-ray scattering experiments. The Python API (reduction.Geometry, "
                    "reduction.Integrator) is available now; see docs/api.md.")
    parser.add_argument("--version", action="version", version=f"xreduce {_version()}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
