"""Azimuthal integration of frame stacks: build once, apply many.

An :class:`Integrator` holds a geometry and a mask. For each set of integration parameters it
builds (or loads from the on-disk cache) a sparse matrix of pixel-splitting fractions and an
engine around it, then reduces stacks of frames in batches: the pixel corrections that do not
depend on the frame (solid angle, polarisation, flat, mask, dark) are folded into per-bin
constants once, so the per-frame work is two sparse products done by the engine.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, overload

import numpy as np
import scipy.sparse

from reduction.errors import EngineUnavailable, IntegrationError
from reduction.io.direct import CompressedFrames

from .cache import MatrixCache, spec_key
from .config import ENGINE_NAMES, ERROR_MODELS
from .engines import NumpyEngine, OpenCLEngine
from .geometry import Geometry
from .result import IntegrationResult
from .splitting import SPLITTINGS, Bins, auto_range, build_matrix, pyfai_range
from .units import radial_unit

__all__ = ["Integrator"]

log = logging.getLogger(__name__)

ENGINES = dict(zip(ENGINE_NAMES, (NumpyEngine, OpenCLEngine)))

#: Engine messages already logged (once per process, not once per integrator).
_LOGGED: set[str] = set()

#: Frames reduced per engine call: bounds the (block × bins) accumulators of 2-D cakes.
BLOCK_FRAMES = 32


@dataclass
class _Prepared:
    """A matrix with its engine and the frame-independent per-bin sums."""

    matrix: scipy.sparse.csr_array
    engine: Any  # replaced by a NumpyEngine when an ``auto`` OpenCL engine fails mid-run
    radial: Bins
    azimuth: Bins | None
    static: OrderedDict = field(default_factory=OrderedDict)  # correction settings -> list[_StaticTerm]


class Integrator:
    """Integrate detector frames azimuthally, in 1-D (I vs radial) or 2-D (I vs χ and radial).

    Parameters
    ----------
    geometry : the detector geometry (:meth:`Geometry.from_poni` reads a PONI file).
    mask : optional (ny, nx) array, nonzero = masked. The detector's module gaps are always masked.
    engine : "numpy" (the batched CPU engine), "opencl" (batched kernels on an OpenCL device:
        a GPU, or the CPU through PoCL) or "auto": OpenCL when a usable device exists, else numpy,
        with a warning that names why. With "opencl" a missing device is an error
        (:class:`~reduction.errors.EngineUnavailable`).
    device : the OpenCL device: "auto" (a GPU first, the one Slurm assigned on a GPU node, else a
        CPU device), "cpu", "gpu" or "platform:device" indices such as "0:1".
    cache_dir : where integration matrices are cached; default ``$XREDUCE_CACHE_DIR`` or
        ``~/.cache/xreduce``; ``False`` disables the on-disk cache.
    threads : engine threads (CPU compute units on a CPU OpenCL device); default the cores this
        process may use.

    Examples
    --------
    >>> geo = Geometry(dist=0.3, poni1=0.09, poni2=0.08, wavelength=1e-10, detector="Pilatus1M")
    >>> integ = Integrator(geo)
    >>> res = integ.integrate1d(frames, npt=1000, unit="q_nm^-1")   # frames: (B, 1043, 981)
    >>> res.intensity.shape
    (B, 1000)
    """

    def __init__(self, geometry: Geometry, mask: np.ndarray | None = None, *, engine: str = "numpy",
                 device: str | None = None, cache_dir: str | Path | None | bool = None,
                 threads: int | None = None) -> None:
        if not isinstance(geometry, Geometry):
            raise IntegrationError(f"geometry must be a reduction.Geometry, got {type(geometry).__name__}")
        if engine != "auto" and engine not in ENGINES:
            raise IntegrationError(f"unknown engine {engine!r}; available: auto, {', '.join(ENGINES)}")
        self.geometry = geometry
        self.engine_name = engine  # as asked: "auto" stays "auto" (see engine_used)
        self.device = device
        self.threads = threads
        self._opencl_failed: str | None = None  # why "auto" runs numpy here
        self.mask = geometry.detector.mask
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != geometry.shape:
                raise IntegrationError(f"mask shape {mask.shape} does not match detector "
                                       f"{geometry.detector.name} shape {geometry.shape}")
            self.mask = self.mask | (mask != 0)
        self._cache = None if cache_dir is False else MatrixCache(
            None if cache_dir in (None, True) else cast("str | Path", cache_dir))
        self._prepared: OrderedDict[str, _Prepared] = OrderedDict()

    # -- public API --------------------------------------------------------------------------
    def integrate1d(self, frames: np.ndarray | CompressedFrames, npt: int = 1000, unit: str = "q_nm^-1",
                    splitting: str = "bbox", radial_range: tuple[float, float] | None = None,
                    azimuth_range: tuple[float, float] | None = None, dark: np.ndarray | None = None,
                    flat: np.ndarray | None = None, solid_angle: bool = True,
                    polarization_factor: float | None = None, normalization: float | np.ndarray | None = None,
                    error_model: str | None = "poisson") -> IntegrationResult:
        """Integrate one frame (ny, nx) or a stack (B, ny, nx) into ``npt`` radial bins; a stack may
        also be given as :class:`~reduction.io.direct.CompressedFrames` (bitshuffle-LZ4 chunks),
        decompressed on the OpenCL device where :meth:`decompresses_on_device`, else on the host.

        ``radial_range`` is in ``unit``; ``azimuth_range`` in degrees restricts the pixels used.
        ``normalization`` is a per-frame monitor (scalar or (B,)) dividing the intensity.
        Returns an :class:`IntegrationResult` with (B, npt) arrays, or (npt,) for a single frame.
        """
        return self._integrate(frames, npt, None, unit, splitting, radial_range, azimuth_range, dark, flat,
                               solid_angle, polarization_factor, normalization, error_model)

    def integrate2d(self, frames: np.ndarray | CompressedFrames, npt_rad: int = 500, npt_azim: int = 360,
                    unit: str = "2th_deg", splitting: str = "bbox", radial_range: tuple[float, float] | None = None,
                    azimuth_range: tuple[float, float] | None = None, dark: np.ndarray | None = None,
                    flat: np.ndarray | None = None, solid_angle: bool = True,
                    polarization_factor: float | None = None, normalization: float | np.ndarray | None = None,
                    error_model: str | None = "poisson") -> IntegrationResult:
        """Integrate into a cake of ``npt_azim`` χ bins (degrees) × ``npt_rad`` radial bins.

        Arrays are (B, npt_azim, npt_rad), or (npt_azim, npt_rad) for a single frame; other
        parameters as in :meth:`integrate1d`, with ``azimuth_range`` giving the χ bin range.
        """
        return self._integrate(frames, npt_rad, npt_azim, unit, splitting, radial_range, azimuth_range, dark,
                               flat, solid_angle, polarization_factor, normalization, error_model)

    # -- preparation -------------------------------------------------------------------------
    def _check_params(self, npt: int, npt_azim: int | None, splitting: str, error_model: str | None) -> None:
        for name, value in (("npt", npt), ("npt_azim", npt_azim)):
            if value is None and name == "npt_azim":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise IntegrationError(f"{name} must be a positive integer, got {value!r}")
        if splitting not in SPLITTINGS:
            raise IntegrationError(f"unknown splitting {splitting!r}; expected one of {', '.join(SPLITTINGS)}")
        if error_model not in ERROR_MODELS:
            raise IntegrationError(f"unknown error_model {error_model!r}; expected 'poisson' or None")

    def _range(self, name: str, given: tuple[float, float] | None, scale: float) -> tuple[float, float] | None:
        """A user range in display units → internal units, checked."""
        if given is None:
            return None
        try:
            lo, hi = (float(v) for v in given)
        except (TypeError, ValueError):
            raise IntegrationError(f"{name} must be a pair of numbers (min, max), got {given!r}") from None
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
            raise IntegrationError(f"{name} = {given!r} must be finite with min < max")
        return lo / scale, hi / scale

    def _prepare(self, npt: int, npt_azim: int | None, unit: str, splitting: str,
                 radial_range: tuple[float, float] | None,
                 azimuth_range: tuple[float, float] | None) -> _Prepared:
        """The matrix and engine for these parameters: from memory, the disk cache, or built."""
        u = radial_unit(unit)
        rad_range = self._range("radial_range", radial_range, u.scale)
        azim_range = _azimuth_radians(self._range("azimuth_range", azimuth_range, 1.0))
        spec = {"geometry": self.geometry.key(), "mask": _digest(self.mask), "unit": u.name,
                "npt": int(npt), "npt_azim": None if npt_azim is None else int(npt_azim),
                "splitting": splitting, "radial_range": rad_range, "azimuth_range": azim_range}
        key = spec_key(spec)
        if key in self._prepared:
            self._prepared.move_to_end(key)
            return self._prepared[key]

        valid = ~self.mask.ravel()
        if not valid.any():
            raise IntegrationError("every pixel is masked: nothing to integrate")
        cached = self._cache.load(key) if self._cache is not None else None
        if cached is not None:
            matrix, bounds = cached
            radial_bins = Bins(bounds[0], bounds[1], int(npt))
            azimuth_bins = None if npt_azim is None else Bins(bounds[2], bounds[3], int(npt_azim))
        else:
            matrix, radial_bins, azimuth_bins = self._build(npt, npt_azim, unit, splitting, rad_range, azim_range,
                                                            valid)
            if self._cache is not None:
                bounds = [radial_bins.lo, radial_bins.hi]
                if azimuth_bins is not None:
                    bounds += [azimuth_bins.lo, azimuth_bins.hi]
                self._cache.store(key, matrix, bounds)
        if matrix.nnz == 0:
            shown = radial_range if radial_range is not None else (float(radial_bins.lo * u.scale),
                                                                   float(radial_bins.hi * u.scale))
            raise IntegrationError(f"radial_range {shown} ({u.name}) and azimuth_range {azimuth_range} contain "
                                   f"no pixel of detector {self.geometry.detector.name}")
        prepared = _Prepared(matrix, self._engine(matrix, key), radial_bins, azimuth_bins)
        self._prepared[key] = prepared
        while len(self._prepared) > 4:  # a few configurations per process is plenty
            self._prepared.popitem(last=False)
        return prepared

    @property
    def engine_used(self) -> str:
        """The engine integrations run on: "numpy" or "opencl" ("auto" until the first one)."""
        if self._prepared:
            return next(reversed(self._prepared.values())).engine.name
        return "numpy" if self._opencl_failed else self.engine_name

    @property
    def engine_description(self) -> str:
        """``engine_used``, with the OpenCL device: for logs, run summaries and provenance."""
        engine = next(reversed(self._prepared.values())).engine if self._prepared else None
        return f"opencl on {engine.device}" if isinstance(engine, OpenCLEngine) else self.engine_used

    @property
    def kernel_on_host(self) -> bool:
        """True when the kernel runs on this machine's cores (numpy, or OpenCL on a CPU device), so it
        competes with decompression for them; False on a GPU or other accelerator."""
        engine = next(reversed(self._prepared.values())).engine if self._prepared else None
        return not isinstance(engine, OpenCLEngine) or engine.device.kind == "cpu"

    def _engine(self, matrix: scipy.sparse.csr_array, key: str) -> Any:
        """The engine asked for, or under ``auto`` OpenCL when it works here, else numpy. ``key``: the
        matrix's cache key (the OpenCL engine keeps its tile layout beside the cached matrix)."""
        layout_cache = None if self._cache is None else (self._cache, key)
        if self.engine_name == "opencl":
            return OpenCLEngine(matrix, device=self.device, threads=self.threads, layout_cache=layout_cache)
        if self.engine_name == "auto" and self._opencl_failed is None:
            try:
                engine = OpenCLEngine(matrix, device=self.device, threads=self.threads, layout_cache=layout_cache)
            except EngineUnavailable as exc:
                self._fall_back(str(exc))
            else:
                _once(logging.INFO, f"engine auto: OpenCL on {engine.device} ({engine.kernel} kernel)")
                return engine
        return NumpyEngine(matrix, threads=self.threads)

    def _fall_back(self, reason: str) -> None:
        """Under ``auto``: numpy from now on in this integrator, with a warning naming the reason."""
        self._opencl_failed = reason
        _once(logging.WARNING, f"engine auto: using the numpy engine, the OpenCL engine is unavailable: {reason}")

    def _build(self, npt: int, npt_azim: int | None, unit: str, splitting: str,
               rad_range: tuple[float, float] | None, azim_range: tuple[float, float] | None,
               valid: np.ndarray) -> tuple[scipy.sparse.csr_array, Bins, Bins | None]:
        """Pixel positions → bins (pyFAI's range rules) → the pixel-splitting matrix."""
        radial = self.geometry.radial_positions(unit)
        azimuth = self.geometry.azimuth_positions()
        # pyFAI bins over [min, max·(1+eps32)] for a user range too: same bins, same pixels
        radial_bins = Bins(*(auto_range(splitting, radial, valid, allow_negative=False) if rad_range is None
                             else pyfai_range(*rad_range)), int(npt))
        azimuth_bins = None
        if npt_azim is not None:
            azimuth_bins = Bins(*(auto_range(splitting, azimuth, valid, allow_negative=True, azimuthal=True)
                                  if azim_range is None else pyfai_range(*azim_range)), int(npt_azim))
        matrix = build_matrix(splitting, radial, azimuth, valid, radial_bins, azimuth_bins,
                              azim_range if npt_azim is None else None)
        return matrix, radial_bins, azimuth_bins

    def _reduce(self, prep: _Prepared, frames: np.ndarray | CompressedFrames, variance: bool) -> Any:
        """One block through the engine; under ``auto`` a failing device (lost, out of memory
        even for one frame) hands this block and the rest to the numpy engine."""
        try:
            return _engine_reduce(prep.engine, frames, variance)
        except EngineUnavailable as exc:
            if self.engine_name != "auto" or isinstance(prep.engine, NumpyEngine):
                raise
            self._fall_back(str(exc))
            for other in self._prepared.values():
                other.engine = NumpyEngine(other.matrix, threads=self.threads)
            return _engine_reduce(prep.engine, frames, variance)

    def decompresses_on_device(self, npt: int, npt_azim: int | None = None, unit: str = "q_nm^-1",
                               splitting: str = "bbox", radial_range: tuple[float, float] | None = None,
                               azimuth_range: tuple[float, float] | None = None) -> bool:
        """Whether frames integrated with these parameters are best given compressed
        (:class:`~reduction.io.direct.CompressedFrames`): the engine decompresses them on its
        device (the OpenCL engine on a GPU, ``XREDUCE_DEVICE_DECOMPRESSION``). Prepares the engine."""
        if self.engine_name == "numpy":
            return False
        self._check_params(npt, npt_azim, splitting, "poisson")
        prep = self._prepare(npt, npt_azim, unit, splitting, radial_range, azimuth_range)
        return bool(getattr(prep.engine, "device_decompression", False))

    def _pixel_normalization(self, flat: np.ndarray | None, solid_angle: bool,
                             polarization_factor: float | None) -> np.ndarray:
        """flat × solid angle × polarisation per pixel, flattened (float64)."""
        norm = np.ones(self.geometry.shape, dtype=np.float64)
        if solid_angle:
            norm *= self.geometry.solid_angle()
        if polarization_factor is not None:
            norm *= self.geometry.polarization(float(polarization_factor))
        if flat is not None:
            norm *= self._image("flat", flat)
        return norm.ravel()

    def _image(self, name: str, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float64)
        if image.shape != self.geometry.shape:
            raise IntegrationError(f"{name} shape {image.shape} does not match detector "
                                   f"{self.geometry.detector.name} shape {self.geometry.shape}")
        if not np.isfinite(image[~self.mask]).all():
            raise IntegrationError(f"{name} has non-finite values in unmasked pixels; mask them first")
        return image

    # -- integration -------------------------------------------------------------------------
    def _integrate(self, frames: np.ndarray | CompressedFrames, npt: int, npt_azim: int | None, unit: str,
                   splitting: str, radial_range: tuple[float, float] | None, azimuth_range: tuple[float, float] | None,
                   dark: np.ndarray | None, flat: np.ndarray | None, solid_angle: bool,
                   polarization_factor: float | None, normalization: float | np.ndarray | None,
                   error_model: str | None) -> IntegrationResult:
        self._check_params(npt, npt_azim, splitting, error_model)
        stack, single = self._as_stack(frames)
        monitor = self._monitor(normalization, len(stack))
        prep = self._prepare(npt, npt_azim, unit, splitting, radial_range, azimuth_range)
        matrix = prep.matrix
        nframes, nbins = len(stack), matrix.shape[0]
        acc: dict[str, Any] = {"signal": np.zeros((nframes, nbins)), "normalization": np.zeros((nframes, nbins)),
                               "count": np.zeros((nframes, nbins)),
                               "variance": np.zeros((nframes, nbins)) if error_model else None}
        static = self._static_terms(prep, flat, solid_angle, polarization_factor, dark,
                                    with_dark_variance=error_model is not None and npt_azim is not None
                                    and splitting != "full")
        flat_frames = stack if isinstance(stack, CompressedFrames) else stack.reshape(nframes, -1)
        for start in range(0, nframes, BLOCK_FRAMES):
            block = slice(start, min(start + BLOCK_FRAMES, nframes))
            out = self._reduce(prep, flat_frames[block], variance=error_model is not None)
            acc["signal"][block] = out.signal
            if error_model:
                acc["variance"][block] = out.variance
            for term in static:
                acc[term.name][block] += term.per_bin
            if len(out.invalid):
                _drop_invalid(out.invalid, static, {name: a[block] for name, a in acc.items() if a is not None})
        signal, variance, norm, count = acc["signal"], acc["variance"], acc["normalization"], acc["count"]
        norm *= monitor[:, None]

        with np.errstate(invalid="ignore", divide="ignore"):
            empty = norm == 0
            intensity = np.where(empty, np.nan, signal / norm)
            sigma = None if variance is None else np.where(empty, np.nan, np.sqrt(variance) / norm)

        u = radial_unit(unit)
        shape = (nframes, nbins) if npt_azim is None else (nframes, npt_azim, npt)

        @overload
        def shaped(array: np.ndarray) -> np.ndarray: ...
        @overload
        def shaped(array: None) -> None: ...
        def shaped(array: np.ndarray | None) -> np.ndarray | None:
            if array is None:
                return None
            array = array.reshape(shape)
            return array[0] if single else array

        deg = 180.0 / np.pi
        return IntegrationResult(
            radial=prep.radial.centres * u.scale, radial_edges=prep.radial.edges * u.scale,
            intensity=shaped(intensity), sigma=shaped(sigma), signal=shaped(signal),
            variance=shaped(variance), normalization=shaped(norm), count=shaped(count), unit=u.name,
            splitting=splitting,
            azimuthal=None if prep.azimuth is None else prep.azimuth.centres * deg,
            azimuthal_edges=None if prep.azimuth is None else prep.azimuth.edges * deg)

    def _as_stack(self, frames: np.ndarray | CompressedFrames) -> tuple[np.ndarray | CompressedFrames, bool]:
        """(B, ny, nx) view of the input and whether it was a single frame (compressed frames: checked)."""
        if isinstance(frames, CompressedFrames):
            if frames.frame_shape != self.geometry.shape or frames.dtype.kind not in "iu" or not len(frames):
                raise IntegrationError(f"compressed frames {frames.shape} of {frames.dtype} do not fit detector "
                                       f"{self.geometry.detector.name}: expected integer frames of "
                                       f"{self.geometry.shape}")
            return frames, False
        frames = np.asarray(frames)
        if frames.dtype.kind not in "iuf":
            raise IntegrationError(f"frames must be integer or float, got dtype {frames.dtype}")
        single = frames.ndim == 2
        stack = frames[None] if single else frames
        if stack.ndim != 3 or stack.shape[1:] != self.geometry.shape:
            raise IntegrationError(f"frames of shape {frames.shape} do not match detector "
                                   f"{self.geometry.detector.name}: expected {self.geometry.shape} "
                                   f"or (B, {self.geometry.shape[0]}, {self.geometry.shape[1]})")
        if stack.shape[0] == 0:
            raise IntegrationError("frames is an empty stack (0 frames)")
        return np.ascontiguousarray(stack), single

    @staticmethod
    def _monitor(normalization: float | np.ndarray | None, nframes: int) -> np.ndarray:
        """Per-frame monitor values, checked: a zero monitor would divide by zero silently."""
        if normalization is None:
            return np.ones(nframes)
        monitor = np.asarray(normalization, dtype=np.float64)
        if monitor.ndim == 0:
            monitor = np.full(nframes, float(monitor))
        if monitor.shape != (nframes,):
            raise IntegrationError(f"normalization must be a scalar or one value per frame ({nframes},), "
                                   f"got shape {monitor.shape}")
        bad = np.flatnonzero(~np.isfinite(monitor) | (monitor <= 0))
        if len(bad):
            raise IntegrationError(f"normalization (monitor) must be positive and finite; frame {int(bad[0])} "
                                   f"has {float(monitor[bad[0]])!r} ({len(bad)} bad frame(s))")
        return monitor

    def _static_terms(self, prep: _Prepared, flat: np.ndarray | None, solid_angle: bool,
                      polarization_factor: float | None, dark: np.ndarray | None, *,
                      with_dark_variance: bool) -> list[_StaticTerm]:
        """The per-bin sums that do not depend on the frame: count, normalisation, dark.

        Cached per matrix and correction settings (flat and dark by content), so a stream of
        blocks with the same corrections pays for them once.

        pyFAI's Poisson rule depends on its engine and we follow it, so that sigma agrees: for
        2-D with splitting ``no``/``bbox`` (where pyFAI derives the variance in Python) the dark
        adds max(dark, 0) to each pixel's variance; in 1-D and 2-D ``full`` (its Cython engines
        model the variance themselves) the variance is max(raw, 1) alone.
        """
        key = (solid_angle, polarization_factor, _array_digest(flat), _array_digest(dark), with_dark_variance)
        if key in prep.static:
            prep.static.move_to_end(key)
            return prep.static[key]
        matrix = prep.matrix
        terms = [_StaticTerm("count", matrix, np.ones(matrix.shape[1])),
                 _StaticTerm("normalization", matrix, self._pixel_normalization(flat, solid_angle,
                                                                                polarization_factor))]
        if dark is not None:
            dark_px = self._image("dark", dark).ravel()
            terms.append(_StaticTerm("signal", matrix, -dark_px))
            if with_dark_variance:
                terms.append(_StaticTerm("variance", matrix.multiply(matrix).tocsr(), np.maximum(dark_px, 0.0)))
        prep.static[key] = terms
        while len(prep.static) > 4:
            prep.static.popitem(last=False)
        return terms


