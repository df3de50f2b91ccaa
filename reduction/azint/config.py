"""The config schemas of ``reduction=azint1d`` and ``reduction=azint2d``: every key, its type, default and rule.

``hpc`` registers them with Hydra and checks every value by the :class:`~reduction.step.KeyRule` of
its field (choices, positive, files ...), so a wrong value fails before anything runs, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from reduction.step import MISSING, ReductionConfig, key

from .pixels import SPLITTINGS
from .units import RADIAL_UNITS

__all__ = ["AzintConfig", "Azint1dConfig", "Azint2dConfig", "ENGINE_NAMES", "ERROR_MODELS"]

#: The engines (``reduction.engine``; ``auto`` picks OpenCL when a device works, else numpy).
ENGINE_NAMES = ("numpy", "opencl")
#: ``reduction.error_model``: Poisson variance propagated, or none.
ERROR_MODELS = (None, "poisson")
_DEVICE_HINT = ("must be auto, cpu, gpu or 'platform:device' indices such as '0:1' (see `xreduce selftest` for "
                "the devices found here)")


@dataclass
class AzintConfig(ReductionConfig):
    """Azimuthal integration keys shared by ``azint1d`` and ``azint2d``."""

    poni: str = key(MISSING, input_file=True, example="/path/to/geometry.poni")   # pyFAI PONI file
    mask: str | None = key(None, input_file=True)      # .npy, or "file.h5::/dataset"; nonzero = masked
    dark: str | None = key(None, input_file=True)
    flat: str | None = key(None, input_file=True)
    unit: str = key("q_nm^-1", choices=tuple(RADIAL_UNITS))
    radial_range: list[float] | None = key(None, pair=True)     # [min, max] in `unit`
    azimuth_range: list[float] | None = key(None, pair=True)    # [min, max] in degrees
    splitting: str = key("bbox", choices=SPLITTINGS)
    polarization_factor: float | None = key(None, between=(-1.0, 1.0),   # null: no polarisation correction
                                            hint="or null for no polarisation correction")
    solid_angle: bool = True
    error_model: str | None = key("poisson", choices=ERROR_MODELS)      # null: no variance propagated
    engine: str = key("auto", choices=("auto", *ENGINE_NAMES), hashed=False)   # engines agree within float32
    device: str = key("auto", pattern=r"auto|cpu|gpu|\d+:\d+", hint=_DEVICE_HINT, hashed=False)  # OpenCL device


#: More bins than this along an axis only cost memory (a detector's diagonal is ~10^4 pixels): refused up
#: front instead of every chunk failing for want of memory.
MAX_BINS, MAX_AZIMUTHAL_BINS = 100_000, 36_000
_BINS_HINT = "more radial bins than a detector has pixels along its diagonal only cost memory"


@dataclass
class Azint1dConfig(AzintConfig):
    """``reduction=azint1d``: one pattern I(radial) per frame."""

    kind: str = "azint1d"
    npt: int = key(1000, positive=True, between=(1, MAX_BINS), hint=_BINS_HINT)


@dataclass
class Azint2dConfig(AzintConfig):
    """``reduction=azint2d``: one cake I(χ, radial) per frame."""

    kind: str = "azint2d"
    unit: str = key("2th_deg", choices=tuple(RADIAL_UNITS))
    npt_rad: int = key(500, positive=True, between=(1, MAX_BINS), hint=_BINS_HINT)
    npt_azim: int = key(360, positive=True, between=(1, MAX_AZIMUTHAL_BINS), hint="0.01° bins at the finest")
