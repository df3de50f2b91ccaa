"""The q partition of the detector: dynamic bins (g2 is reported per dynamic bin) made of static
bins (the intensity is normalised per static bin), from the PONI or from an APS-style qmap file.

Static sub-rings inside each dynamic ring take out the variation of the mean intensity across a
ring, which biases g2's baseline when a ring is normalised as a whole. Each static bin lies in
exactly one dynamic bin. Bins are 1-based in the maps (0 = pixel unused), 0-based in the arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reduction.azint.geometry import Geometry
from reduction.errors import IntegrationError, RawDataError
from reduction.io.nexus import open_readonly

from .config import Q_UNITS

__all__ = ["QPartition", "partition_from_geometry", "partition_from_qmap", "partition_from_config"]


@dataclass(frozen=True)
class QPartition:
    """Dynamic and static roi maps (ny, nx), 1-based, 0 = unused, and their q (and φ) values."""

    dynamic_map: np.ndarray
    static_map: np.ndarray
    dynamic_q: np.ndarray  # (D,) in `unit`
    static_q: np.ndarray  # (S,)
    unit: str
    dynamic_phi: np.ndarray | None = None  # (D,) degrees, sector centres

    @property
    def n_dynamic(self) -> int:
        return len(self.dynamic_q)

    @property
    def n_static(self) -> int:
        return len(self.static_q)

    @property
    def pixels(self) -> np.ndarray:
        """Flat indices of the pixels that take part (in a static bin), ascending."""
        return np.flatnonzero(self.static_map.ravel() > 0)

    @property
    def static_index(self) -> np.ndarray:
        """(P,) 0-based static bin of each pixel of :attr:`pixels`."""
        return self.static_map.ravel()[self.pixels].astype(np.int64) - 1

    @property
    def static_to_dynamic(self) -> np.ndarray:
        """(S,) 0-based dynamic bin of each static bin, −1 for an empty static bin."""
        out = np.full(self.n_static, -1, dtype=np.int64)
        pix = self.pixels
        out[self.static_map.ravel()[pix] - 1] = self.dynamic_map.ravel()[pix] - 1
        return out

    def key(self) -> str:
        """A hash of the maps (provenance)."""
        digest = hashlib.sha256(self.dynamic_map.astype(np.int32).tobytes())
        digest.update(self.static_map.astype(np.int32).tobytes())
        return digest.hexdigest()[:16]


def _edges(lo: float, hi: float, n: int) -> np.ndarray:
    return np.linspace(lo, hi, n + 1)


def partition_from_geometry(geometry: Geometry, *, npt: int, q_range: tuple[float, float] | None, unit: str,
                            static_per_dynamic: int, phi_npt: int = 1, phi_range: tuple[float, float] | None = None,
                            mask: np.ndarray | None = None) -> QPartition:
    """``npt`` rings of equal width in q (× ``phi_npt`` sectors), each cut into ``static_per_dynamic``
    sub-rings; masked pixels and the detector's gaps are left out. Dynamic bin of ring r, sector a:
    ``r·phi_npt + a + 1``; static: ``(r·static_per_dynamic + sub)·phi_npt + a + 1``."""
    if unit not in Q_UNITS:
        raise IntegrationError(f"reduction.dynamic_q.unit={unit!r} is not one of {', '.join(Q_UNITS)}")
    if npt < 1 or static_per_dynamic < 1 or phi_npt < 1:
        raise IntegrationError(f"reduction.dynamic_q.npt={npt}, static_per_dynamic={static_per_dynamic} and "
                               f"phi.npt={phi_npt} must be positive")
    q = geometry.radial(unit)
    valid = ~geometry.detector.mask
    if mask is not None:
        valid &= mask == 0
    if not valid.any():
        raise IntegrationError("the mask and the detector's gaps leave no pixel for the q partition")
    lo, hi = q_range if q_range is not None else (float(q[valid].min()), float(np.nextafter(q[valid].max(), np.inf)))
    if not lo < hi:
        raise IntegrationError(f"reduction.dynamic_q.range=[{lo}, {hi}] must be [min, max] with min < max")
    fine = _edges(lo, hi, npt * static_per_dynamic)
    sub = np.searchsorted(fine, q, side="right") - 1  # 0 … npt·spd − 1 inside the range
    inside = valid & (q >= lo) & (q < hi) & (sub >= 0) & (sub < npt * static_per_dynamic)
    chi = np.degrees(geometry.chi())
    plo, phi_hi = phi_range if phi_range is not None else (-180.0, 180.0 + 1e-9)
    if not plo < phi_hi:
        raise IntegrationError(f"reduction.phi.range=[{plo}, {phi_hi}] must be [min, max] with min < max")
    sector = np.floor((chi - plo) / (phi_hi - plo) * phi_npt).astype(np.int64)
    inside &= (chi >= plo) & (chi < phi_hi) & (sector >= 0) & (sector < phi_npt)
    ring = sub // static_per_dynamic
    dynamic_map = np.where(inside, ring * phi_npt + sector + 1, 0).astype(np.int32)
    static_map = np.where(inside, sub * phi_npt + sector + 1, 0).astype(np.int32)
    ring_q = (_edges(lo, hi, npt)[:-1] + _edges(lo, hi, npt)[1:]) / 2
    sub_q = (fine[:-1] + fine[1:]) / 2
    phi_edges = _edges(plo, phi_hi, phi_npt)
    phi_c = (phi_edges[:-1] + phi_edges[1:]) / 2
    return QPartition(dynamic_map, static_map, np.repeat(ring_q, phi_npt), np.repeat(sub_q, phi_npt), unit,
                      np.tile(phi_c, npt) if phi_npt > 1 else None)


def partition_from_qmap(path: str, geometry: Geometry, unit: str = "q_nm^-1",
                        mask: np.ndarray | None = None) -> QPartition:
    """An APS-style qmap file: ``/qmap/dynamic_roi_map`` and ``/qmap/static_roi_map`` (1-based, 0 =
    unused) and an optional ``/qmap/mask`` (nonzero = pixel used). Bin q values: the mean q (from the
    PONI) of each bin's pixels. Raises RawDataError naming the file for a map that does not fit."""
    try:
        with open_readonly(path) as f:
            maps = {}
            for name in ("dynamic_roi_map", "static_roi_map"):
                if f"qmap/{name}" not in f:
                    raise RawDataError(f"qmap file {path} has no /qmap/{name}")
                maps[name] = np.asarray(f[f"qmap/{name}"][()]).astype(np.int64)
            used = np.asarray(f["qmap/mask"][()]) != 0 if "qmap/mask" in f else None
    except OSError as exc:
        raise RawDataError(f"cannot read qmap file {path}: {exc}") from exc
    dyn, sta = maps["dynamic_roi_map"], maps["static_roi_map"]
    for name, m in maps.items():
        if m.shape != geometry.shape:
            raise RawDataError(f"qmap file {path}: /qmap/{name} has shape {m.shape}, the detector is {geometry.shape}")
        if m.min() < 0:
            raise RawDataError(f"qmap file {path}: /qmap/{name} has negative bins")
    if used is not None and used.shape != geometry.shape:
        raise RawDataError(f"qmap file {path}: /qmap/mask has shape {used.shape}, the detector is {geometry.shape}")
    keep = (dyn > 0) & (sta > 0) & ~geometry.detector.mask
    if used is not None:
        keep &= used
    if mask is not None:
        keep &= mask == 0
    dyn, sta = np.where(keep, dyn, 0), np.where(keep, sta, 0)
    n_dyn, n_sta = int(dyn.max()), int(sta.max())
    if n_sta == 0:
        raise RawDataError(f"qmap file {path}: no pixel is in both a dynamic and a static bin")
    pairs = np.unique(np.stack([sta[keep], dyn[keep]]), axis=1)
    shared = np.flatnonzero(np.bincount(pairs[0], minlength=n_sta + 1) > 1)
    if len(shared):
        first = int(shared[0])
        across = ", ".join(str(int(d)) for d in pairs[1][pairs[0] == first])
        raise RawDataError(f"qmap file {path}: static bin {first} spans dynamic bins {across} ({len(shared)} static "
                           "bin(s) do so); each static bin must lie inside one dynamic bin")
    q = geometry.radial(unit)
    with np.errstate(invalid="ignore", divide="ignore"):
        dq = np.bincount(dyn[keep], q[keep], n_dyn + 1)[1:] / np.bincount(dyn[keep], minlength=n_dyn + 1)[1:]
        sq = np.bincount(sta[keep], q[keep], n_sta + 1)[1:] / np.bincount(sta[keep], minlength=n_sta + 1)[1:]
    return QPartition(dyn.astype(np.int32), sta.astype(np.int32), dq, sq, unit)


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def partition_from_config(cfg: Mapping[str, Any], geometry: Geometry, mask: np.ndarray | None) -> QPartition:
    """The partition the ``reduction`` config asks for: its ``qmap`` file, or rings from the PONI."""
    dyn = cfg.get("dynamic_q") or {}
    phi = cfg.get("phi") or {}
    unit = str(dyn.get("unit", "q_nm^-1"))
    if cfg.get("qmap"):
        return partition_from_qmap(str(cfg["qmap"]), geometry, unit, mask)
    return partition_from_geometry(geometry, npt=int(dyn.get("npt", 10)), q_range=_pair(dyn.get("range")), unit=unit,
                                   static_per_dynamic=int(cfg.get("static_per_dynamic", 4)),
                                   phi_npt=int(phi.get("npt", 1)), phi_range=_pair(phi.get("range")), mask=mask)
