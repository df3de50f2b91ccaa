"""Small HDF5/NeXus helpers every kind's chunk and master files use the same way.

Opening a result file for reading (without file locking), attribute values as Python values,
NeXus groups, string arrays, time stamps and the relative source names of virtual datasets. The
merge of chunk files into a master file, which every kind shares too, is :mod:`reduction.io.merge`.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["PROGRAM", "open_readonly", "attr_value", "attr_text", "nx_group", "str_array", "now", "vds_source_name"]

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
    group = parent.create_group(name, track_order=True)  # readers list children in writing order
    group.attrs["NX_class"] = nx_class
    return group


def now() -> str:
    """The local time with its UTC offset (ISO 8601), as NeXus dates are written."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def vds_source_name(chunk: Path, master_dir: Path) -> str:
    """The chunk's path relative to the master's folder, as an HDF5 VDS source name."""
    rel = os.path.relpath(os.path.abspath(chunk), os.path.abspath(master_dir))
    return Path(rel).as_posix().replace("%", "%%")  # HDF5 expands %b / %% in source file names
