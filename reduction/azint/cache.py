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
    """A directory of ``<key>.npz`` CSR matrices."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        """Where the matrix for ``key`` lives."""
        return self.directory / f"{key}.npz"

    def load(self, key: str) -> tuple[scipy.sparse.csr_array, list[float]] | None:
        """The cached matrix and its bin bounds, or None when absent, unreadable, corrupt or foreign."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                if str(npz["format"]) != _FORMAT:
                    raise ValueError(f"format {str(npz['format'])!r}, this version reads {_FORMAT!r}")
                if str(npz["key"]) != key:
                    raise ValueError("written for another key")
                data, indices, indptr, bounds = npz["data"], npz["indices"], npz["indptr"], npz["bounds"]
                shape = tuple(int(v) for v in npz["shape"])
                if int(npz["crc"]) != _crc(data, indices, indptr, bounds):
                    raise ValueError("checksum mismatch")
            matrix = scipy.sparse.csr_array((data, indices, indptr), shape=shape)
            matrix.check_format(full_check=False)
            return matrix, [float(b) for b in bounds]
        except Exception as exc:  # any damage means "rebuild", never "trust"
            log.warning("ignoring unusable matrix cache file %s (%s); rebuilding it", path, exc)
            return None

    def store(self, key: str, matrix: scipy.sparse.csr_array, bounds: list[float]) -> None:
        """Write ``matrix`` and its bin bounds (lo, hi[, azimuth lo, hi]) atomically.

        A cache that cannot be written only costs a rebuild later.
        """
        bounds_array = np.asarray(bounds, dtype=np.float64)
        try:
            with atomic_output(self.path(key)) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, format=_FORMAT, key=key, data=matrix.data, indices=matrix.indices,
                         indptr=matrix.indptr, shape=np.asarray(matrix.shape), bounds=bounds_array,
                         crc=_crc(matrix.data, matrix.indices, matrix.indptr, bounds_array))
        except OSError as exc:
            log.warning("cannot write matrix cache in %s (%s); continuing without it", self.directory, exc)
