"""boost-corr 0.1.7 and xreduce side by side: multi-tau g2 of the same synthetic speckle scans, from the
HDF5 file and from memory, frames/s (medians of ``--repeat``), the ratios and the largest |Δg2|.

boost-corr needs torch and declares Python ≥ 3.12, so it runs in its own virtual environment
(docs/xpcs.md, "boost-corr side by side", says how to make it); this script runs in xreduce's and
calls the other interpreter (``--boost-python``)::

    .venv/bin/python tests/benchmarks/bench_boost_corr.py --boost-python /tmp/bcvenv/bin/python
    .venv/bin/python tests/benchmarks/bench_boost_corr.py --boost-python /tmp/bcvenv/bin/python \\
        --size 256 256 10000 --size 1024 1024 2000 --workdir /tmp/bench-bc   # keeps the files for a rerun

The same frames for both: uint8 speckle (tests/xpcs_speckle.py: M = 2 modes, τc = τ0/q² per dynamic
ring, 0.05–1 photon/pixel/frame per static ring) written once as a bitshuffle-LZ4 BLISS scan (the
BLISS writer, lima files of 1000 frames). boost-corr reads ``/entry/data/data`` of one HDF5 file:
its file is an external link to the BLISS scan's detector dataset (so it reads the very same lima
files) beside the ``*_metadata.hdf`` it insists on. The q partition is one qmap file (10 rings × 4
static sub-rings of xreduce's partition from the PONI, every pixel), given to boost-corr (``-q``) and
to xreduce (``reduction.qmap``), so both use the same static and dynamic bins.

* **file**: each tool end to end as a user runs it, one process, wall time: boost-corr's CLI
  (``boost_corr -r … -q … -i -1 -nf 0 -w --max-memory 8``: CPU, no frame normalisation, its default
  16 loader processes, queues sized for 8 GB — its default 36 GB got it killed for memory here)
  writing its result file; ``xreduce run reduction=xpcs`` (backend=local, engine numpy
  and opencl) writing chunk, master and preview. Interpreter start-up and imports are included for both.
* **memory**: the correlator alone on frames already in memory, fed 64 frames at a time, up to g2:
  boost-corr's ``MultitauCorrelator`` (auto queue, ``max_memory`` as above, as its CLI) then
  ``normalize_multitau``; xreduce's ``XpcsStep.correlator`` then ``normalise``.

g2 is compared on the same delays (the lists must be equal) and dynamic bins: |Δg2| of each xreduce
engine against boost-corr's result file. No timed assertion: this prints figures for docs/xpcs.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the speckle generator
from bench_e2e import cpu_model  # noqa: E402  (this folder: the script's own)
from xpcs_speckle import speckle_frames  # noqa: E402

from reduction.azint.detectors import Detector  # noqa: E402
from reduction.azint.geometry import Geometry  # noqa: E402
from reduction.demo.bliss_writer import ScanSpec, write_dataset  # noqa: E402
from reduction.errors import EngineUnavailable  # noqa: E402
from reduction.io import bliss  # noqa: E402
from reduction.xpcs.multitau import normalise  # noqa: E402
from reduction.xpcs.partition import partition_from_geometry  # noqa: E402
from reduction.xpcs.step import READ_BLOCK, XpcsStep  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
N_DYN, PER, MODES, TAU0 = 10, 4, 2, 1000.0
DETECTOR, SCAN = "pilatus", "1.1"

#: boost-corr's correlator on frames in memory, run by the other interpreter: argv raw qmap repeat block max_memory;
#: prints {"rates": [...], "g2": [[...]], "delay": [...]} as JSON on its last line.
BOOST_MEMORY = r"""
import json, sys, time
import h5py, hdf5plugin, numpy as np, torch
from boost_corr import MultitauCorrelator
from boost_corr.xpcs_aps_8idi.xpcs_qpartitionmap import XpcsQPartitionMap
raw, qmap, repeat, block, max_memory = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
with h5py.File(raw, "r") as f:
    frames = f["/entry/data/data"][()]
