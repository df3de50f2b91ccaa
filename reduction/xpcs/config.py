"""The config schema of ``reduction=xpcs`` (docs/config.md, docs/xpcs.md).

``hpc`` checks the top-level keys by their :class:`~reduction.step.KeyRule`; the nested groups
(``dynamic_q``, ``phi``, ``multitau``, ``twotime``) are typed by Hydra and their values checked when
the step is built (:func:`reduction.xpcs.partition.partition_from_config`), naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reduction.azint.config import _DEVICE_HINT
from reduction.step import MISSING, ReductionConfig, key

__all__ = ["XpcsConfig", "DynamicQ", "PhiSectors", "MultiTauConfig", "TwoTimeConfig", "Q_UNITS", "ENGINES"]

#: Units of ``dynamic_q.unit`` (pyFAI's names).
Q_UNITS = ("q_nm^-1", "q_A^-1")
#: ``reduction.engine``: the correlator, float64 sums on both (``auto``: OpenCL where a device works).
ENGINES = ("auto", "numpy", "opencl")


@dataclass
class DynamicQ:
    """``dynamic_q``: the dynamic q rings g2 is reported for."""

    npt: int = 10
    range: list[float] | None = None  # [min, max] in `unit`; null: the valid pixels' range
    unit: str = "q_nm^-1"


@dataclass
class PhiSectors:
    """``phi``: azimuthal sectors cutting every ring (1: whole rings)."""

    npt: int = 1
    range: list[float] | None = None  # [min, max] degrees of χ; null: (-180, 180]


@dataclass
class MultiTauConfig:
    """``multitau``: dpl delays per level (lags 1…2·dpl, then x·2^L for x = dpl+1…2·dpl)."""

    dpl: int = 4


@dataclass
class TwoTimeConfig:
    """``twotime``: the two-time matrix C(t1, t2) of some dynamic bins (upper triangle)."""

    enabled: bool = False
    q_bins: list[int] = field(default_factory=lambda: [1])  # dynamic bins, 1-based (as in the roi maps)
    frames: list[int] | None = None  # [start, stop) of the scan's frames; null: all


@dataclass
class XpcsConfig(ReductionConfig):
    """``reduction=xpcs``: multi-tau g2(q, τ) and two-time correlation of every scan."""

    kind: str = "xpcs"
    poni: str = key(MISSING, input_file=True, example="/path/to/geometry.poni")  # q per pixel, beam centre
    mask: str | None = key(None, input_file=True)  # .npy or "file.h5::/dataset"; nonzero = masked
    # an APS-style q partition (/qmap/dynamic_roi_map, /qmap/static_roi_map, /qmap/mask): replaces
    # dynamic_q, static_per_dynamic and phi
    qmap: str | None = key(None, input_file=True)
    dynamic_q: DynamicQ = field(default_factory=DynamicQ)
    static_per_dynamic: int = key(4, positive=True, between=(1, 1000))  # static sub-rings per dynamic ring
    phi: PhiSectors = field(default_factory=PhiSectors)
    multitau: MultiTauConfig = field(default_factory=MultiTauConfig)
    twotime: TwoTimeConfig = field(default_factory=TwoTimeConfig)
    # seconds per frame; null: the scan's detector acquisition parameters, else delays stay in frames
    frame_time: float | None = key(None, between=(1e-12, 1e6), hint="seconds per frame, or null")
    engine: str = key("auto", choices=ENGINES, hashed=False)  # same sums on both (docs/xpcs.md)
    device: str = key("auto", pattern=r"auto|cpu|gpu|\d+:\d+", hint=_DEVICE_HINT, hashed=False)  # OpenCL device
