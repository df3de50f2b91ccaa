"""How hpc runs another program (sbatch, squeue, sacct, scancel, scontrol, the selftest's MPI probe):
:func:`reduction.io.process.call`, the one subprocess helper, raising :class:`BackendError`."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from reduction.step import call as _call

from .errors import BackendError

__all__ = ["call"]


def call(cmd: Sequence[str], *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` and return the finished process; BackendError naming the command, its exit code,
    stdout and stderr when it is missing, times out or (with ``check``) fails."""
    return _call(cmd, timeout=timeout, check=check, error=BackendError)
