"""Atomic output files: the one way xreduce writes anything another process may read.

A reader (a worker checking whether a chunk is done, a user opening a master file, a rerun) must
never see a half-written file, and a crash must never leave a damaged file under the final name.
So every file is written as ``.<name>.<pid>-<random>.tmp`` in the same folder, flushed to disk, and
renamed into place; on any error the temporary file is removed and the old file (if any) stays.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PendingFile", "atomic_output", "fsync_file"]


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to disk (before it is renamed into place: a node may die right after)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PendingFile:
    """A file being written under a temporary name beside ``path``: :meth:`commit` flushes it and
    renames it into place, :meth:`discard` removes it (a no-op after a commit). For writers that
    hold the file open across calls (e.g. a chunk written block by block)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # named, not created: the writer creates it with the usual permissions (mkstemp's are 0600)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")

    def commit(self) -> None:
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
