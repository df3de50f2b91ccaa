"""On-disk cache of integration matrices, keyed by a hash of everything that shapes them.

Building a matrix for a 4-megapixel detector takes seconds; a thousand array tasks must not
each rebuild it. Files are written under a temporary name and renamed into place, carry a
format tag and a CRC of their arrays, and a file that fails any check is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from reduction.io.files import atomic_output

__all__ = ["MatrixCache", "default_cache_dir", "spec_key"]

log = logging.getLogger(__name__)

_FORMAT = "xreduce-csr-2"


def default_cache_dir() -> Path:
    """``$XREDUCE_CACHE_DIR``, else ``$XDG_CACHE_HOME/xreduce``, else ``~/.cache/xreduce``."""
    if os.environ.get("XREDUCE_CACHE_DIR"):
        return Path(os.environ["XREDUCE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xreduce"


def spec_key(spec: dict[str, Any]) -> str:
    """A stable hex key for a JSON-able description of a matrix."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _crc(*arrays: np.ndarray) -> int:
    crc = 0
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array).view(np.uint8).data, crc)
    return crc


class MatrixCache:
    """A directory of ``<key>.npz`` CSR matrices, and of what engines derive from them
    (``<key>.<what>.npz``, e.g. the OpenCL engine's tile layout), each checked when read."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path(self, key: str, what: str = "") -> Path:
        """Where the matrix for ``key`` lives (or, with ``what``, something derived from it)."""
        return self.directory / (f"{key}.{what}.npz" if what else f"{key}.npz")

    def load(self, key: str) -> tuple[scipy.sparse.csr_array, list[float]] | None:
        """The cached matrix and its bin bounds, or None when absent, unreadable, corrupt or foreign."""
        arrays = self.load_arrays(key, "", ("data", "indices", "indptr", "bounds"), ("shape",))
        if arrays is None:
            return None
        try:
            matrix = scipy.sparse.csr_array((arrays["data"], arrays["indices"], arrays["indptr"]),
                                            shape=tuple(int(v) for v in arrays["shape"]))
            matrix.check_format(full_check=False)
        except Exception as exc:  # any damage means "rebuild", never "trust"
            log.warning("ignoring unusable matrix cache file %s (%s); rebuilding it", self.path(key), exc)
            return None
        return matrix, [float(b) for b in arrays["bounds"]]

    def store(self, key: str, matrix: scipy.sparse.csr_array, bounds: list[float]) -> None:
        """Write ``matrix`` and its bin bounds (lo, hi[, azimuth lo, hi]) atomically.

        A cache that cannot be written only costs a rebuild later.
        """
        self.store_arrays(key, "", {"data": matrix.data, "indices": matrix.indices, "indptr": matrix.indptr,
                                    "bounds": np.asarray(bounds, dtype=np.float64)},
                          {"shape": np.asarray(matrix.shape)})

    def load_arrays(self, key: str, what: str, checked: tuple[str, ...],
                    extra: tuple[str, ...] = ()) -> dict[str, np.ndarray] | None:
        """The arrays stored for ``key`` (and ``what``), or None when absent or not to be trusted
        (another format or key, a checksum over the ``checked`` arrays that does not match)."""
        path = self.path(key, what)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                if str(npz["format"]) != _FORMAT:
                    raise ValueError(f"format {str(npz['format'])!r}, this version reads {_FORMAT!r}")
                if str(npz["key"]) != key:
                    raise ValueError("written for another key")
                arrays = {name: npz[name] for name in (*checked, *extra)}
                if int(npz["crc"]) != _crc(*(arrays[name] for name in checked)):
                    raise ValueError("checksum mismatch")
            return arrays
        except Exception as exc:  # any damage means "rebuild", never "trust"
            log.warning("ignoring unusable matrix cache file %s (%s); rebuilding it", path, exc)
            return None

    def store_arrays(self, key: str, what: str, checked: dict[str, np.ndarray],
                     extra: dict[str, np.ndarray] | None = None) -> None:
        """Write arrays for ``key`` (and ``what``) atomically, with a checksum over ``checked``
        (in their order); a cache that cannot be written only costs a rebuild later."""
        contents: dict[str, Any] = {"format": _FORMAT, "key": key, **checked, **(extra or {}),
                                    "crc": _crc(*checked.values())}
        try:
            with atomic_output(self.path(key, what)) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **contents)
        except OSError as exc:
            log.warning("cannot write matrix cache in %s (%s); continuing without it", self.directory, exc)
