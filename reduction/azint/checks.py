"""Azimuthal-integration mistakes found before any work, from the config and the geometry alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from reduction.io.bliss import HC_KEV_ANGSTROM

from .geometry import Geometry

__all__ = ["radial_range_problem"]


def radial_range_problem(reduction: Mapping[str, Any], energy_kev: float | None) -> str | None:
    """Why ``radial_range`` would leave every bin empty (it lies wholly outside the radial values the
    detector covers, at the PONI's wavelength or else the scan's energy), or None. Unknowable without
    a wavelength for q units: None then (the step reports the missing wavelength)."""
    radial_range = reduction.get("radial_range")
    if not radial_range:
        return None
    low, high = (float(v) for v in radial_range)
    unit = str(reduction.get("unit"))
    geometry = Geometry.from_poni(reduction["poni"])
    if geometry.wavelength is None and unit.startswith("q"):
        if not energy_kev:
            return None
        geometry = replace(geometry, wavelength=HC_KEV_ANGSTROM / energy_kev * 1e-10)
    first, last = geometry.radial_extent(unit)
    if high > first and low < last:
        return None
    side = "below" if high <= first else "above"
    return (f"[{low:g}, {high:g}] {unit} lies wholly {side} the detector's range [{first:.5g}, {last:.5g}] "
            f"{unit} (PONI {reduction['poni']}): every bin would stay empty")
