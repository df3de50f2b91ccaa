"""The one way xreduce runs another program: Slurm's commands, the selftest's MPI probe, the OpenCL
kernel probe.

Like dask-jobqueue's ``_call``, a failure raises with the command, its exit code, stdout and
stderr, so that what the program said reaches the user; and a program that does not answer (a
Slurm controller that is down, a compiler that hangs) fails after a timeout instead of hanging
xreduce. The caller chooses the error type (``hpc`` a BackendError, an engine EngineUnavailable).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence

from reduction.errors import XReduceError

__all__ = ["call"]


def call(cmd: Sequence[str], *, timeout: float = 60, check: bool = True, env: Mapping[str, str] | None = None,
         error: type[XReduceError] = XReduceError) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (no shell) and return the finished process, its output as text.

    Raises ``error`` naming the command when it is not found or does not end within ``timeout``
    seconds, and (with ``check``, the default) when it exits non-zero; ``check=False`` leaves the exit
    code to the caller. ``env``: the child's whole environment (default: this process's).
    """
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False,
                              env=None if env is None else dict(env))
    except FileNotFoundError:
        raise error(f"`{cmd[0]}` not found: it is not installed, or not on PATH") from None
    except subprocess.TimeoutExpired:
        raise error(f"`{shlex.join(cmd)}` did not answer within {timeout:g} s") from None
    if check and done.returncode != 0:
        raise error(f"`{shlex.join(cmd)}` failed with exit code {done.returncode}\n"
                    f"stderr: {done.stderr.strip()}\nstdout: {done.stdout.strip()}")
    return done
