"""``xreduce bench`` for the azint kinds: the stage rates of a campaign's own step on its own frames.

Three measurements on the same frames: reading them (raw chunks read and decompressed, as the step
reads them), the kernel alone on a block already in memory (after a first call, timed apart, that
loads the matrix and builds the engine), and the step end to end (reading, kernel and writing
overlapped, a chunk file written). From the first two follows the **bound**: where the kernel runs
on the same cores as decompression (numpy, OpenCL on a CPU device) the stages add up,
1 / (1/read + 1/kernel); on a GPU they overlap, and the slower one sets the pace.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from reduction.io import bliss, direct
from reduction.io.direct import CompressedFrames
from reduction.step import BenchReport, StageRate

from .step import READ_BLOCK, AzintStep, _pair

__all__ = ["bench_step"]

#: The kernel alone is timed on at least this many calls of one block (after the first call).
KERNEL_CALLS = 3


def bench_step(step: AzintStep, chunk: Mapping[str, Any], workdir: Path) -> BenchReport:
    """Stage rates of ``step`` on the frames of ``chunk`` (see the module's docstring)."""
    dataset, scan, detector = str(chunk["dataset"]), str(chunk["scan"]), str(chunk["detector"])
    start, stop = int(chunk["start"]), int(chunk["stop"])
    blocks = [(b, min(b + READ_BLOCK, stop)) for b in range(start, stop, READ_BLOCK)]
    integrator = step.integrator
    # as the step reads: compressed chunks where its engine decompresses them on the device (a GPU)
    on_device = step._on_device(integrator)
    reader = bliss.read_frames_compressed if on_device else bliss.read_frames
    # 1. the first call (matrix, engine) on the first block, timed apart: the rest runs warm
    first_block = reader(dataset, scan, detector, *blocks[0])
    t0 = time.perf_counter()
    step._integrate(integrator, first_block, None)
    first_call = StageRate("kernel, first call", len(first_block), time.perf_counter() - t0,
                           "loads (or builds) the matrix and the engine")
    # 2. reading alone, block by block as the step reads (each block dropped before the next)
    with _fallbacks() as fell_back:
        t0 = time.perf_counter()
        for b0, b1 in blocks:
            reader(dataset, scan, detector, b0, b1)
        read = StageRate("read" if on_device else "read+decompress", stop - start, time.perf_counter() - t0,
                         "raw chunks (decompressed on the device, in the kernel)" if on_device
                         else _read_detail(fell_back))
    # 3. the kernel alone on a block in memory
    calls = max(KERNEL_CALLS, -(-(stop - start) // len(first_block)))
    t0 = time.perf_counter()
    for _ in range(calls):
        step._integrate(integrator, first_block, None)
    kernel = StageRate("decompress+kernel" if on_device else "kernel", calls * len(first_block),
                       time.perf_counter() - t0, f"{calls} calls on {len(first_block)} frames in memory"
                       + (", compressed" if on_device else ""))
    pyfai = _pyfai_kernel(step, first_block.decode() if isinstance(first_block, CompressedFrames) else first_block)
    # 4. the step end to end (read, kernel and write overlapped), into a chunk file under workdir
    out = workdir / "bench-chunk.h5"
    t0 = time.perf_counter()
    nframes = step(chunk, out, config_hash="bench", config_json="{}")
    whole = StageRate("end to end", nframes, time.perf_counter() - t0, _stages_detail(step.stages))
    out.unlink(missing_ok=True)
    on_host = integrator.kernel_on_host
    if on_host:
        bound = 1 / (1 / read.rate + 1 / kernel.rate)
        rule = "1/(1/read + 1/kernel): decompression and the kernel share this machine's cores"
    else:
        bound = min(read.rate, kernel.rate)
        rule = "min(read, kernel): the kernel runs on the device while the cores decompress"
    rates = [first_call, read, kernel, whole]
    notes = []
    if isinstance(pyfai, StageRate):
        rates.append(pyfai)
        notes.append(f"kernel / pyFAI on the same frames: {kernel.rate / pyfai.rate:.1f}x")
    else:
        notes.append(pyfai)
    return BenchReport(rates=rates, bound=bound, bound_rule=rule, reached=whole.rate / bound if bound > 0 else 0.0,
                       engine=integrator.engine_description, notes=notes)


def _pyfai_kernel(step: AzintStep, frames: np.ndarray) -> StageRate | str:
    """pyFAI's ``integrate1d``/``integrate2d`` (CSR, cython) frame by frame on the same frames and
    options, after a first call (which builds its matrix); a sentence instead when pyFAI is absent."""
    try:
        import pyFAI
    except ImportError:
        return "pyFAI is not installed here: no side-by-side kernel rate"
    cfg = step.cfg
    ai = pyFAI.load(str(cfg["poni"]))
    mask = ai.detector.mask  # a user mask replaces the detector's in pyFAI but adds to it here: give both
    if step.mask is not None:
        mask = (step.mask != 0) if mask is None else (step.mask != 0) | (mask != 0)
    options: dict[str, Any] = dict(
        unit=cfg["unit"], method=(cfg["splitting"], "csr", "cython"), mask=mask, dark=step.dark, flat=step.flat,
        correctSolidAngle=bool(cfg.get("solid_angle", True)), polarization_factor=cfg.get("polarization_factor"),
        radial_range=_pair(cfg.get("radial_range")), azimuth_range=_pair(cfg.get("azimuth_range")),
        error_model=cfg.get("error_model"))
    if step.kind == "azint2d":
        call = partial(ai.integrate2d, npt_rad=int(cfg["npt_rad"]), npt_azim=int(cfg["npt_azim"]), **options)
    else:
        call = partial(ai.integrate1d, npt=int(cfg["npt"]), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        call(frames[0])
        t0 = time.perf_counter()
        for frame in frames:
            call(frame)
        seconds = time.perf_counter() - t0
    return StageRate(f"pyFAI {pyFAI.version} kernel", len(frames), seconds,
                     f"{'integrate2d' if step.kind == 'azint2d' else 'integrate1d'} {cfg['splitting']}/csr/cython, "
                     "frame by frame, same frames and options")


@contextmanager
def _fallbacks() -> Iterator[list[str]]:
    """The reasons reduction.io.direct gives (at debug level) for reads it left to h5py."""
    messages: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(direct.__name__)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _read_detail(fell_back: list[str]) -> str:
    if not direct.enabled():
        return "h5py (XREDUCE_DIRECT_READS=0)"
    if fell_back:
        return f"through h5py: {fell_back[0]}"
    return f"direct chunk reads, {direct.read_threads()} decompression threads"


def _stages_detail(stages: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stages.items())
