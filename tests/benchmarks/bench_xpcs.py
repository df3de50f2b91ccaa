"""Frames per second of the XPCS correlators (numpy, OpenCL) on 256×256 frames, from memory and from
an HDF5 file (a bitshuffle-LZ4 BLISS scan read through the step), medians of ``--repeat`` runs.

Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_xpcs.py                    # 256×256 × 2000 frames
    .venv/bin/python tests/benchmarks/bench_xpcs.py --frames 10000 --shape 256 256 --repeat 3
    python3 tests/benchmarks/bench_xpcs.py --device gpu --frames 10000     # a GPU node (gpu_check.sh)

What it measures, for each engine (``numpy``; ``opencl`` where pyopencl finds a device):

* **memory**: the multi-tau correlator alone (``XpcsStep.correlator``) fed the partition's pixels of
  frames already in memory, in blocks of 64 (as the step feeds it), then its sums;
* **file**: ``XpcsStep`` end to end on the scan: read and decompress (read-ahead thread), select
  the partition's pixels, correlate, write the chunk file.

The frames are Poisson counts (0.3 photon/pixel/frame, uint16), 10 q rings × 4 static sub-rings over
the whole detector. No timed assertion: this prints figures for docs/xpcs.md. boost-corr side by
side: tests/benchmarks/bench_boost_corr.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from reduction.azint.detectors import Detector
from reduction.azint.geometry import Geometry
from reduction.demo.bliss_writer import ScanSpec, write_dataset
from reduction.errors import EngineUnavailable
from reduction.xpcs.step import READ_BLOCK, XpcsStep


def _experiment(root: Path, nframes: int, shape: tuple[int, int]) -> tuple[Path, Path]:
    geo = Geometry(dist=5.0, poni1=shape[0] / 2 * 75e-6, poni2=shape[1] / 2 * 75e-6, wavelength=1e-10,
                   detector=Detector("Detector", 75e-6, 75e-6, shape))
    poni = root / "g.poni"
    poni.write_text(geo.to_poni(), encoding="utf-8")
    rng = np.random.default_rng(0)

    def frames(start: int, stop: int) -> np.ndarray:
        return rng.poisson(0.3, (stop - start, *shape)).astype(np.uint16)

    raw = write_dataset(root / "RAW_DATA" / "b" / "b_0001" / "b_0001.h5",
                        [ScanSpec(frames, nframes=nframes, frame_shape=shape, dtype="uint16")], frames_per_file=1000)
    return poni, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--shape", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="auto", help="reduction.device of the OpenCL engine (auto, cpu, gpu, P:D)")
    args = parser.parse_args()
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory(prefix="bench-xpcs-") as tmp:
        poni, raw = _experiment(Path(tmp), args.frames, shape)
        cfg = {"kind": "xpcs", "poni": str(poni), "dynamic_q": {"npt": 10}, "static_per_dynamic": 4,
               "device": args.device}
        chunk = {"id": "b", "dataset": str(raw), "scan": "1.1", "detector": "pilatus", "start": 0, "stop": args.frames}
        memory = np.random.default_rng(1).poisson(0.3, (args.frames, shape[0] * shape[1])).astype(np.uint16)
        print(f"{shape[0]}×{shape[1]} × {args.frames} frames, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
              f"medians of {args.repeat}")
        for engine in ("numpy", "opencl"):
            try:
                step = XpcsStep({**cfg, "engine": engine})
            except EngineUnavailable as exc:
                print(f"{engine}: unavailable ({exc})")
                continue
            part = step.partition
            series = memory[:, part.pixels]
            step.correlator(part.static_index, part.n_static, READ_BLOCK).add(series[:READ_BLOCK])  # build kernels
            in_memory, from_file = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                mt = step.correlator(part.static_index, part.n_static, args.frames)
                for b in range(0, args.frames, READ_BLOCK):
                    mt.add(series[b:b + READ_BLOCK])
                mt.result()
                in_memory.append(args.frames / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                step(chunk, Path(tmp) / "chunk.h5", config_hash="b", config_json="{}")
                from_file.append(args.frames / (time.perf_counter() - t0))
            pix = len(part.pixels)
            print(f"{step.engine_used}: memory {statistics.median(in_memory):.0f} frames/s, file "
                  f"{statistics.median(from_file):.0f} frames/s ({pix} pixels; "
                  f"{statistics.median(in_memory) * pix:.3g} pixel·frames/s in memory)")
        print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