@dataclass
class _StaticTerm:
    """``per_bin = matrix @ per_pixel``, added to accumulator ``name`` of every frame."""

    name: str
    matrix: scipy.sparse.csr_array
    per_pixel: np.ndarray

    def __post_init__(self) -> None:
        self.per_bin = self.matrix @ self.per_pixel


def _engine_reduce(engine: Any, frames: np.ndarray | CompressedFrames, variance: bool) -> Any:
    """``engine.reduce`` of a block; compressed frames go to an engine that takes them as they are,
    or are decompressed on the host for one that does not."""
    if isinstance(frames, CompressedFrames):
        if hasattr(engine, "reduce_compressed"):
            return engine.reduce_compressed(frames, variance=variance)
        frames = frames.decode().reshape(len(frames), -1)
    return engine.reduce(frames, variance=variance)


def _drop_invalid(invalid: np.ndarray, static: list[_StaticTerm], block: dict[str, np.ndarray]) -> None:
    """Take pixels flagged invalid in single frames (gap/bad-pixel values) out of their bins.

    The engine already left their values out of signal and variance; here their share of the
    frame-independent terms goes too. ``invalid`` holds (frame within the block, pixel) pairs and
    ``block`` the block's accumulator rows, updated in place.
    """
    frame, pixel = invalid[:, 0], invalid[:, 1]
    for term in static:
        shape = (block[term.name].shape[0], term.matrix.shape[1])
        hits = scipy.sparse.csr_array((term.per_pixel[pixel], (frame, pixel)), shape=shape)
        block[term.name] -= (hits @ term.matrix.T).toarray()


