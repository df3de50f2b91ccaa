"""Detector geometry in pyFAI's convention: where each pixel is, and what it sees.

The six PONI parameters (dist, poni1, poni2, rot1, rot2, rot3) place a flat detector in the
lab; every array here (2θ, χ, q, r at pixel centres and corners, solid angle, polarisation) is
a pure function of them, reproducing pyFAI's formulas so that results agree with pyFAI.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reduction.errors import GeometryError
from reduction.io.poni import format_poni, parse_poni, read_poni

from .detectors import Detector, detector_from_name
from .splitting import PixelPositions
from .units import radial_unit

__all__ = ["Geometry"]


@dataclass(frozen=True)
class Geometry:
    """Position of a flat detector relative to the sample and beam (pyFAI's PONI convention).

    Parameters
    ----------
    dist : sample to point-of-normal-incidence distance, metres.
    poni1, poni2 : PONI coordinates on the detector along dim1 (y) and dim2 (x), metres.
    rot1, rot2, rot3 : detector rotations, radians (pyFAI's definition and order).
    wavelength : metres; needed for q units.
    detector : a :class:`~reduction.azint.detectors.Detector` or a pyFAI detector name.

    Examples
    --------
    >>> geo = Geometry(dist=0.3, poni1=0.09, poni2=0.08, wavelength=1e-10, detector="Pilatus1M")
    >>> geo.shape
    (1043, 981)
    """

    dist: float
    poni1: float
    poni2: float
    rot1: float = 0.0
    rot2: float = 0.0
    rot3: float = 0.0
    wavelength: float | None = None
    detector: Detector = field(default="Detector")  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if isinstance(self.detector, str):
            object.__setattr__(self, "detector", detector_from_name(self.detector))
        if not isinstance(self.detector, Detector):
            raise GeometryError(f"detector must be a Detector or a detector name, got {self.detector!r}")
        for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3"):
            value = getattr(self, key)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise GeometryError(f"geometry parameter {key} = {value!r} is not a number") from None
            if not np.isfinite(value):
                raise GeometryError(f"geometry parameter {key} = {value!r} is not finite")
            object.__setattr__(self, key, value)
        if self.dist <= 0:
            raise GeometryError(f"geometry parameter dist = {self.dist!r} must be positive (metres)")
        if self.wavelength is not None:
            wavelength = float(self.wavelength)
            if not np.isfinite(wavelength) or wavelength <= 0:
                raise GeometryError(f"wavelength = {self.wavelength!r} must be a positive length in metres")
            object.__setattr__(self, "wavelength", wavelength)

    # -- construction and persistence ------------------------------------------------------
    @classmethod
    def from_poni(cls, path: str | Path, text: str | None = None) -> Geometry:
        """Read a pyFAI PONI file (version 1, 2, 2.1 or 3 without parallax); ``text``: its content
        when the caller has read it already (then the file is not read again)."""
        values = read_poni(path) if text is None else parse_poni(text, source=str(path))
        try:
            detector = detector_from_name(values["detector"], values["detector_config"])
        except GeometryError as exc:
            raise GeometryError(f"PONI file {path}: {exc}") from None
        return cls(values["dist"], values["poni1"], values["poni2"], values["rot1"], values["rot2"],
                   values["rot3"], values["wavelength"], detector)

    def as_dict(self) -> dict[str, Any]:
        """The PONI parameters as a plain mapping (as :func:`reduction.io.poni.parse_poni` returns)."""
        return {"dist": self.dist, "poni1": self.poni1, "poni2": self.poni2, "rot1": self.rot1,
                "rot2": self.rot2, "rot3": self.rot3, "wavelength": self.wavelength,
                "detector": self.detector.name, "detector_config": self.detector.config()}

    def to_poni(self) -> str:
        """This geometry as PONI 2.1 text, readable by pyFAI."""
        return format_poni(self.as_dict())

    def key(self) -> str:
        """A stable hash of everything that decides pixel positions (for on-disk caches)."""
        text = json.dumps(self.as_dict() | {"shape": list(self.shape)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the detector."""
        return self.detector.shape

    # -- positions -------------------------------------------------------------------------
    def _rotation(self) -> np.ndarray:
        c1, c2, c3 = np.cos([self.rot1, self.rot2, self.rot3])
        s1, s2, s3 = np.sin([self.rot1, self.rot2, self.rot3])
        r1 = np.array([[1.0, 0.0, 0.0], [0.0, c1, s1], [0.0, -s1, c1]])
        r2 = np.array([[c2, 0.0, -s2], [0.0, 1.0, 0.0], [s2, 0.0, c2]])
        r3 = np.array([[c3, -s3, 0.0], [s3, c3, 0.0], [0.0, 0.0, 1.0]])
        return r3 @ r2 @ r1

    def _lab(self, corners: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lab coordinates (t1, t2, t3) in metres of pixel centres (ny, nx) or corners (ny+1, nx+1).

        t3 runs along the beam, t1/t2 across it (pyFAI's calc_pos_zyx).
        """
        p1, p2 = self.detector.pixel_edges() if corners else self.detector.pixel_centres()
        d1 = (p1 - self.poni1)[:, None]
        d2 = (p2 - self.poni2)[None, :]
        m = self._rotation()
        t1 = m[0, 0] * d1 + m[0, 1] * d2 + m[0, 2] * self.dist
        t2 = m[1, 0] * d1 + m[1, 1] * d2 + m[1, 2] * self.dist
        t3 = m[2, 0] * d1 + m[2, 1] * d2 + m[2, 2] * self.dist
        return t1, t2, t3

    def twotheta(self) -> np.ndarray:
        """(ny, nx) scattering angle 2θ in radians at pixel centres."""
        return radial_unit("2th_rad").values(*self._lab(False), self.wavelength)

    def chi(self) -> np.ndarray:
        """(ny, nx) azimuthal angle χ in radians, in (-π, π], at pixel centres."""
        t1, t2, _ = self._lab(False)
        return np.arctan2(t1, t2)

    def radial(self, unit: str) -> np.ndarray:
        """(ny, nx) radial value at pixel centres in ``unit`` (scaled, as displayed)."""
        u = radial_unit(unit)
        return u.values(*self._lab(False), self.wavelength) * u.scale

    def radial_extent(self, unit: str) -> tuple[float, float]:
        """(min, max) radial value in ``unit`` (scaled) over the pixels' corners: what any bin range
        must overlap to receive signal."""
        u = radial_unit(unit)
        values = u.values(*self._lab(True), self.wavelength) * u.scale
        return float(np.nanmin(values)), float(np.nanmax(values))

    def solid_angle(self) -> np.ndarray:
        """(ny, nx) relative solid angle cos³(incidence), 1 at the PONI (pyFAI's solidAngleArray)."""
        p1, p2 = self.detector.pixel_centres()
        d1 = (p1 - self.poni1)[:, None]
        d2 = (p2 - self.poni2)[None, :]
        cos_incidence = self.dist / np.sqrt(self.dist * self.dist + (d1 * d1 + d2 * d2))
        return cos_incidence**3

    def polarization(self, factor: float, axis_offset: float = 0.0) -> np.ndarray:
        """(ny, nx) polarisation correction for ``factor`` = (Ih-Iv)/(Ih+Iv), pyFAI's formula.

        0 is unpolarised/circular, 1 linear horizontal (synchrotron), -1 linear vertical.
        """
        if not -1.0 <= factor <= 1.0:
            raise GeometryError(f"polarization_factor = {factor!r} must lie in [-1, 1]")
        cos2_tth = np.cos(self.twotheta()) ** 2
        return 0.5 * (1.0 + cos2_tth - factor * np.cos(2.0 * (self.chi() + axis_offset)) * (1.0 - cos2_tth))

    def radial_positions(self, unit: str) -> PixelPositions:
        """Radial value (internal unit: see :mod:`reduction.azint.units`) at every pixel centre and corner."""
        u = radial_unit(unit)
        centre = u.values(*self._lab(False), self.wavelength).ravel()
        grid = u.values(*self._lab(True), self.wavelength)
        return PixelPositions(centre, _corners(grid))

    def azimuth_positions(self) -> PixelPositions:
        """χ in radians, (-π, π], at every pixel centre and corner."""
        t1, t2, _ = self._lab(False)
        c1, c2, _ = self._lab(True)
        return PixelPositions(np.arctan2(t1, t2).ravel(), _corners(np.arctan2(c1, c2)))


def _corners(grid: np.ndarray) -> np.ndarray:
    """(ny+1, nx+1) corner grid → (ny*nx, 4) per-pixel corners in pyFAI's A, B, C, D order.

    Values are rounded to float32 (and returned as float64) because pyFAI stores corner arrays
    in float32: pixel splitting then cuts pixels at exactly the same places as pyFAI.
    """
    grid = grid.astype(np.float32).astype(np.float64)
    ny, nx = grid.shape[0] - 1, grid.shape[1] - 1
    out = np.empty((ny, nx, 4), dtype=np.float64)
    out[..., 0] = grid[:-1, :-1]
    out[..., 1] = grid[1:, :-1]
    out[..., 2] = grid[1:, 1:]
    out[..., 3] = grid[:-1, 1:]
    return out.reshape(ny * nx, 4)