n = len(frames)
x = torch.from_numpy(frames.reshape(n, -1))
rates = []
for _ in range(repeat):
    t0 = time.perf_counter()
    qpm = XpcsQPartitionMap(qmap, device="cpu")
    xb = MultitauCorrelator(frames.shape[1:], frame_num=n, queue_size=8, auto_queue=True, device="cpu",
                            mask_crop=qpm.mask_crop, normalize_frame=False, qpm=qpm, max_memory=max_memory)
    for b in range(0, n, block):
        xb.process(x[b:b + block])
    xb.post_process()
    _, multitau = xb.get_results()
    out = qpm.normalize_multitau(multitau)
    rates.append(n / (time.perf_counter() - t0))
    del xb
print(json.dumps({"rates": rates, "g2": np.asarray(out["g2"], float).tolist(),
                  "delay": np.asarray(out["delay_list"]).tolist(), "threads": torch.get_num_threads()}))
"""


@dataclass(frozen=True)
class Experiment:
    root: Path
    poni: Path
    qmap: Path
    raw: Path  # the BLISS dataset master
    boost_raw: Path  # /entry/data/data -> the BLISS scan's detector dataset
    shape: tuple[int, int]
    nframes: int


def _experiment(root: Path, shape: tuple[int, int], nframes: int) -> Experiment:
    """The speckle scan, its PONI and qmap, and boost-corr's view of it (written once per folder)."""
    raw = root / "RAW_DATA" / "speckle" / "speckle_0001" / "speckle_0001.h5"
    exp = Experiment(root, root / "geometry.poni", root / "qmap.h5", raw, root / "boost" / "speckle.h5", shape,
                     nframes)
    if (root / "done").exists():
        return exp
    root.mkdir(parents=True, exist_ok=True)
    geo = Geometry(dist=5.0, poni1=shape[0] / 2 * 75e-6, poni2=shape[1] / 2 * 75e-6, wavelength=1e-10,
                   detector=Detector("Detector", 75e-6, 75e-6, shape))
    exp.poni.write_text(geo.to_poni(), encoding="utf-8")
    part = partition_from_geometry(geo, npt=N_DYN, q_range=None, unit="q_nm^-1", static_per_dynamic=PER)
    with h5py.File(exp.qmap, "w") as f:  # APS layout: 1-based maps, 0 = unused
        f["qmap/dynamic_roi_map"] = part.dynamic_map
        f["qmap/static_roi_map"] = part.static_map
        f["qmap/mask"] = (part.static_map > 0).astype(np.int32)
    means = np.linspace(0.05, 1.0, part.n_static)
    tau = TAU0 * (part.dynamic_q[0] / part.dynamic_q) ** 2
    used = part.static_map > 0
    mean = np.where(used, means[np.clip(part.static_map - 1, 0, None)], 0.0)
    tau_c = np.where(used, tau[np.clip(part.dynamic_map - 1, 0, None)], 1.0)
    t0 = time.perf_counter()
    frames = speckle_frames(mean, tau_c, nframes, MODES, seed=3, dtype="uint8")
    print(f"  speckle {shape[0]}×{shape[1]} × {nframes} frames made in {time.perf_counter() - t0:.0f} s", flush=True)
    write_dataset(raw, [ScanSpec(frames)], frames_per_file=1000)
    del frames
    exp.boost_raw.parent.mkdir(exist_ok=True)
    with h5py.File(exp.boost_raw, "w") as f:
        f["entry/data/data"] = h5py.ExternalLink(str(raw), f"/{SCAN}/instrument/{DETECTOR}/data")
    with h5py.File(exp.boost_raw.parent / "speckle_metadata.hdf", "w") as f:  # boost-corr copies it into its result
        f["entry/schema_version"] = "1.0"
    (root / "done").touch()
    return exp


