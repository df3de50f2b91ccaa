"""Read and write pyFAI PONI files (versions 1, 2, 2.1 and 3 without parallax).

A PONI file is ``Key: value`` lines with ``#`` comments. Version 1 names the detector and its
pixel sizes; version 2 adds ``Detector_config`` (JSON), 2.1 its orientation, 3 the parallax
flag. Parsing is pure (text in, mapping out) so that errors can name the file and the key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from reduction.errors import GeometryError

__all__ = ["read_poni", "read_poni_text", "parse_poni", "format_poni"]

_NUMBERS = ("distance", "poni1", "poni2", "rot1", "rot2", "rot3")


def read_poni_text(path: str | Path) -> str:
    """The text of the PONI file at ``path`` (GeometryError naming it when it cannot be read)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise GeometryError(f"cannot read PONI file {path}: {exc.strerror or exc}") from exc


def read_poni(path: str | Path) -> dict[str, Any]:
    """Parse the PONI file at ``path``; see :func:`parse_poni` for the returned mapping."""
    return parse_poni(read_poni_text(path), source=str(path))


def _number(raw: dict[str, str], key: str, source: str, *, required: bool = True) -> float | None:
    if key not in raw:
        if required:
            raise GeometryError(f"PONI file {source}: missing key {key.capitalize()!r}")
        return None
    text = raw[key]
    try:
        value = float(text)
    except ValueError:
        raise GeometryError(f"PONI file {source}: {key.capitalize()} = {text!r} is not a number") from None
    if not math.isfinite(value):
        raise GeometryError(f"PONI file {source}: {key.capitalize()} = {text!r} is not finite")
    return value


def parse_poni(text: str, source: str = "<string>") -> dict[str, Any]:
    """Parse PONI text into ``{dist, poni1, poni2, rot1, rot2, rot3, wavelength, detector, detector_config}``.

    Keys are case-insensitive, the last occurrence wins (as in pyFAI). ``wavelength`` is None
    when absent. Raises :class:`GeometryError` naming ``source`` and the key at fault.
    """
    raw: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if ":" not in stripped:
            raise GeometryError(f"PONI file {source}, line {number}: expected 'Key: value', got {stripped!r}")
        key, value = stripped.split(":", 1)
        raw[key.strip().lower()] = value.strip()

    version = _number(raw, "poni_version", source, required=False) or 1.0
    if version > 3:
        raise GeometryError(f"PONI file {source}: poni_version {version} is newer than the supported 3")
    if raw.get("parallax", "false").lower() == "true":
        raise GeometryError(f"PONI file {source}: parallax correction is not supported (Parallax: True)")
    if raw.get("splinefile", "none").lower() not in ("none", ""):
        raise GeometryError(f"PONI file {source}: spline distortion files are not supported "
                            f"(SplineFile: {raw['splinefile']})")

    result: dict[str, Any] = {"dist": _number(raw, "distance", source)}
    for key in _NUMBERS[1:]:
        result[key] = _number(raw, key, source)
    result["wavelength"] = _number(raw, "wavelength", source, required=False)
    if result["dist"] <= 0:
        raise GeometryError(f"PONI file {source}: Distance = {raw['distance']!r} must be positive (metres)")
    if result["wavelength"] is not None and result["wavelength"] <= 0:
        raise GeometryError(f"PONI file {source}: Wavelength = {raw['wavelength']!r} must be positive (metres)")

    config: dict[str, Any] = {}
    if "detector_config" in raw:
        try:
            config = json.loads(raw["detector_config"])
        except json.JSONDecodeError as exc:
            raise GeometryError(f"PONI file {source}: Detector_config is not valid JSON: {exc.msg}") from None
        if not isinstance(config, dict):
            raise GeometryError(f"PONI file {source}: Detector_config must be a JSON object")
    elif version >= 2:
        raise GeometryError(f"PONI file {source}: poni_version {version} needs a 'Detector_config' line")
    for old, new in (("pixelsize1", "pixel1"), ("pixelsize2", "pixel2")):
        if old in raw:
            config[new] = _number(raw, old, source)
    result["detector"] = raw.get("detector", "Detector")
    result["detector_config"] = config
    return result


def format_poni(values: dict[str, Any]) -> str:
    """Format a mapping as returned by :func:`parse_poni` as PONI version 2.1 text."""
    lines = [
        "# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis",
        "# Written by xreduce",
        "poni_version: 2.1",
        f"Detector: {values['detector']}",
        f"Detector_config: {json.dumps(values['detector_config'])}",
        f"Distance: {values['dist']!r}",
        f"Poni1: {values['poni1']!r}",
        f"Poni2: {values['poni2']!r}",
        f"Rot1: {values['rot1']!r}",
        f"Rot2: {values['rot2']!r}",
        f"Rot3: {values['rot3']!r}",
    ]
    if values.get("wavelength") is not None:
        lines.append(f"Wavelength: {values['wavelength']!r}")
    return "\n".join(lines) + "\n"
