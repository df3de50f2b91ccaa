"""What the process and disk fault tests share: an experiment big enough to kill a worker in the
middle of a chunk, the command line as a real process, a tmpfs of a given size, a disk filled up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
#: a temporary chunk file: .<chunk>.h5.<host>.<pid>-<random>.tmp
TEMPORARY = re.compile(r"\.(?P<chunk>c-[0-9a-f]+)\.h5\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp")


def overrides(exp, out: Path, *extra: str, frames_per_chunk: int = 5, npt: int = 100) -> list[str]:
    return ["campaign=demo", f"campaign.raw_data={exp.raw_data}", f"reduction.poni={exp.poni}",
            f"reduction.mask={exp.mask}", f"campaign.output={out}", f"partition.frames_per_chunk={frames_per_chunk}",
            f"reduction.npt={npt}", *extra]


def xreduce(*args: str, **popen) -> subprocess.Popen:
    """``xreduce ARGS`` as its own process, importing this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "hpc.cli", *args], env=env, text=True,
                            stdout=popen.pop("stdout", subprocess.PIPE), stderr=popen.pop("stderr", subprocess.PIPE),
                            **popen)


def run_xreduce(*args: str, timeout: float = 300) -> tuple[int, str]:
    """Run ``xreduce ARGS`` to its end: (exit code, output with stderr merged into it)."""
    process = xreduce(*args, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def writing(chunks: Path, process: subprocess.Popen, *, exclude: set[int] = frozenset(),
            chunk: str | None = None) -> tuple[str, int]:
    """Wait until a worker of ``process`` is writing a chunk file (its temporary file exists):
    (chunk id, worker pid). Fails if the run ends first."""
    while process.poll() is None:
        for path in chunks.glob(".c-*.tmp") if chunks.is_dir() else []:
            match = TEMPORARY.fullmatch(path.name)
            if match and int(match["pid"]) not in exclude and chunk in (None, match["chunk"]):
                return match["chunk"], int(match["pid"])
        time.sleep(0.005)
    out, err = process.communicate()
    pytest.fail(f"the run ended (rc {process.returncode}) before a worker was caught writing a chunk:\n{err}")


def alive(pids: list[int]) -> list[int]:
    """The pids still running (zombies are dead)."""
    living = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.append(pid)
        except psutil.NoSuchProcess:
            pass
    return living


def wait_gone(pids: list[int], within: float = 5.0) -> list[int]:
    """Poll until none of ``pids`` runs or ``within`` seconds passed; the survivors."""
    end = time.monotonic() + within
    while alive(pids) and time.monotonic() < end:
        time.sleep(0.05)
    return alive(pids)


@contextmanager
def tmpfs(where: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (needs root: these tests are about a real full or
    read-only filesystem, which nothing else gives without privileges)."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {where} ({done.stderr.strip() or done.returncode}): the disk fault "
                    "tests need root (or CAP_SYS_ADMIN) to mount a small filesystem; run them as root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path, keep: int) -> None:
    """Fill the filesystem of ``folder`` until ``keep`` bytes are left."""
    st = os.statvfs(folder)
    with open(folder / "ballast", "wb") as handle:
        handle.write(b"\0" * max(0, st.f_bavail * st.f_frsize - keep))
