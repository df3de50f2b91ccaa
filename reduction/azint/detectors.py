"""Area detectors: pixel size, shape, orientation and the gaps between modules.

Names and conventions follow pyFAI (its detector names, ``Detector_config`` keys and the
module/gap layout of Dectris detectors), so a PONI file written by pyFAI describes the same
pixels here. Gaps are part of the detector, so every integration masks them without the user
having to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reduction.errors import GeometryError

__all__ = ["Detector", "detector_from_name", "KNOWN_DETECTORS"]

#: pyFAI orientations (``Detector_config["orientation"]``): which pixel indices run backwards.
#: 3 (pyFAI's default) is the identity; 1 flips both axes, 2 flips dim1 (y), 4 flips dim2 (x).
_FLIPS: dict[int, tuple[bool, bool]] = {0: (False, False), 3: (False, False), 1: (True, True),
                                        2: (True, False), 4: (False, True)}


@dataclass(frozen=True)
class Detector:
    """A flat pixel detector.

    Parameters
    ----------
    name : pyFAI detector name ("Pilatus1M", "Eiger4M", ... or "Detector" for a generic one).
    pixel1, pixel2 : pixel size along dim1 (slow, y) and dim2 (fast, x), in metres.
    shape : (ny, nx) number of pixels.
    module_size, module_gap : module layout in pixels; gap rows/columns are masked.
    orientation : pyFAI orientation code 0-4 (3 = the default, no flip).
    """

    name: str
    pixel1: float
    pixel2: float
    shape: tuple[int, int]
    module_size: tuple[int, int] | None = None
    module_gap: tuple[int, int] | None = None
    orientation: int = 3

    def __post_init__(self) -> None:
        for key in ("pixel1", "pixel2"):
            value = getattr(self, key)
            if not np.isfinite(value) or value <= 0:
                raise GeometryError(f"detector {self.name!r}: {key} must be a positive size in metres, got {value!r}")
        if len(self.shape) != 2 or min(self.shape) <= 0:
            raise GeometryError(f"detector {self.name!r}: shape must be (ny, nx) > 0, got {self.shape!r}")
        if self.orientation not in _FLIPS:
            raise GeometryError(f"detector {self.name!r}: orientation must be one of 0-4, got {self.orientation!r}")

    @property
    def mask(self) -> np.ndarray:
        """(ny, nx) bool, True on the gaps between modules (a fresh array each call)."""
        mask = np.zeros(self.shape, dtype=bool)
        if self.module_size is not None and self.module_gap is not None:
            for axis in (0, 1):
                size, gap = self.module_size[axis], self.module_gap[axis]
                for start in range(size, self.shape[axis], size + gap):
                    index = [slice(None), slice(None)]
                    index[axis] = slice(start, start + gap)
                    mask[tuple(index)] = True
        return mask

    def pixel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions in metres of the pixel centres along dim1 (ny,) and dim2 (nx,), as pyFAI computes them."""
        flip1, flip2 = _FLIPS[self.orientation]
        ny, nx = self.shape
        i1 = np.arange(ny, dtype=np.float64)
        i2 = np.arange(nx, dtype=np.float64)
        if flip1:
            i1 = i1[::-1]
        if flip2:
            i2 = i2[::-1]
        return (i1 + 0.5) * self.pixel1, (i2 + 0.5) * self.pixel2

    def pixel_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions in metres of the pixel boundaries along dim1 (ny+1,) and dim2 (nx+1,).

        Edge ``i`` of dim1 is the lower boundary of pixel row ``i`` as stored in the frame; with
        a flipping orientation the physical positions run backwards, as in pyFAI.
        """
        flip1, flip2 = _FLIPS[self.orientation]
        ny, nx = self.shape
        e1 = np.arange(ny + 1, dtype=np.float64)
        e2 = np.arange(nx + 1, dtype=np.float64)
        if flip1:
            e1 = e1[::-1]
        if flip2:
            e2 = e2[::-1]
        return e1 * self.pixel1, e2 * self.pixel2

    def config(self) -> dict[str, Any]:
        """The ``Detector_config`` mapping pyFAI writes into PONI files (version 2.1)."""
        cfg: dict[str, Any] = {"pixel1": self.pixel1, "pixel2": self.pixel2}
        if self.name == "Detector":
            cfg["max_shape"] = list(self.shape)
        cfg["orientation"] = self.orientation
        return cfg


@dataclass(frozen=True)
class _Model:
    pixel: tuple[float, float]
    shape: tuple[int, int]
    module_size: tuple[int, int] | None = None
    module_gap: tuple[int, int] | None = None


_PILATUS = ((195, 487), (17, 7))
_EIGER = ((514, 1030), (37, 10))

#: Detectors known by name, with pyFAI's pixel sizes, shapes and module layouts.
KNOWN_DETECTORS: dict[str, _Model] = {
    "Pilatus100k": _Model((172e-6, 172e-6), (195, 487), *_PILATUS),
    "Pilatus300k": _Model((172e-6, 172e-6), (619, 487), *_PILATUS),
    "Pilatus1M": _Model((172e-6, 172e-6), (1043, 981), *_PILATUS),
    "Pilatus2M": _Model((172e-6, 172e-6), (1679, 1475), *_PILATUS),
    "Pilatus6M": _Model((172e-6, 172e-6), (2527, 2463), *_PILATUS),
    "Eiger1M": _Model((75e-6, 75e-6), (1065, 1030), *_EIGER),
    "Eiger4M": _Model((75e-6, 75e-6), (2167, 2070), *_EIGER),
    "Eiger9M": _Model((75e-6, 75e-6), (3269, 3110), *_EIGER),
    "Eiger16M": _Model((75e-6, 75e-6), (4371, 4150), *_EIGER),
}

# pyFAI accepts loose spellings ("pilatus_1m", "Pilatus 1M"): compare on a normalised key.
_ALIASES = {name.lower(): name for name in KNOWN_DETECTORS}


def _normalise(name: str) -> str:
    return name.lower().replace("_", "").replace(" ", "").replace("-", "")


def detector_from_name(name: str, config: dict[str, Any] | None = None) -> Detector:
    """Build a detector from its pyFAI name and optional ``Detector_config`` mapping.

    A generic ``"Detector"`` needs ``pixel1``, ``pixel2`` and ``max_shape`` in ``config``.
    Known detectors accept ``orientation`` (and pixel sizes equal to their own) in ``config``.

    Examples
    --------
    >>> detector_from_name("Pilatus1M").shape
    (1043, 981)
    """
    config = dict(config or {})
    orientation = int(config.pop("orientation", 3) or 3)
    key = _normalise(name)
    if key == "detector":
        missing = [k for k in ("pixel1", "pixel2", "max_shape") if config.get(k) is None]
        if missing:
            raise GeometryError(f"generic detector needs {', '.join(missing)} in its Detector_config")
        shape = tuple(int(v) for v in config["max_shape"])
        return Detector("Detector", float(config["pixel1"]), float(config["pixel2"]), shape,  # type: ignore[arg-type]
                        orientation=orientation)
    canonical = _ALIASES.get(key)
    if canonical is None:
        known = ", ".join(sorted(KNOWN_DETECTORS))
        raise GeometryError(f"unknown detector {name!r}; known: {known}, or 'Detector' with pixel1/pixel2/max_shape")
    model = KNOWN_DETECTORS[canonical]
    pixel1 = float(config.pop("pixel1", model.pixel[0]))
    pixel2 = float(config.pop("pixel2", model.pixel[1]))
    if not (np.isclose(pixel1, model.pixel[0]) and np.isclose(pixel2, model.pixel[1])):
        raise GeometryError(f"detector {canonical}: pixel size ({pixel1}, {pixel2}) differs from the "
                            f"model's {model.pixel}; use the generic 'Detector' for binned or custom pixels")
    max_shape = config.pop("max_shape", None)
    if max_shape is not None and tuple(int(v) for v in max_shape) != model.shape:
        raise GeometryError(f"detector {canonical}: max_shape {tuple(max_shape)} differs from {model.shape}")
    return Detector(canonical, model.pixel[0], model.pixel[1], model.shape, model.module_size,
                    model.module_gap, orientation)
