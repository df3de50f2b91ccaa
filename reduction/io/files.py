"""Atomic output files: the one way xreduce writes anything another process may read.

A reader (a worker checking whether a chunk is done, a user opening a master file, a rerun) must
never see a half-written file, and a crash must never leave a damaged file under the final name.
So every file is written as ``.<name>.<host>.<pid>-<random>.tmp`` in the same folder, flushed to
disk, and renamed into place; on any error the temporary file is removed and the old file (if any)
stays. A writer killed outright leaves its temporary file behind: :func:`remove_temporaries` removes
those of dead processes (the host in the name says whose pid it is, on a filesystem many nodes share).

A full disk must fail a file cleanly, before HDF5 has written part of it: HDF5 (2.0) cannot close a
file after a failed write and crashes the process later. So a writer that knows how big its file will
be reserves the space first (:meth:`PendingFile.reserve`): the blocks are allocated without changing
the file's size, ENOSPC comes from the reservation, and the unused rest is released at commit.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reduction.errors import OutputError

__all__ = ["PendingFile", "atomic_output", "fsync_file", "reserve_space", "remove_temporaries", "written_as", "why"]

#: another host's temporary files are removed once nothing was written to them for this long (seconds)
STALE_ELSEWHERE = 24 * 3600
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp")
_KEEP_SIZE, _PUNCH_HOLE = 0x01, 0x02  # fallocate(2) modes
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to disk (before it is renamed into place: a node may die right after)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fallocate(path: Path, mode: int, offset: int, length: int) -> bool:
    """Linux fallocate(2) on ``path``; False where the OS or the filesystem cannot, OSError otherwise."""
    if not sys.platform.startswith("linux") or length <= 0:
        return False
    try:
        call = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return False
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(path, os.O_WRONLY)
    try:
        if call(fd, mode, offset, length) == 0:
            return True
        code = ctypes.get_errno()
    finally:
        os.close(fd)
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(path))


def reserve_space(path: str | os.PathLike[str], nbytes: int) -> bool:
    """Allocate the disk blocks of the first ``nbytes`` of ``path`` without changing its size, so
    that writing them cannot fail for want of space: a full disk or quota raises OSError (ENOSPC,
    EDQUOT) naming the file here, before anything is written. False (nothing reserved) where the
    filesystem or OS does not allocate ahead (non-Linux, some network filesystems)."""
    return _fallocate(Path(path), _KEEP_SIZE, 0, int(nbytes))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): the signal said it exists
        return True


def remove_temporaries(folder: str | os.PathLike[str], *, pid: int | None = None) -> list[Path]:
    """Remove the temporary files (:class:`PendingFile`) left in ``folder`` by writers that died:
    those of this host whose process is gone, or only those of ``pid`` (a worker known dead), and
    another host's untouched for :data:`STALE_ELSEWHERE` (its pids cannot be checked from here).
    Returns what was removed; never fails for a file another process removed first."""
    host, removed = socket.gethostname(), []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        owner, mine = int(match["pid"]), match["name"].endswith(f".{host}")
        if pid is not None:
            stale = mine and owner == pid
        elif mine:
            stale = owner != os.getpid() and not _alive(owner)
        else:
            stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_ELSEWHERE
        if stale:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(Path(entry.path))
    return removed


class PendingFile:
    """A file being written under a temporary name beside ``path``: :meth:`commit` flushes it and
    renames it into place, :meth:`discard` removes it (a no-op after a commit). For writers that
    hold the file open across calls (e.g. a chunk written block by block)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # named, not created: the writer creates it with the usual permissions (mkstemp's are 0600)
        self.tmp = self.path.with_name(f".{self.path.name}.{socket.gethostname()}.{os.getpid()}-"
                                       f"{secrets.token_hex(4)}.tmp")
        self.reserved = 0

    def reserve(self, nbytes: int) -> None:
        """Reserve disk space for the first ``nbytes`` of the (created) temporary file: OSError
        (ENOSPC, EDQUOT) now rather than a failed write later; see :func:`reserve_space`."""
        if nbytes > self.reserved and reserve_space(self.tmp, nbytes):
            self.reserved = nbytes

    def commit(self) -> None:
        size = self.tmp.stat().st_size
        if self.reserved > size:  # give back what was reserved and not used
            _fallocate(self.tmp, _PUNCH_HOLE | _KEEP_SIZE, size, self.reserved - size)
        fsync_file(self.tmp)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception the file
    written there is flushed and renamed to ``path`` (replacing it), otherwise it is removed.

    >>> import json, tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> with atomic_output(target) as tmp:
    ...     _ = tmp.write_text(json.dumps({"a": 1}))
    >>> json.loads(target.read_text())
    {'a': 1}
    """
    pending = PendingFile(path)
    try:
        yield pending.tmp
        pending.commit()
    finally:
        pending.discard()


@contextmanager
def written_as(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn a failure to write ``path`` (full disk, quota, read-only folder; h5py says RuntimeError for
    some) into one line naming the file: OutputError("cannot write <what> <path>: <reason>")."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        raise OutputError(f"cannot write {what} {path}: {why(err)}") from err


def why(err: BaseException) -> str:
    """The reason of an I/O error in a few words: "No space left on device" rather than HDF5's
    multi-line account of the failed write."""
    code = getattr(err, "errno", None)
    return os.strerror(code) if code else str(err).split("\n")[0]
