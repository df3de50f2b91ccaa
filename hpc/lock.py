"""The campaign lock: one ``run``/``submit``/``merge`` at a time on an output folder.

A small JSON file, ``<output>/campaign.lock``, names its holder: host, pid, start time, command,
and for ``submit`` the Slurm job ids that carry on after the command returned. A second writer
is refused with that description; ``status`` and ``plan`` (read-only views) never take it.

A holder that is gone leaves a *stale* lock, taken over without asking: a process on this host
that no longer runs (its pid is gone, or now belongs to a process started later), or a submission
none of whose jobs is queued or running any more. A process on another host cannot be checked from
here: the message names the file to remove once that process is known to be gone.

Checking and taking over happen under an ``fcntl`` lock on a guard file beside it (never replaced),
and the lock file itself is written whole under a temporary name and renamed into place, so two
commands starting at the same moment never both win, and nobody reads a half-written lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from reduction.step import atomic_output

from .errors import BackendError, CampaignBusy

__all__ = ["LOCK_NAME", "Holder", "CampaignLock", "current_holder"]

log = logging.getLogger(__name__)

LOCK_NAME = "campaign.lock"
_GUARD_NAME = ".campaign.lock.guard"

#: what a lock with Slurm jobs asks to know whether any of them is still queued or running
JobsActive = Callable[[list[str]], list[str]]


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22, counted after "pid (comm)"


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    return start is None or _process_start(pid) in (None, start)


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as written in the lock file."""

    command: str
    host: str
    pid: int
    started: str
    token: str
    process_start: str | None = None
    jobs: list[str] = field(default_factory=list)

    def describe(self) -> str:
        what = f"`xreduce {self.command}` (pid {self.pid} on {self.host}, started {self.started})"
        return what + (f" with Slurm jobs {', '.join(self.jobs)}" if self.jobs else "")

    def active(self, jobs_active: JobsActive | None) -> tuple[bool, str]:
        """(still active, why) — conservative: when it cannot be told, the holder counts as active."""
        if self.jobs:
            if jobs_active is None:
                return True, "its jobs cannot be checked here"
            try:
                running = jobs_active(self.jobs)
            except BackendError as exc:
                return True, f"Slurm cannot be asked whether its jobs ended ({str(exc).splitlines()[0]})"
            return bool(running), f"jobs {', '.join(running)} queued or running" if running else "its jobs ended"
        if self.host != socket.gethostname():
            return True, "it runs on another host, where this one cannot check it"
        if _alive(self.pid, self.process_start):
            return True, "that process is running"
        return False, "that process is gone"


def _read(path: Path) -> Holder | None:
    """The holder in the lock file; None when there is none, or when it is damaged (counts as stale)."""
    try:
        return Holder(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("damaged campaign lock %s (%s): taken over", path, exc)
        return None


def current_holder(output: Path, jobs_active: JobsActive | None = None) -> Holder | None:
    """The active holder of the campaign lock of ``output``, None when it is free or stale (reads only)."""
    holder = _read(Path(output) / LOCK_NAME)
    return holder if holder is not None and holder.active(jobs_active)[0] else None


@contextlib.contextmanager
def _guard(output: Path) -> Iterator[None]:
    """Serialise check-and-write among commands on this output (fcntl lock on a guard file)."""
    with open(output / _GUARD_NAME, "a") as guard:
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
        except OSError as exc:  # a filesystem without locks (Lustre mounted without -o flock): best effort
            log.warning("cannot lock %s (%s): two commands starting at the same instant may both run",
                        output / _GUARD_NAME, exc)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(guard, fcntl.LOCK_UN)


class CampaignLock:
    """The lock of the campaign in ``output``, taken by ``command``; a context manager for commands
    that release it when they end (``run``, ``merge``); ``submit`` hands it to its jobs (:meth:`hand_to_jobs`)."""

    def __init__(self, output: Path, command: str, jobs_active: JobsActive | None = None) -> None:
        self.output = Path(output)
        self.path = self.output / LOCK_NAME
        self.command = command
        self.jobs_active = jobs_active
        self.holder: Holder | None = None

    def acquire(self, *, over_jobs: bool = False) -> None:
        """Take the lock, or raise CampaignBusy naming the holder; ``over_jobs``: take over a lock held
        by Slurm jobs still queued or running (``submit --force``)."""
        self.output.mkdir(parents=True, exist_ok=True)
        mine = Holder(self.command, socket.gethostname(), os.getpid(),
                      datetime.now(timezone.utc).isoformat(timespec="seconds"), secrets.token_hex(8),
                      _process_start(os.getpid()))
        with _guard(self.output):
            held = _read(self.path)
            if held is not None:
                active, why = held.active(self.jobs_active)
                if active and not (over_jobs and held.jobs):
                    if held.jobs:
                        then = "cancel them (`xreduce cancel`), or `xreduce submit --force`"
                    elif "another host" in why:
                        then = f"stop that process; once it is gone, remove {self.path}"
                    else:
                        then = "stop that process"
                    raise CampaignBusy(f"campaign output {self.output} is locked by {held.describe()}: {why}. "
                                       f"Wait for it (`xreduce status {self.output}`), or {then}")
                log.warning("campaign lock %s of %s taken over (%s)", self.path, held.describe(), why)
            self._write(mine)

    def _write(self, holder: Holder) -> None:
        with atomic_output(self.path) as tmp:
            tmp.write_text(json.dumps(asdict(holder), indent=1), encoding="utf-8")
        self.holder = holder

    def hand_to_jobs(self, jobs: list[str]) -> None:
        """Keep the lock after this command ends, held by its Slurm jobs until none is queued or running."""
        assert self.holder is not None
        with _guard(self.output):
            self._write(replace(self.holder, jobs=list(jobs)))

    def release(self) -> None:
        """Remove the lock file if it is still this command's."""
        if self.holder is None:
            return
        with _guard(self.output):
            held = _read(self.path)
            if held is not None and held.token == self.holder.token:
                self.path.unlink(missing_ok=True)
        self.holder = None

    def __enter__(self) -> CampaignLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
