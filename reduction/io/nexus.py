"""Small HDF5/NeXus helpers every kind's chunk and master files use the same way.

Opening a result file for reading (without file locking), attribute values as Python values,
NeXus groups, string arrays, time stamps and the relative source names of virtual datasets. The
merge of chunk files into a master file, which every kind shares too, is :mod:`reduction.io.merge`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from reduction.errors import OutputError

from . import h5write

__all__ = ["PROGRAM", "open_readonly", "attr_value", "attr_text", "nx_group", "str_array",
           "now", "relative_name", "vds_source_name", "read_result", "hdf5_complete"]

T = TypeVar("T")

#: NXprocess/program and the master files' creator.
PROGRAM = "xreduce"


def open_readonly(path: Path | str) -> h5py.File:
    """Open a result file read-only, without HDF5 file locking (parallel filesystems, concurrent readers)."""
    try:
        return h5py.File(path, "r", locking=False)
    except TypeError:  # h5py built without the locking keyword
        return h5py.File(path, "r")


def attr_value(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def attr_text(obj: h5py.HLObject, name: str) -> str | None:
    """A text attribute of ``obj`` (e.g. ``NX_class``, ``units``), None when absent."""
    value = obj.attrs.get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return None if value is None else str(value)


def str_array(values: list[str]) -> np.ndarray:
    """Variable-length UTF-8 strings as one HDF5 dataset or attribute."""
    return np.array([str(v) for v in values], dtype=h5py.string_dtype())


def nx_group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    """A NeXus group whose children are listed in writing order."""
    group = h5write.group(parent, name)  # readers list children in writing order
    h5write.set_attrs(group, {"NX_class": nx_class})
    return group


def now() -> str:
    """The local time with its UTC offset (ISO 8601), as NeXus dates are written."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def relative_name(path: Path | str, folder: Path | str) -> str:
    """``path`` relative to ``folder``, with forward slashes: how a master file names its chunk files."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()


def vds_source_name(chunk: Path, master_dir: Path) -> str:
    """The chunk's path relative to the master's folder, as an HDF5 VDS source name."""
    return relative_name(chunk, master_dir).replace("%", "%%")  # HDF5 expands %b / %% in source file names


def read_result(path: Path | str, read: Callable[[h5py.File], T], what: str = "chunk file") -> T:
    """``read(file)`` on the result file ``path`` opened read-only; an OutputError of ``read`` passes,
    any other failure to read the file becomes an OutputError naming it."""
    try:
        with open_readonly(path) as f:
            return read(f)
    except OutputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise OutputError(f"cannot read {what} {path}: {exc}") from exc


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def hdf5_complete(path: Path | str) -> bool:
    """True when ``path`` is an HDF5 file at least as long as its superblock says, read from the
    superblock's first bytes (microseconds) without opening the file with HDF5 (a millisecond).

    It is the check HDF5 itself makes when opening a file (the stored end-of-file address against the
    file's size), so it catches a file truncated by a copy or a full disk, and anything that is not
    HDF5; not damage inside the file. Written for result files renamed into place once complete:
    such a file under its final name is whole unless it was damaged afterwards. A superblock after
    a user block, of an unknown version, or without an end-of-file address gives False.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < 16 or not head.startswith(_HDF5_SIGNATURE):
        return False
    version = head[8]
    if version in (0, 1):  # addresses after the fixed fields: base, free space, end of file, driver
        width, at, flags = head[13], 24 + 4 * version, 0
    elif version in (2, 3):  # base, superblock extension, end of file, root object header
        width, at, flags = head[9], 12, head[11]
    else:
        return False
    if width not in (4, 8) or flags & 0b101 or len(head) < at + 3 * width:  # flags: still open for writing
        return False
    address = "<I" if width == 4 else "<Q"
    (base,), (end,) = struct.unpack_from(address, head, at), struct.unpack_from(address, head, at + 2 * width)
    return end != (1 << 8 * width) - 1 and base + end <= size  # all ones: undefined address
