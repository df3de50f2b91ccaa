"""End to end: raw BLISS data on disk -> I(q) files, xreduce vs a plain pyFAI script, and the stage bound.

    python tests/benchmarks/bench_e2e.py                         # 2 scans x 96 Eiger4M frames
    python tests/benchmarks/bench_e2e.py --frames 32 --skip-pyfai # quick check
    python tests/benchmarks/bench_e2e.py --engines numpy --keep --workdir /scratch/me

Writes a synthetic experiment in the BLISS layout (``--scans`` scans of ``--frames`` uint32 Eiger4M
frames, lima files of 32 frames, bitshuffle-LZ4, one frame per chunk, behind a VDS; Poisson counts
of a LaB6/CeO2 calibrant pattern at a low count rate -- a fraction of a count per pixel, rings of a
few counts -- about 0.8 MB per compressed frame), then measures, in this one run:

* **read, h5py**: frames/s read through the VDS and HDF5's filter pipeline (``dset[b0:b1]``);
* **read, direct**: frames/s of ``reduction.io.bliss.read_frames`` with direct-chunk reads on (raw
  chunks, decompressed in a thread pool);
* **decompress**: frames/s of bitshuffle-LZ4 decompression alone, one scan's raw chunks in memory:
  on the host's threads (the ``bitshuffle`` library) and on the OpenCL device (``BSLZ4Decoder``:
  upload + decode into device memory, as the OpenCL engine does before its kernels);
* **kernel**: frames/s of ``Integrator.integrate1d`` on 32 frames already in memory (1000 bins,
  q_nm^-1, bbox, Poisson error model), for each engine;
* **stage bound**: 1 / (1/read_direct + 1/kernel) per engine -- decompression and the kernel share
  the same cores, so a pipeline that overlaps them perfectly still cannot beat this;
* **pyFAI script**: a plain script run as a subprocess (h5py reads frame by frame,
  ``AzimuthalIntegrator.integrate1d(method=("bbox", "csr", "cython"), error_model="poisson",
  npt=1000)``, I and sigma written to one HDF5 file per scan);
* **xreduce run**: ``python -m hpc.cli run campaign=demo ...`` as a subprocess per engine, cold
  (a fresh ``XREDUCE_CACHE_DIR``/``POCL_CACHE_DIR``: matrix and kernels built), warm (same caches,
  a new output folder), warm with ``XREDUCE_DIRECT_READS=0`` (reads through h5py) and, for OpenCL, warm
  with device decompression the other way round from the device's default
  (``XREDUCE_DEVICE_DECOMPRESSION``: on for GPUs, off for CPU devices).

Each command is given as frames/s of its whole wall time (interpreter start, imports, planning,
merge included) and of its own "reduced N frames in S s" line. The ratios at the end compare xreduce
warm with the pyFAI script (target >= 6x) and with the stage bound (target >= 85 %), and the
intensities of xreduce and pyFAI for the first scan (same q bins; bins with at least 10 % of the
median intensity), so that speed is not reported without accuracy.

The raw files are read back from the page cache (they were just written): the figures are those of
decompression and integration, not of a disk. ``--workdir`` is where a temporary folder is made;
it is removed at the end unless ``--keep``. docs/performance.md explains the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from reduction import Integrator  # noqa: E402
from reduction.demo.bliss_writer import DEMO_WAVELENGTH, ScanSpec, demo_geometry, demo_mask, write_dataset  # noqa: E402
from reduction.demo.synthetic import calibrant_d_spacings, calibrant_image  # noqa: E402
from reduction.errors import EngineUnavailable  # noqa: E402
from reduction.io.bliss import HC_KEV_ANGSTROM  # noqa: E402

DETECTOR_MODEL, DETECTOR = "Eiger4M", "eiger"  # model (PONI), name under measurement/
FRAMES_PER_FILE = 32
BLOCK = 32  # frames per read and per kernel call, as reduction/azint/step.py
NPT, UNIT, SPLITTING = 1000, "q_nm^-1", "bbox"
BACKGROUND, RING_HEIGHT = 0.05, 3.0  # counts: background at 2theta = 0, peak height of the rings
GAP = np.iinfo(np.uint32).max  # the value an Eiger writes in its module gaps
REDUCED = re.compile(r"reduced (\d+) frames in ([0-9.]+) s")

PYFAI_SCRIPT = '''\
"""A plain pyFAI reduction: h5py reads, AzimuthalIntegrator.integrate1d per frame, I and sigma per scan."""
import sys, time
from pathlib import Path
import h5py, hdf5plugin, numpy as np, pyFAI

master, poni, mask, out, detector = sys.argv[1:6]
scans = sys.argv[6:]
ai = pyFAI.load(poni)
ai.set_mask(ai.detector.calc_mask().astype(bool) | (np.load(mask) != 0))  # module gaps + beamstop
t0 = time.perf_counter()  # the frames: read, CSR matrix built on the first frame, integrated, written
n = 0
with h5py.File(master, "r") as f:
    for scan in scans:
        data = f[f"{scan}/measurement/{detector}"]
        intensity, sigma = [], []
        for i in range(data.shape[0]):
            res = ai.integrate1d(data[i], NPT, unit="UNIT", method=("SPLITTING", "csr", "cython"),
                                 error_model="poisson")
            intensity.append(res.intensity)
            sigma.append(res.sigma)
        with h5py.File(Path(out) / f"{scan}.h5", "w") as o:
            o["q"] = res.radial
            o["I"] = np.array(intensity)
            o["sigma"] = np.array(sigma)
        n += data.shape[0]
print(f"reduced {n} frames in {time.perf_counter() - t0:.1f} s")
'''.replace("NPT", str(NPT)).replace("UNIT", UNIT).replace("SPLITTING", SPLITTING)


# -- the experiment ---------------------------------------------------------------------------------
@dataclass
class Experiment:
    raw_data: Path
    master: Path
    poni: Path
    mask: Path
    scans: list[str]
    nframes: int  # per scan
    shape: tuple[int, int]
    compressed: float  # bytes per frame in the lima files
    mean_counts: float  # expected counts per pixel, on average


class _Frames:
    """frames(start, stop) of one scan: Poisson draws of a pattern (one seed per frame), in threads."""

    def __init__(self, expected: np.ndarray, gaps: np.ndarray, seed: tuple[int, ...], pool: ThreadPoolExecutor):
        self.expected, self.gaps, self.seed, self.pool = expected, gaps, seed, pool

    def frame(self, i: int) -> np.ndarray:
        frame = np.random.default_rng([*self.seed, i]).poisson(self.expected).astype(np.uint32)
        frame[self.gaps] = GAP
        return frame

    def __call__(self, start: int, stop: int) -> np.ndarray:
        return np.stack(list(self.pool.map(self.frame, range(start, stop))))


def write_experiment(root: Path, n_scans: int, n_frames: int) -> Experiment:
    geo = demo_geometry(DETECTOR_MODEL)
    session = root / "ihch0000" / "id31" / "20261124"
    raw_data = session / "RAW_DATA"
    calibration = session / "SCRIPTS" / "calibration"
    calibration.mkdir(parents=True)
    poni, mask = calibration / f"{DETECTOR_MODEL}.poni", calibration / "mask.npy"
    poni.write_text(geo.to_poni(), encoding="utf-8")
    np.save(mask, demo_mask(geo))
    tth = geo.twotheta()
    expected = {name: calibrant_image(tth, DEMO_WAVELENGTH, calibrant_d_spacings(name), intensity=RING_HEIGHT,
                                      background=BACKGROUND, poisson=False, dtype=np.float64)
                for name in ("LaB6", "CeO2")}
    energy = HC_KEV_ANGSTROM / (DEMO_WAVELENGTH * 1e10)
    master = raw_data / "bench" / "bench_0001" / "bench_0001.h5"
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        specs = []
        for s in range(n_scans):
            calibrant = ("LaB6", "CeO2")[s % 2]
            specs.append(ScanSpec(_Frames(expected[calibrant], geo.detector.mask, (0, s), pool),
                                  title=f"loopscan {n_frames} 0.1", energy_kev=energy, nframes=n_frames,
                                  frame_shape=geo.shape, dtype="uint32", sample=calibrant))
        write_dataset(master, specs, detector=DETECTOR, compression="bitshuffle", frames_per_file=FRAMES_PER_FILE)
    lima = sum(p.stat().st_size for p in master.parent.glob("scan*/*.h5"))
    mean = float(np.mean([e[~geo.detector.mask].mean() for e in expected.values()]))
    return Experiment(raw_data, master, poni, mask, [f"{s + 1}.1" for s in range(n_scans)], n_frames, geo.shape,
                      lima / (n_scans * n_frames), mean)


# -- in-process stages --------------------------------------------------------------------------------
def _blocks(n: int) -> list[tuple[int, int]]:
    return [(b, min(b + BLOCK, n)) for b in range(0, n, BLOCK)]


def time_h5py(exp: Experiment) -> float:
    """Seconds to read every frame through h5py (the VDS, HDF5's filter pipeline), 32 at a time."""
    import h5py
    import hdf5plugin  # noqa: F401 - registers the bitshuffle filter

    start = time.perf_counter()
    with h5py.File(exp.master, "r", locking=False) as f:
        for scan in exp.scans:
            data = f[f"{scan}/measurement/{DETECTOR}"]
            for b0, b1 in _blocks(exp.nframes):
                data[b0:b1]
    return time.perf_counter() - start


class _Fallbacks(logging.Handler):
    """Counts reduction.io.direct's messages: each one is a read that went through h5py instead."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def time_direct(exp: Experiment) -> tuple[float, list[str]]:
    """Seconds to read every frame with read_frames, direct reads on (each block dropped before the next
    is read, as a pipeline that reuses its memory would); the messages of reads that fell back to h5py."""
    from reduction.io.bliss import read_frames

    os.environ["XREDUCE_DIRECT_READS"] = "1"
    logger, handler = logging.getLogger("reduction.io.direct"), _Fallbacks()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        start = time.perf_counter()
        for scan in exp.scans:
            for b0, b1 in _blocks(exp.nframes):
                frames = read_frames(exp.master, scan, DETECTOR, b0, b1)
                del frames
        seconds = time.perf_counter() - start
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return seconds, handler.messages


@dataclass
class Decompression:
    cpu: float  # seconds to decompress every frame on the host's threads (bitshuffle library)
    device: float | None  # seconds on the OpenCL device: upload + decode into device memory
    device_name: str  # the device, or why it was not measured
    default_on: bool  # XREDUCE_DEVICE_DECOMPRESSION's default for this device


def time_decompression(exp: Experiment, rounds: int) -> Decompression:
    """Decompression alone, the raw chunks already in memory (one scan): on the host's threads
    (CompressedFrames.decode, as read_frames) and on the OpenCL device (BSLZ4Decoder, the chunks
    uploaded and decoded into a device buffer, as the OpenCL engine does before its kernels)."""
    from reduction.io.bliss import read_frames_compressed
    from reduction.io.direct import CompressedFrames

    blocks = [read_frames_compressed(exp.master, exp.scans[0], DETECTOR, b0, b1) for b0, b1 in _blocks(exp.nframes)]
    packed = [b for b in blocks if isinstance(b, CompressedFrames)]
    if len(packed) != len(blocks):
        return Decompression(float("nan"), None, "frames not read as bitshuffle-LZ4 chunks", False)
    cpu = min(_timed(lambda: [b.decode() for b in packed]) for _ in range(rounds))
    try:
        import pyopencl as cl

        from reduction.azint.engines.bslz4_opencl import BSLZ4Decoder, device_decompression
        from reduction.azint.engines.device import open_device

        info, dev = open_device("auto")
        queue = cl.CommandQueue(cl.Context([dev]))
        decoder = BSLZ4Decoder(queue.context, queue)
        out = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE, BLOCK * exp.shape[0] * exp.shape[1] * 4)
        decoder.decompress(packed[0].chunks, np.uint32, exp.shape, out=out)  # kernels built
        device = min(_timed(lambda: [decoder.decompress(b.chunks, np.uint32, exp.shape, out=out) for b in packed])
                     for _ in range(rounds))
        return Decompression(cpu, device, str(info), device_decompression(info.kind, {}))
    except (ImportError, EngineUnavailable) as exc:
        return Decompression(cpu, None, f"no OpenCL device ({exc})", False)


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@dataclass
class Kernel:
    best: float  # seconds per call, best of the timed calls
    first_empty: float  # seconds of the first call, empty cache: matrix (and OpenCL kernels) built
    first_cached: float  # seconds of the first call of a second Integrator, the matrix in the cache
    used: str  # the engine, as the integrator describes it


def time_kernel(exp: Experiment, engine: str, frames: np.ndarray, cache: Path, repeats: int) -> Kernel:
    """Integrator.integrate1d on ``frames`` (in memory): first calls, then the best of ``repeats``."""
    from reduction import Geometry

    geo, mask = Geometry.from_poni(exp.poni), np.load(exp.mask)
    options = dict(npt=NPT, unit=UNIT, splitting=SPLITTING, error_model="poisson")

    def first_call() -> tuple[Integrator, float]:
        integ = Integrator(geo, mask=mask, engine=engine, device="auto" if engine == "opencl" else None,
                           cache_dir=cache)
        start = time.perf_counter()
        integ.integrate1d(frames, **options)
        return integ, time.perf_counter() - start

    integ, first_empty = first_call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        integ.integrate1d(frames, **options)
        best = min(best, time.perf_counter() - start)
    used = getattr(integ, "engine_description", engine)
    del integ
    _, first_cached = first_call()
    return Kernel(best, first_empty, first_cached, used)


# -- commands ---------------------------------------------------------------------------------------
@dataclass
class Run:
    label: str
    wall: float
    frames: int
    own: float | None  # seconds of its "reduced N frames in S s" line
    detail: str = ""  # engine used, time by stage

    @property
    def wall_fps(self) -> float:
        return self.frames / self.wall

    @property
    def own_fps(self) -> float | None:
        return None if not self.own else self.frames / self.own


def _command(label: str, cmd: list[str], env: dict[str, str], frames: int) -> Run:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    text = done.stdout + "\n" + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"{label} failed (exit {done.returncode}): {' '.join(cmd)}\n{text[-4000:]}")
    match = REDUCED.search(text)
    if match and int(match.group(1)) != frames:
        raise SystemExit(f"{label}: reduced {match.group(1)} frames, expected {frames}\n{text[-4000:]}")
    detail = []
    engine = re.search(r"frames/s; engine (.*)\)\s*$", text, re.MULTILINE)
    if engine:
        detail.append(f"engine {engine.group(1)}")
    stages = re.search(r"time by stage: (.*)", text)
    if stages:
        detail.append(stages.group(1).strip())
    return Run(label, wall, frames, float(match.group(2)) if match else None, "; ".join(detail))


def xreduce_run(exp: Experiment, work: Path, label: str, engine: str, cache: Path, out: Path, fpc: int,
                direct: bool, device_decompression: str = "auto") -> Run:
    cmd = [sys.executable, "-m", "hpc.cli", "run", "campaign=demo", f"campaign.raw_data={exp.raw_data}",
           f"campaign.detector={DETECTOR}", "campaign.monitor=null", f"reduction.poni={exp.poni}",
           f"reduction.mask={exp.mask}", f"reduction.npt={NPT}", f"reduction.unit='{UNIT}'",
           f"reduction.splitting={SPLITTING}", "reduction.error_model=poisson", f"reduction.engine={engine}",
           f"partition.frames_per_chunk={fpc}", f"campaign.output={out}"]
    env = {**os.environ, "XREDUCE_CACHE_DIR": str(cache), "POCL_CACHE_DIR": str(cache / "pocl"),
           "XREDUCE_DIRECT_READS": "1" if direct else "0", "TQDM_DISABLE": "1",
           "XREDUCE_DEVICE_DECOMPRESSION": device_decompression}
    return _command(label, cmd, env, len(exp.scans) * exp.nframes)


def pyfai_run(exp: Experiment, work: Path) -> tuple[Run, Path]:
    script, out = work / "pyfai_script.py", work / "out-pyfai"
    script.write_text(PYFAI_SCRIPT, encoding="utf-8")
    out.mkdir()
    cmd = [sys.executable, str(script), str(exp.master), str(exp.poni), str(exp.mask), str(out), DETECTOR,
           *exp.scans]
    return _command("pyFAI script", cmd, dict(os.environ), len(exp.scans) * exp.nframes), out


def compare(exp: Experiment, xreduce_out: Path, pyfai_out: Path) -> str:
    """Largest difference of I, xreduce (master file) vs pyFAI, first scan: relative to each bin's mean
    intensity over the frames, on bins with at least 10 % of the median of those means."""
    import h5py

    with h5py.File(pyfai_out / f"{exp.scans[0]}.h5", "r") as f:
        q_ref, i_ref = f["q"][()], f["I"][()]
    masters = sorted(xreduce_out.glob("*.nxs"))
    if len(masters) != 1:
        return f"{len(masters)} xreduce master files in {xreduce_out}: I not compared"
    with h5py.File(masters[0], "r") as f:
        entry = f"{exp.master.parent.name}_{exp.scans[0]}"
        if f"{entry}/data/I" not in f:
            return f"no {entry}/data/I in {masters[0].name}: I not compared"
        radial, intensity = f[f"{entry}/data/radial_axis"][()], f[f"{entry}/data/I"][()]
    if radial.shape != q_ref.shape or not np.allclose(radial, q_ref, rtol=1e-6, atol=0):
        return (f"q bins differ (xreduce {radial[0]:.4f}..{radial[-1]:.4f} in {len(radial)}, pyFAI "
                f"{q_ref[0]:.4f}..{q_ref[-1]:.4f} in {len(q_ref)}): I not compared")
    if intensity.shape != i_ref.shape:
        return f"I shapes differ (xreduce {intensity.shape}, pyFAI {i_ref.shape}): not compared"
    mean = np.abs(i_ref).mean(axis=0)
    sel = mean >= 0.1 * np.median(mean[mean > 0])
    diff = np.abs(intensity[:, sel] - i_ref[:, sel]).max(axis=0) / mean[sel]
    return (f"I, xreduce vs pyFAI, scan {exp.scans[0]}: max difference {diff.max():.2e} of the bin's mean intensity "
            f"({sel.sum()} bins x {len(i_ref)} frames; q bins equal to 1e-6)")


# -- report -----------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name, for the report (also bench_boost_corr.py's)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _versions() -> str:
    import h5py
    import pyFAI

    return (f"numpy {np.__version__}, h5py {h5py.version.version} (HDF5 {h5py.version.hdf5_version}), "
            f"pyFAI {pyFAI.version}")


def _row(label: str, fps: float | None, note: str = "", width: int = 58) -> None:
    value = f"{fps:9.1f}" if fps else "        -"
    print(f"  {label:{width}s}{value}  {note}".rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=96, help="frames per scan (default 96)")
    parser.add_argument("--scans", type=int, default=2, help="scans (default 2)")
    parser.add_argument("--frames-per-chunk", type=int, default=96, help="partition.frames_per_chunk (default 96)")
    parser.add_argument("--engines", default="numpy,opencl", help="xreduce engines (default numpy,opencl)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the two in-process reads, best kept")
    parser.add_argument("--repeats", type=int, default=3, help="timed kernel calls per engine, best kept")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary folder is made")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--skip-pyfai", action="store_true", help="do not run the pyFAI script")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if min(args.frames, args.scans, args.rounds, args.repeats, args.frames_per_chunk) < 1:
        parser.error("--frames, --scans, --rounds, --repeats and --frames-per-chunk must be >= 1")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="xreduce-bench-e2e-", dir=args.workdir))
    try:
        return _bench(args, engines, work)
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, engines: list[str], work: Path) -> int:
    # this process's matrices, kernel binaries and OpenCL probe markers go to the work folder too
    os.environ["XREDUCE_CACHE_DIR"] = str(work / "kernel-cache")
    os.environ["POCL_CACHE_DIR"] = str(work / "kernel-cache" / "pocl")
    load_before = os.getloadavg()
    date = datetime.now().astimezone().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    exp = write_experiment(work / "data", args.scans, args.frames)
    written = time.perf_counter() - t0
    total = len(exp.scans) * exp.nframes
    raw = exp.shape[0] * exp.shape[1] * 4

    # in-process stages: the two reads alternate, best of --rounds each
    h5py_t, direct_t, fallbacks = [], [], []
    for _ in range(args.rounds):
        h5py_t.append(time_h5py(exp))
        seconds, messages = time_direct(exp)
        direct_t.append(seconds)
        fallbacks += messages
    h5py_s, direct_s = min(h5py_t), min(direct_t)
    from reduction.io.bliss import read_frames

    decompression = time_decompression(exp, args.rounds)
    first = read_frames(exp.master, exp.scans[0], DETECTOR, 0, min(BLOCK, exp.nframes))  # the kernel's frames
    kernel: dict[str, Kernel] = {}
    skipped: dict[str, str] = {}
    for engine in list(engines):
        try:
            kernel[engine] = time_kernel(exp, engine, first, work / "kernel-cache" / engine, args.repeats)
        except EngineUnavailable as exc:
            skipped[engine] = str(exc)
            engines.remove(engine)
    del first

    # commands
    runs: dict[str, Run] = {}
    pyfai_out = None
    if not args.skip_pyfai:
        runs["pyfai"], pyfai_out = pyfai_run(exp, work)
    for engine in engines:
        cache = work / f"cache-{engine}"
        for key, label, direct in (("cold", "cold (fresh cache: matrix, kernels built)", True),
                                   ("warm", "warm (same cache, new output)", True),
                                   ("warm-h5py", "warm, XREDUCE_DIRECT_READS=0", False)):
            out = work / f"out-{engine}-{key}"
            runs[f"{engine}-{key}"] = xreduce_run(exp, work, f"xreduce[{engine}] {label}", engine, cache, out,
                                                  args.frames_per_chunk, direct)
        if engine == "opencl" and decompression.device is not None:  # the other side of the device's default
            flip = "0" if decompression.default_on else "1"
            runs[f"{engine}-warm-devdec"] = xreduce_run(
                exp, work, f"xreduce[{engine}] warm, XREDUCE_DEVICE_DECOMPRESSION={flip}", engine, cache,
                work / f"out-{engine}-devdec", args.frames_per_chunk, True, flip)
    accuracy = None
    if pyfai_out is not None and engines:
        try:
            accuracy = compare(exp, work / f"out-{engines[0]}-warm", pyfai_out)
        except Exception as exc:  # noqa: BLE001 - a report line, not a failure of the benchmark
            accuracy = f"I not compared ({type(exc).__name__}: {exc})"
    load_after = os.getloadavg()

    # report
    print(f"xreduce end to end: {DETECTOR_MODEL} {exp.shape[0]}x{exp.shape[1]} uint32, {len(exp.scans)} scans x "
          f"{exp.nframes} frames = {total}, lima files of {FRAMES_PER_FILE} frames, bitshuffle-LZ4, "
          f"{exp.compressed / 1e6:.2f} MB/frame compressed ({raw / 1e6:.1f} MB raw, "
          f"{raw / exp.compressed:.0f}x), mean {exp.mean_counts:.2f} counts/pixel, rings {RING_HEIGHT:g} counts high")
    print(f"  machine: {cpu_model()}, {os.cpu_count()} CPUs ({_usable_cpus()} usable), Python "
          f"{platform.python_version()}; {date}")
    print(f"  load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (after: this benchmark "
          f"included); {_versions()}")
    print(f"  integrate1d: npt={NPT}, unit={UNIT}, splitting={SPLITTING}, error_model=poisson; blocks of {BLOCK} "
          f"frames; xreduce partition.frames_per_chunk={args.frames_per_chunk}; experiment written in "
          f"{written:.1f} s")
    print(f"  {'in this process (reads: best of ' + str(args.rounds) + ' rounds, alternating)':58s} frames/s")
    _row("read, h5py (VDS + HDF5 filter pipeline)", total / h5py_s)
    _row("read, direct chunks + decompression (read_frames)", total / direct_s,
         f"({len(fallbacks)} reads fell back to h5py: {fallbacks[0]})" if fallbacks else "")
    scan_frames = exp.nframes
    _row("decompress, CPU threads (bitshuffle), chunks in memory", scan_frames / decompression.cpu)
    _row("decompress, OpenCL device (upload + decode), chunks in memory",
         scan_frames / decompression.device if decompression.device else None,
         f"{decompression.device_name}; device decompression {'on' if decompression.default_on else 'off'} "
         "by default here")
    bound = {}
    for engine in engines:
        k, nblock = kernel[engine], min(BLOCK, exp.nframes)
        _row(f"kernel, integrate1d[{engine}] B={nblock}, frames in memory", nblock / k.best, k.used)
        bound[engine] = 1.0 / (direct_s / total + k.best / nblock)
    for engine, k in kernel.items():
        print(f"  first integrate1d[{engine}] call: {k.first_empty:.2f} s with an empty cache (matrix"
              f"{', kernels' if engine == 'opencl' else ''} built), {k.first_cached:.2f} s for a new Integrator with "
              f"the matrix in the cache; then {k.best:.2f} s per call")
    for engine, why in skipped.items():
        print(f"  kernel, integrate1d[{engine}]: engine unavailable, skipped ({why})")
    for engine in engines:
        _row(f"stage bound[{engine}] 1/(1/read_direct + 1/kernel)", bound[engine])
    print(f"  {'commands, one run each':58s}{'wall':>9s}  {'own line':>8s}  frames/s: of the whole command's wall "
          f"time | of its own 'reduced N frames in S s' line")
    for run in runs.values():
        own = f"{run.own_fps:8.1f}" if run.own_fps else "       -"
        own_s = f", own line {run.own:.1f} s" if run.own else ""
        print(f"  {run.label:58s}{run.wall_fps:9.1f}  {own}  ({run.wall:.1f} s wall{own_s})")
        if run.detail:
            print(f"      {run.detail}")
    print("  ratios:")
    pyfai = runs.get("pyfai")
    for engine in engines:
        warm = runs[f"{engine}-warm"]
        if pyfai is not None:
            own = (f", own lines {warm.own_fps / pyfai.own_fps:.1f}x" if warm.own_fps and pyfai.own_fps else "")
            print(f"    xreduce[{engine}] warm / pyFAI script: wall {warm.wall_fps / pyfai.wall_fps:.1f}x{own}"
                  f"   (target >= 6x)")
        own_b = f"own line {100 * warm.own_fps / bound[engine]:.0f} %, " if warm.own_fps else ""
        print(f"    xreduce[{engine}] warm / stage bound: {own_b}wall {100 * warm.wall_fps / bound[engine]:.0f} %"
              f"   (target >= 85 %)")
        devdec = runs.get(f"{engine}-warm-devdec")
        if devdec is not None and warm.own_fps and devdec.own_fps:
            pair = "on / off" if decompression.default_on else "off / on"
            print(f"    xreduce[{engine}] warm, device decompression {pair} (the default first): own line "
                  f"{warm.own_fps / devdec.own_fps:.2f}x, wall {warm.wall_fps / devdec.wall_fps:.2f}x")
        h5 = runs[f"{engine}-warm-h5py"]
        if warm.own_fps and h5.own_fps:
            print(f"    xreduce[{engine}] warm, direct reads on / off: own line {warm.own_fps / h5.own_fps:.1f}x, "
                  f"wall {warm.wall_fps / h5.wall_fps:.1f}x")
    print(f"    read direct / read h5py: {h5py_s / direct_s:.1f}x")
    if accuracy:
        print(f"  {accuracy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
