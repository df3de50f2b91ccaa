"""The azint kinds' known-answer selftest: flat frames integrate to their own counts on every engine.

Two frames of constant counts (7 and 3), solid angle off: every bin that pixels reach must hold
exactly those counts, and the signal and the pixel count must be conserved — an answer known
without computing it, so a wrong kernel, a broken compiler or a bad device cannot pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reduction.errors import EngineUnavailable
from reduction.step import FAILED, OK, UNAVAILABLE, SelfCheck, SelfTest

__all__ = ["run_selftest", "FLAT_COUNTS"]

FLAT_COUNTS = (7, 3)
_SHAPE = (48, 64)
_NPT, _NPT_AZIM = 24, 12


def _flat_geometry() -> Any:
    from .detectors import Detector
    from .geometry import Geometry

    detector = Detector("Detector", 100e-6, 100e-6, _SHAPE)
    return Geometry(dist=0.1, poni1=2.45e-3, poni2=3.15e-3, wavelength=1e-10, detector=detector)


def _integrate(kind: str, engine: str, device: str | None) -> Any:
    from .integrator import Integrator

    frames = np.stack([np.full(_SHAPE, c, dtype=np.uint32) for c in FLAT_COUNTS])
    integ = Integrator(_flat_geometry(), engine=engine, device=device, cache_dir=False)
    if kind == "azint2d":
        return integ.integrate2d(frames, npt_rad=_NPT, npt_azim=_NPT_AZIM, unit="2th_deg", splitting="bbox",
                                 solid_angle=False), integ
    return integ.integrate1d(frames, npt=_NPT, unit="2th_deg", splitting="bbox", solid_angle=False), integ


def _problems(kind: str, res: Any, rtol: float) -> tuple[list[str], str]:
    """What is wrong with the flat result, and how many bins it filled (text)."""
    npix = _SHAPE[0] * _SHAPE[1]
    expected = np.array(FLAT_COUNTS, dtype=float).reshape((-1,) + (1,) * (res.intensity.ndim - 1))
    per_frame = res.intensity.reshape(len(FLAT_COUNTS), -1)
    filled = int(np.isfinite(per_frame).all(axis=0).sum())
    nbins = per_frame.shape[1]
    problems = []
    if filled != nbins and (kind == "azint1d" or filled == 0):  # a cake has bins no pixel reaches
        problems.append(f"{nbins - filled} of {nbins} bins empty")
    finite = np.isfinite(res.intensity)
    got = np.where(finite, res.intensity, expected)
    if not np.allclose(got, expected, rtol=rtol):
        worst = float(np.max(np.abs(got - expected) / expected))
        problems.append(f"intensity differs from the flat counts {FLAT_COUNTS} by up to {worst:.2e} (relative)")
    sums = res.signal.reshape(len(FLAT_COUNTS), -1).sum(axis=1)
    if not np.allclose(sums, expected.ravel() * npix, rtol=rtol):
        problems.append(f"signal not conserved: {sums} != {expected.ravel() * npix}")
    pixels = res.normalization.reshape(len(FLAT_COUNTS), -1).sum(axis=1)
    if not np.allclose(pixels, npix, rtol=rtol):
        problems.append(f"pixels not conserved: {pixels} != {npix}")
    return problems, f"{filled}/{nbins} bins"


def _check(kind: str, engine: str, device: str | None, rtol: float, part: str | None) -> tuple[SelfCheck, Any]:
    name = f"{kind} {engine}" + (f" ({device})" if device not in (None, "auto") else "")
    try:
        res, integ = _integrate(kind, engine, device)
    except EngineUnavailable as exc:
        return SelfCheck(name, UNAVAILABLE, str(exc), part), None
    except ImportError as exc:
        return SelfCheck(name, UNAVAILABLE, f"{type(exc).__name__}: {exc}", part), None
    except Exception as exc:
        return SelfCheck(name, FAILED, f"{type(exc).__name__}: {exc}", part), None
    problems, filled = _problems(kind, res, rtol)
    if problems:
        return SelfCheck(name, FAILED, "flat image: " + "; ".join(problems), part), res.intensity
    where = f" on {integ.engine_description.partition(' on ')[2]}" if engine == "opencl" else ""
    return SelfCheck(name, OK, f"flat frames {FLAT_COUNTS} → the same counts in {filled}, signal and "
                               f"{_SHAPE[0] * _SHAPE[1]} pixels conserved (rtol {rtol:g}){where}", part), res.intensity


def _opencl_devices() -> tuple[list[str], str | None]:
    """The OpenCL devices as text, or the reason there are none."""
    try:
        from .engines.device import list_devices

        return [str(info) for info, _ in list_devices()], None
    except Exception as exc:  # ImportError (no pyopencl), EngineUnavailable (no ICD/platform)
        return [], f"{type(exc).__name__}: {exc}".replace("EngineUnavailable: ", "")


def run_selftest(kind: str, device: str = "auto", require: Sequence[str] = ()) -> SelfTest:
    """Flat frames on the numpy engine, then on OpenCL (``device``) and on a GPU where one is visible
    (or where ``require`` asks for one: then its absence is reported)."""
    checks = []
    numpy_check, reference = _check(kind, "numpy", None, 1e-9, None)
    checks.append(numpy_check)
    devices, no_devices = _opencl_devices()
    if no_devices:
        checks.append(SelfCheck(f"{kind} opencl", UNAVAILABLE, no_devices, "opencl"))
    else:
        check, values = _check(kind, "opencl", device, 1e-5, "opencl")
        if check.status == OK and reference is not None and not np.allclose(values, reference, rtol=1e-5,
                                                                              equal_nan=True):
            check = SelfCheck(check.name, FAILED, "results differ from the numpy engine beyond float32 tolerance",
                              "opencl")
        checks.append(check)
    gpus = [d for d in devices if "(gpu," in d]
    if device != "gpu" and (gpus or "gpu" in require):
        if gpus:
            checks.append(_check(kind, "opencl", "gpu", 1e-5, "gpu")[0])
        else:
            checks.append(SelfCheck(f"{kind} opencl (gpu)", UNAVAILABLE,
                                    "no OpenCL GPU visible (on a GPU node: request one from Slurm, and in the image "
                                    "run `apptainer exec --nv`)", "gpu"))
    return SelfTest(checks, {"OpenCL": devices or ["none"]})
