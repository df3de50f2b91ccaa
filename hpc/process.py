"""The one way hpc runs another program: sbatch, squeue, sacct, scancel, scontrol, the selftest's MPI probe.

Like dask-jobqueue's ``_call``, a failure raises :class:`BackendError` with the command, its exit
code, stdout and stderr, so that what the scheduler said reaches the user; and a program that does
not answer (a Slurm controller that is down) fails after a timeout instead of hanging xreduce.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from .errors import BackendError

__all__ = ["call"]


def call(cmd: Sequence[str], *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (no shell) and return the finished process, its output as text.

    Raises BackendError naming the command when it is not found or does not end within ``timeout``
    seconds, and (with ``check``, the default) when it exits non-zero; ``check=False`` leaves the exit
    code to the caller.
    """
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise BackendError(f"`{cmd[0]}` not found: it is not installed, or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"`{shlex.join(cmd)}` did not answer within {timeout:g} s") from None
    if check and done.returncode != 0:
        raise BackendError(f"`{shlex.join(cmd)}` failed with exit code {done.returncode}\n"
                           f"stderr: {done.stderr.strip()}\nstdout: {done.stdout.strip()}")
    return done
