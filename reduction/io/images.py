"""Load the 2-D images a reduction needs besides frames: mask, dark, flat.

I/O at the edge: the science functions take arrays; this module turns a user's file into one
and names the file when it cannot. Supported: ``.npy``, HDF5 (``file.h5`` holding exactly one
2-D dataset, or ``file.h5::/path/to/dataset``), and EDF/TIFF through fabio when it is installed
(pyFAI's mask tools write EDF).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from reduction.errors import RawDataError

__all__ = ["load_image"]

_HDF5 = {".h5", ".hdf5", ".nxs", ".hdf"}


def load_image(spec: str | Path, *, what: str = "image", shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a 2-D image from ``spec`` (a path, or ``path::/dataset`` for HDF5).

    ``what`` ("mask", "dark", "flat") and ``shape`` (the detector's) make errors specific.
    """
    text = str(spec)
    path_text, _, inner = text.partition("::")
    path = Path(path_text)
    if not path.is_file():
        raise RawDataError(f"{what} file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            image = np.load(path, allow_pickle=False)
        elif suffix in _HDF5:
            image = _from_hdf5(path, inner, what)
        else:
            image = _from_fabio(path, what)
    except RawDataError:
        raise
    except Exception as exc:  # unreadable, truncated, wrong format
        raise RawDataError(f"cannot read {what} file {text}: {exc}") from exc
    image = np.asarray(image)
    if image.ndim != 2:
        raise RawDataError(f"{what} file {text} holds an array of shape {image.shape}, expected a 2-D image")
    if shape is not None and image.shape != tuple(shape):
        raise RawDataError(f"{what} file {text} has shape {image.shape}, but the detector is {tuple(shape)}")
    return image


def _from_hdf5(path: Path, inner: str, what: str) -> np.ndarray:
    with h5py.File(path, "r", locking=False) as handle:
        if inner:
            if inner not in handle or not isinstance(handle[inner], h5py.Dataset):
                raise RawDataError(f"{what} file {path} has no dataset {inner}")
            return handle[inner][()]
        found: list[str] = []
        handle.visititems(lambda name, obj: found.append(name)
                          if isinstance(obj, h5py.Dataset) and obj.ndim == 2 else None)
        if len(found) != 1:
            listing = ", ".join(found[:5]) or "none"
            raise RawDataError(f"{what} file {path} holds {len(found)} 2-D datasets ({listing}); "
                               f"name one as {path}::/path/to/dataset")
        return handle[found[0]][()]


def _from_fabio(path: Path, what: str) -> np.ndarray:
    try:
        import fabio  # optional: pyFAI's image library reads EDF, TIFF, CBF ...
    except ImportError:
        raise RawDataError(f"{what} file {path}: format {path.suffix or '(none)'} needs the 'fabio' package "
                           f"(pip install fabio), or convert it to .npy or HDF5") from None
    return fabio.open(str(path)).data
