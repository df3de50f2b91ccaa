"""xreduce vs pyFAI: 1-D integration throughput on the same frames, in the same process.

    python tests/benchmarks/bench_integrate.py                      # Eiger4M, 32 frames, bbox
    python tests/benchmarks/bench_integrate.py --detector Pilatus1M --splitting no
    python tests/benchmarks/bench_integrate.py --engines numpy,opencl --device gpu   # on a GPU node

Both integrators are warmed up first (matrix built, caches filled); then, for several rounds,
xreduce integrates the whole stack in one batched call and pyFAI integrates the same frames one
by one with ``method=(splitting, "csr", "cython")``, alternating so that both see the same
machine state. It prints frames/s for each, their ratio, and the largest relative difference
of the intensities (bins with at least 10 % of the median count), so speed is never reported
without accuracy.

``--engines`` names the xreduce engines to time (default: numpy,opencl), each with its own integrator,
all in the same alternating rounds.  For the OpenCL engine it also prints the kernels' own
throughput with the frames already on the device (no transfer), as frames/s and GB/s read
(frames + matrix layout), the number to compare with the device's memory bandwidth.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from reduction import Geometry, Integrator
from reduction.demo.synthetic import calibrant_d_spacings, calibrant_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", default="Eiger4M")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--npt", type=int, default=1000)
    parser.add_argument("--unit", default="q_nm^-1")
    parser.add_argument("--splitting", default="bbox", choices=["no", "bbox", "full"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="xreduce engine threads (default: all cores)")
    parser.add_argument("--engines", default="numpy,opencl", help="comma-separated xreduce engines: numpy, opencl")
    parser.add_argument("--device", default=None, help="OpenCL device: auto, cpu, gpu or platform:device")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    geo = Geometry(dist=0.2, poni1=0.08, poni2=0.075, rot1=0.01, rot2=-0.02, rot3=0.0, wavelength=1.0e-10,
                   detector=args.detector)
    ai = AzimuthalIntegrator(dist=geo.dist, poni1=geo.poni1, poni2=geo.poni2, rot1=geo.rot1, rot2=geo.rot2,
                             rot3=geo.rot3, wavelength=geo.wavelength, detector=args.detector)
    rng = np.random.default_rng(0)
    ideal = calibrant_image(geo.twotheta(), geo.wavelength, calibrant_d_spacings("LaB6"), poisson=False,
                            dtype=np.float64)
    frames = rng.poisson(ideal, size=(args.frames, *geo.shape)).astype(np.uint32)
    frames[:, geo.detector.mask] = 2**32 - 1  # gap value as an Eiger writes it

    integs = {name: Integrator(geo, engine=name, device=args.device, cache_dir=False, threads=args.threads)
              for name in engines}
    options = dict(npt=args.npt, unit=args.unit, splitting=args.splitting)
    rng_range = None

    def ours(name: str) -> np.ndarray:
        return integs[name].integrate1d(frames, **options, radial_range=rng_range).intensity

    def theirs() -> tuple[np.ndarray, np.ndarray]:
        out, count = [], None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for frame in frames:
                res = ai.integrate1d(frame, args.npt, unit=args.unit, radial_range=rng_range, error_model="poisson",
                                     method=(args.splitting, "csr", "cython"))
                out.append(res.intensity)
                count = res.count
        return np.array(out), count

    # warm-up: build both matrices on one frame; use pyFAI's automatic range for both
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = ai.integrate1d(frames[0], args.npt, unit=args.unit, method=(args.splitting, "csr", "cython"))
    rng_range = (float(first.radial[0] - (first.radial[1] - first.radial[0]) / 2),
                 float(first.radial[-1] + (first.radial[1] - first.radial[0]) / 2))
    build = {}
    for name, integ in integs.items():
        t0 = time.perf_counter()
        integ.integrate1d(frames[:1], **options, radial_range=rng_range)
        build[name] = time.perf_counter() - t0
        if name != "numpy":
            ours(name)  # warm-up of the batched path (kernels for a full block are generated on first use)
    theirs_out, count = theirs()

    load_before = os.getloadavg()
    ours_t: dict[str, list[float]] = {name: [] for name in engines}
    ours_out: dict[str, np.ndarray] = {}
    theirs_t = []
    for _ in range(args.rounds):
        for name in engines:
            t0 = time.perf_counter()
            ours_out[name] = ours(name)
            ours_t[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs_out, count = theirs()
        theirs_t.append(time.perf_counter() - t0)
    load_after = os.getloadavg()

    selected = count >= 0.1 * np.median(count[count > 0])
    n = args.frames
    theirs_fps = n / min(theirs_t)
    threads = args.threads or os.cpu_count()
    print(f"{args.detector} {geo.shape[0]}x{geo.shape[1]}, {n} frames uint32, npt={args.npt}, unit={args.unit}, "
          f"splitting={args.splitting}, {threads} threads, best of {args.rounds} rounds")
    print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    for name in engines:
        print(f"  matrix build (xreduce[{name}], first call): {build[name]:.2f} s")
    fps = {name: n / min(ours_t[name]) for name in engines}
    for name in engines:
        label = f"xreduce[{name}]"
        print(f"  {label + ' integrate1d (batched):':31s}{1000 / fps[name]:7.2f} ms/frame  {fps[name]:8.1f} frames/s")
    print(f"  pyFAI   integrate1d (csr):     {1000 / theirs_fps:7.2f} ms/frame  {theirs_fps:8.1f} frames/s")
    for name in engines:
        rel = np.abs(ours_out[name][:, selected] - theirs_out[:, selected]) / np.abs(theirs_out[:, selected])
        extra = f", {fps[name] / fps['numpy']:.2f}x numpy" if name != "numpy" and "numpy" in fps else ""
        print(f"  ratio xreduce[{name}]/pyFAI: {fps[name] / theirs_fps:.1f}x{extra}   "
              f"max relative difference of I: {rel.max():.2e} over {selected.sum()} bins")
    for name in engines:
        if name == "opencl":
            _print_resident(integs[name], frames, options, rng_range)


def _time_resident(engine, frames: np.ndarray, repeats: int = 5, variance: bool = True) -> float:
    """Seconds per block for ``frames`` already on the device (best of ``repeats``): the kernels alone,
    without transfers -- the number to compare with the memory bandwidth. Drives the engine's own
    launch on a buffer it uploads once (its private parts: a benchmark, not an API)."""
    from reduction.azint.engines.opencl_engine import _host_frames

    frames = _host_frames(frames)
    cl, n, matrix = engine._cl, frames.shape[0], engine._matrix
    with engine._lock:
        kernels = engine._kernels(frames.dtype)
        flags = cl.mem_flags.READ_ONLY | (cl.mem_flags.USE_HOST_PTR if engine._unified else cl.mem_flags.COPY_HOST_PTR)
        xbuf = cl.Buffer(engine._ctx, flags, hostbuf=frames)
        out = [matrix.buffer(name, n * engine.nbins * 8) for name in ("t_signal", "t_variance")]
        best = float("inf")
        for _ in range(repeats + 1):  # the first launch warms up (code generation, page faults)
            engine._queue.finish()
            start = time.perf_counter()
            engine._launch(kernels, matrix, xbuf, n, 0, n, variance, out[0], out[1], "t", [])
            engine._queue.finish()
            best = min(best, time.perf_counter() - start)
    return best


def _print_resident(integ: Integrator, frames: np.ndarray, options: dict, rng_range) -> None:
    """The OpenCL kernels alone, frames on the device: frames/s and GB/s read."""
    prep = integ._prepare(options["npt"], None, options["unit"], options["splitting"], rng_range, None)
    engine = prep.engine
    seconds = _time_resident(engine, frames.reshape(len(frames), -1))
    nbytes = frames.nbytes + engine.layout_bytes()
    print(f"  opencl kernels, frames on the device ({engine.device}, kernel {engine.kernel!r}): "
          f"{1000 * seconds / len(frames):.2f} ms/frame  {len(frames) / seconds:8.1f} frames/s  "
          f"{nbytes / seconds / 1e9:.1f} GB/s read")


if __name__ == "__main__":
    main()
