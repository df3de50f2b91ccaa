"""``xreduce bench`` for the xpcs kind: the stage rates of a campaign's own step on its own frames.

Measured on the first frames of the campaign's first scan (``--frames``): reading them as the step
reads them (block by block, decompressed), the correlator alone on those frames in memory (only the
partition's pixels, as the step gives them; after a first call, timed apart, that builds the
kernels), the two-time tiles alone where the config asks for them, and the step end to end (a chunk
file written). The **bound**: where the correlator runs on the cores that decompress (numpy, OpenCL
on a CPU device) the stages add up, 1 / (1/read + 1/correlator [+ 1/two-time]); on a GPU the
correlator overlaps the reading and the slower stage sets the pace.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reduction.io import bliss
from reduction.step import BenchReport, StageRate

from .partition import QPartition
from .step import READ_BLOCK, XpcsStep
from .twotime import normalise_frames, twotime_tiles

__all__ = ["bench_step"]

#: The correlator alone is timed over at least this many frames (the series fed again, afresh).
MIN_FRAMES = 256


def bench_step(step: XpcsStep, chunk: Mapping[str, Any], workdir: Path) -> BenchReport:
    """Stage rates of ``step`` on the frames of ``chunk`` (see the module's docstring)."""
    dataset, scan, detector = str(chunk["dataset"]), str(chunk["scan"]), str(chunk["detector"])
    start, stop = int(chunk["start"]), int(chunk["stop"])
    n = stop - start
    blocks = [(b, min(b + READ_BLOCK, stop)) for b in range(start, stop, READ_BLOCK)]
    partition = step.chunk_partition(chunk)
    pixels, static_index = partition.pixels, partition.static_index
    # 1. reading alone, as the step reads (each block dropped before the next)
    t0 = time.perf_counter()
    for b0, b1 in blocks:
        bliss.read_frames(dataset, scan, detector, b0, b1)
    read = StageRate("read+decompress", n, time.perf_counter() - t0, f"blocks of {READ_BLOCK} frames")
    series = np.concatenate([bliss.read_frames(dataset, scan, detector, b0, b1).reshape(b1 - b0, -1)[:, pixels]
                             for b0, b1 in blocks])
    # 2. the correlator's first call (device context, kernels) apart, then the correlator alone
    t0 = time.perf_counter()
    step.correlator(static_index, partition.n_static, len(series[:READ_BLOCK])).add(series[:READ_BLOCK])
    first = StageRate("correlator, first call", len(series[:READ_BLOCK]), time.perf_counter() - t0,
                      "builds the kernels (OpenCL), one block")
    passes = max(1, -(-MIN_FRAMES // n))
    t0 = time.perf_counter()
    for _ in range(passes):
        mt = step.correlator(static_index, partition.n_static, n)
        for b in range(0, n, READ_BLOCK):
            mt.add(series[b:b + READ_BLOCK])
        mt.result()
    correlator = StageRate("correlator", passes * n, time.perf_counter() - t0,
                           f"multi-tau, {passes} pass(es) over {n} frames × {len(pixels)} pixels in memory")
    rates = [first, read, correlator]
    stages = [read, correlator]
    tt = _twotime(step, partition, series, n)
    if tt is not None:
        rates.append(tt)
        stages.append(tt)
    # 3. the step end to end, into a chunk file under workdir
    out = workdir / "bench-chunk.h5"
    t0 = time.perf_counter()
    nframes = step(chunk, out, config_hash="bench", config_json="{}")
    whole = StageRate("end to end", nframes, time.perf_counter() - t0,
                      ", ".join(f"{name} {seconds:.2f} s" for name, seconds in step.stages.items()))
    out.unlink(missing_ok=True)
    rates.append(whole)
    names = " + ".join(f"1/{s.stage}" for s in stages)
    if step.context is None or step.context.info.kind == "cpu":
        bound = 1 / sum(1 / s.rate for s in stages)
        rule = f"1/({names}): decompression and the correlator share this machine's cores"
    else:
        bound = min(s.rate for s in stages)
        rule = "min(" + ", ".join(s.stage for s in stages) + "): the correlator runs on the device"
    notes = [f"{len(pixels)} of {partition.dynamic_map.size} pixels in the q partition "
             f"({partition.n_dynamic} dynamic, {partition.n_static} static bins); the others are never read"]
    if importlib.util.find_spec("boost_corr") is None:
        notes.append("boost-corr is not installed here: no side-by-side rate (tests/benchmarks/bench_boost_corr.py "
                     "runs it from its own virtual environment, docs/xpcs.md)")
    return BenchReport(rates=rates, bound=bound, bound_rule=rule, reached=whole.rate / bound if bound > 0 else 0.0,
                       engine=step.engine_used, notes=notes)


def _twotime(step: XpcsStep, partition: QPartition, series: np.ndarray, n: int) -> StageRate | None:
    """The two-time tiles of the bins the config asks for, on the frames in memory (None: not asked)."""
    tt = step._twotime_spec(n, "bench", "bench")
    if tt is None:
        return None
    pixel_count = np.bincount(partition.static_index, minlength=partition.n_static).astype(np.float64)
    static_sum = np.stack([np.bincount(partition.static_index, f, partition.n_static)
                           for f in series[tt.start:tt.stop].astype(np.float64)])
    dyn = partition.dynamic_map.ravel()[partition.pixels]
    t0 = time.perf_counter()
    x = normalise_frames(series[tt.start:tt.stop], partition.static_index, static_sum, pixel_count)
    for q_bin in tt.q_bins:
        xb = np.ascontiguousarray(x[:, dyn == q_bin])
        if xb.shape[1]:
            for _ in twotime_tiles(xb, product=step.twotime_product(xb)):
                pass
    return StageRate("two-time", tt.stop - tt.start, time.perf_counter() - t0,
                     f"bins {tt.q_bins}, frames [{tt.start}, {tt.stop}), upper triangle")
