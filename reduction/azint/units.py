"""Radial units, with pyFAI's names and its internal representation.

Bins are built in the *internal* unit (2θ in radians, q in nm⁻¹, r in metres) and reported
after multiplying by ``scale``, exactly as pyFAI does, so bin centres agree with pyFAI's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from reduction.errors import IntegrationError

__all__ = ["RadialUnit", "RADIAL_UNITS", "radial_unit"]

# The radial value of a point from its lab coordinates (t1, t2 across the beam, t3 along it,
# metres) and the wavelength (metres).
_Formula = Callable[[np.ndarray, np.ndarray, np.ndarray, "float | None"], np.ndarray]


def _tth(t1: np.ndarray, t2: np.ndarray, t3: np.ndarray, wavelength: float | None) -> np.ndarray:
    return np.arctan2(np.sqrt(t1 * t1 + t2 * t2), t3)


def _q_nm(t1: np.ndarray, t2: np.ndarray, t3: np.ndarray, wavelength: float | None) -> np.ndarray:
    if wavelength is None:
        raise IntegrationError("unit q needs a wavelength: set Wavelength in the PONI file or Geometry(wavelength=...)")
    return (4.0e-9 * np.pi / wavelength) * np.sin(0.5 * _tth(t1, t2, t3, wavelength))


def _r(t1: np.ndarray, t2: np.ndarray, t3: np.ndarray, wavelength: float | None) -> np.ndarray:
    return np.sqrt(t1 * t1 + t2 * t2)


@dataclass(frozen=True)
class RadialUnit:
    """A radial unit: its name, the internal quantity it scales, and the scale factor."""

    name: str
    label: str
    scale: float
    formula: _Formula

    def values(self, t1: np.ndarray, t2: np.ndarray, t3: np.ndarray, wavelength: float | None) -> np.ndarray:
        """Internal-unit values of points at lab coordinates (t1, t2, t3)."""
        return self.formula(t1, t2, t3, wavelength)


RADIAL_UNITS: dict[str, RadialUnit] = {
    "q_nm^-1": RadialUnit("q_nm^-1", "q (nm⁻¹)", 1.0, _q_nm),
    "q_A^-1": RadialUnit("q_A^-1", "q (Å⁻¹)", 0.1, _q_nm),
    "2th_deg": RadialUnit("2th_deg", "2θ (°)", 180.0 / np.pi, _tth),
    "2th_rad": RadialUnit("2th_rad", "2θ (rad)", 1.0, _tth),
    "r_mm": RadialUnit("r_mm", "r (mm)", 1000.0, _r),
}


def radial_unit(name: str) -> RadialUnit:
    """Look up a radial unit by its pyFAI name; raise IntegrationError listing the known ones."""
    try:
        return RADIAL_UNITS[name]
    except (KeyError, TypeError):
        raise IntegrationError(f"unknown unit {name!r}; expected one of {', '.join(RADIAL_UNITS)}") from None


def r_mm_problem(unit: str, rot1: float, rot2: float) -> str | None:
    """Why results in ``unit`` cannot be written as NXazint for this tilt, or None when they can.

    NXazint carries a q or 2θ axis; r (mm from the beam axis) maps onto 2θ = atan(r / dist) only for
    an untilted detector (rot1 = rot2 = 0), where every pixel lies at the distance ``dist`` along the beam.
    """
    if unit != "r_mm" or (abs(rot1) <= 1e-9 and abs(rot2) <= 1e-9):
        return None
    return (f"unit r_mm needs an untilted detector (rot1={rot1}, rot2={rot2}; both must be 0): NXazint results "
            "carry a q or 2θ axis, and r maps onto 2θ only without tilt; use 2th_deg or q_nm^-1")