def _azimuth_radians(degrees: tuple[float, float] | None) -> tuple[float, float] | None:
    """A χ range in degrees → radians in [-π, π), as pyFAI converts it (so sectors match it).

    χ wraps at ±180°: a range that crosses it (e.g. (90, 270) or (0, 360)) would silently miss
    half of its pixels, so it is refused.
    """
    if degrees is None:
        return None

    def wrap(value: float) -> float:
        turns = (value / 180.0) % 2.0
        return (turns - 2.0 if turns >= 1.0 else turns) * np.pi

    lo, hi = wrap(degrees[0]), wrap(degrees[1])
    if hi <= lo:
        hi += 2.0 * np.pi
    if hi > np.pi * (1 + 1e-12) or hi - lo > 2.0 * np.pi:
        raise IntegrationError(f"azimuth_range {degrees} crosses χ = ±180°, where χ wraps; use ranges within "
                               "[-180, 180], e.g. two integrations for a sector around 180°")
    return lo, hi


def _array_digest(image: np.ndarray | None) -> tuple | None:
    """Content fingerprint of a correction image (CRC32 + shape + dtype), for the static-term cache."""
    if image is None:
        return None
    image = np.ascontiguousarray(image)
    return image.shape, image.dtype.str, zlib.crc32(image.view(np.uint8).data)


def _digest(mask: np.ndarray) -> str:
    """A short hash of a boolean mask, for cache keys."""
    return hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()[:24]


def _once(level: int, message: str) -> None:
    """Log a message once per process: every integrator of a worker would repeat it."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.log(level, message)