def _run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of a command; raises with its output if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def _boost_file(exp: Experiment, boost_python: str, out: Path,
                max_memory: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """boost-corr's CLI end to end: (seconds, g2 (K, D), delays, the mean count of each frame it read)."""
    shutil.rmtree(out, ignore_errors=True)
    cli = str(Path(boost_python).with_name("boost_corr"))
    seconds = _run([cli, "-r", str(exp.boost_raw), "-q", str(exp.qmap), "-o", str(out), "-i", "-1", "-nf", "0", "-w",
                    "--max-memory", str(max_memory)])
    (result,) = out.glob("*_results.hdf")
    with h5py.File(result, "r") as f:
        return (seconds, f["xpcs/multitau/normalized_g2"][()], f["xpcs/multitau/delay_list"][()],
                f["xpcs/spatial_mean/intensity_vs_time"][()][-1])


def _xreduce_file(exp: Experiment, engine: str, out: Path) -> tuple[float, np.ndarray, np.ndarray]:
    """``xreduce run reduction=xpcs`` end to end: (seconds, g2 (K, D), delays in frames)."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    seconds = _run([sys.executable, "-m", "hpc.cli", "run", "campaign=demo",
                    f"campaign.raw_data={exp.root / 'RAW_DATA'}", "campaign.monitor=null", "reduction=xpcs",
                    f"reduction.poni={exp.poni}",
                    f"reduction.qmap={exp.qmap}", f"reduction.engine={engine}", f"campaign.output={out}",
                    "backend=local"], env)
    (master,) = out.glob("*.nxs")
    with h5py.File(master, "r") as f:
        data = f[f"speckle_0001_{SCAN}/data"]
        return seconds, data["g2"][()], data["delay_difference"][()]


def _xreduce_memory(exp: Experiment, engine: str, repeat: int) -> tuple[list[float], np.ndarray, np.ndarray] | None:
    """The correlator alone on the frames in memory, up to g2: (frames/s per run, g2, the mean count
    of each frame), None without the engine."""
    cfg = {"kind": "xpcs", "poni": str(exp.poni), "qmap": str(exp.qmap), "engine": engine}
    try:
        step = XpcsStep(cfg)
    except EngineUnavailable as exc:
        print(f"  xreduce {engine}: unavailable ({exc})")
        return None
    part = step.partition
    series = np.concatenate([bliss.read_frames(exp.raw, SCAN, DETECTOR, b, min(b + 1000, exp.nframes))
                             .reshape(-1, part.dynamic_map.size)[:, part.pixels]
                             for b in range(0, exp.nframes, 1000)])
    step.correlator(part.static_index, part.n_static, exp.nframes).add(series[:READ_BLOCK])  # builds the kernels
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        mt = step.correlator(part.static_index, part.n_static, exp.nframes)
        for b in range(0, exp.nframes, READ_BLOCK):
            mt.add(series[b:b + READ_BLOCK])
        g2 = normalise(mt.result(), part.static_to_dynamic, part.n_dynamic).g2
        rates.append(exp.nframes / (time.perf_counter() - t0))
    return rates, g2, series.mean(axis=1, dtype=np.float64)


def _boost_memory(exp: Experiment, boost_python: str, repeat: int,
                  max_memory: float) -> tuple[list[float], np.ndarray, int]:
    proc = subprocess.run([boost_python, "-c", BOOST_MEMORY, str(exp.boost_raw), str(exp.qmap), str(repeat),
                           str(READ_BLOCK), str(max_memory)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"boost-corr in memory exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return res["rates"], np.asarray(res["g2"]), int(res["threads"])


def _median_rate(nframes: int, seconds: list[float]) -> float:
    return nframes / statistics.median(seconds)


def _compare(size: tuple[int, int, int], args: argparse.Namespace, work: Path) -> None:
    ny, nx, nframes = size
    exp = _experiment(work / f"{ny}x{nx}x{nframes}", (ny, nx), nframes)
    load0 = os.getloadavg()[0]
    print(f"\n{ny}×{nx} × {nframes} frames (uint8, {N_DYN} dynamic × {PER} static bins, every pixel), "
          f"medians of {args.repeat}, load {load0:.1f}", flush=True)
    engines = [e for e in args.engines if e == "numpy" or _has_opencl()]
    # from memory (also the reference g2: boost-corr's correlator on the frames as they are)
    mem_rate: dict[str, float] = {}
    b_rates, ref, threads = _boost_memory(exp, args.boost_python, args.repeat, args.boost_max_memory)
    mem_rate["boost-corr"] = statistics.median(b_rates)
    mem_g2 = {"boost-corr": ref}
    frame_mean = None
    for e in engines:
        got = _xreduce_memory(exp, e, args.repeat)
        if got is not None:
            mem_rate[f"xreduce {e}"], mem_g2[f"xreduce {e}"], frame_mean = statistics.median(got[0]), got[1], got[2]
    # end to end from the file, the runs of each tool interleaved
    times: dict[str, list[float]] = {"boost-corr": [], **{f"xreduce {e}": [] for e in engines}}
    g2s: dict[str, np.ndarray] = {}
    delays: dict[str, np.ndarray] = {}
    for _ in range(args.repeat):
        s, g2s["boost-corr"], delays["boost-corr"], boost_read = _boost_file(exp, args.boost_python,
                                                                              exp.root / "out-boost",
                                                                              args.boost_max_memory)
        times["boost-corr"].append(s)
        for e in engines:
            s, g2s[f"xreduce {e}"], delays[f"xreduce {e}"] = _xreduce_file(exp, e, exp.root / f"out-xreduce-{e}")
            times[f"xreduce {e}"].append(s)
    file_rate = {name: _median_rate(nframes, s) for name, s in times.items()}
    print(f"  {'':<16}{'file (frames/s)':>16}{'× boost-corr':>14}{'memory (frames/s)':>19}{'× boost-corr':>14}"
          f"{'max |Δg2| file':>16}{'… memory':>10}")
    boost_delays = np.asarray(delays["boost-corr"], np.int64)
    for name in times:
        same = np.array_equal(np.asarray(delays[name], np.int64), boost_delays) and g2s[name].shape == ref.shape
        dg2 = float(np.nanmax(np.abs(g2s[name] - ref))) if same else float("nan")
        dmem = float(np.nanmax(np.abs(mem_g2[name] - ref))) if name in mem_g2 and name != "boost-corr" else 0.0
        mem = mem_rate.get(name, float("nan"))
        print(f"  {name:<16}{file_rate[name]:>16.0f}{file_rate[name] / file_rate['boost-corr']:>14.2f}"
              f"{mem:>19.0f}{mem / mem_rate['boost-corr']:>14.2f}{dg2:>16.2e}{dmem:>10.2e}"
              + ("" if same else "  (delay lists differ!)"))
    print("  (|Δg2|: against boost-corr's g2 from memory, on the same delays and dynamic bins)")
    if frame_mean is not None:  # boost-corr's own file reader: does it see the frames that are in the file?
        wrong = int((~np.isclose(boost_read, frame_mean, rtol=1e-5, atol=1e-6)).sum())
        print(f"  boost-corr from the file: {wrong} of {nframes} frames it correlated are not the file's frame at "
              f"that index (its intensity_vs_time against the frames' means)")
    print(f"  {len(boost_delays)} delays, equal in both: "
          f"{all(np.array_equal(np.asarray(d, np.int64), boost_delays) for d in delays.values())}; "
          f"boost-corr torch threads {threads}; load {load0:.1f} → {os.getloadavg()[0]:.1f}", flush=True)


def _has_opencl() -> bool:
    from reduction.xpcs.opencl import open_context

    try:
        open_context("auto")
        return True
    except EngineUnavailable as exc:
        print(f"  xreduce opencl: unavailable ({exc})")
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boost-python", required=True, help="the interpreter of boost-corr's virtual environment")
    parser.add_argument("--size", type=int, nargs=3, action="append", metavar=("NY", "NX", "FRAMES"),
                        help="detector rows, columns and frames (repeatable; default 256 256 10000 and 1024 1024 2000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--boost-max-memory", type=float, default=8.0,
                        help="boost-corr's max_memory, GB (its default, 36, sizes queues that this machine's "
                             "23 GB cannot hold)")
    parser.add_argument("--engines", nargs="+", default=["numpy", "opencl"], choices=["numpy", "opencl"])
    parser.add_argument("--workdir", type=Path,
                        help="keep the frames here (reused by a rerun); default a temporary folder")
    args = parser.parse_args()
    sizes = [tuple(s) for s in args.size] if args.size else [(256, 256, 10000), (1024, 1024, 2000)]
    version = subprocess.run([args.boost_python, "-c", "import boost_corr, torch; print(boost_corr.__version__, "
                              "torch.__version__)"], capture_output=True, text=True, check=True).stdout.split()
    print(f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores ({cpu_model()}), boost-corr {version[0]} "
          f"(torch {version[1]}, CPU), xreduce from {REPO}")
    with tempfile.TemporaryDirectory(prefix="bench-boost-corr-") as tmp:
        work = args.workdir or Path(tmp)
        for size in sizes:
            _compare(size, args, work)


if __name__ == "__main__":
    main()
