"""What the fault-injection tests share: xreduce started as a separate process, as a user starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def xreduce(*args: str, **popen: object) -> subprocess.Popen:
    """Start ``xreduce ARGS`` as its own process (this checkout's code), output captured."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "hpc.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **popen)  # type: ignore[call-overload]


def run_xreduce(*args: str, timeout: float = 300) -> tuple[int, str]:
    """Run ``xreduce ARGS`` to its end: (exit code, output)."""
    proc = xreduce(*args)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out
