"""The campaign layer at scale, through the real commands: `xreduce plan`, `status` and `merge` of 10 000 scans.

Run from the repository root::

    .venv/bin/python tests/benchmarks/bench_campaign.py                 # 100 files x 100 scans
    .venv/bin/python tests/benchmarks/bench_campaign.py --files 20 --scans 50 --keep /tmp/campaign-bench

What it does, each command a subprocess timed from outside (interpreter, imports and config included):

1. writes ``--files`` BLISS dataset master files of ``--scans`` finished scans each
   (:func:`tests/bliss_helpers.write_metadata_only_experiment`: Pilatus1M-shaped frames behind a VDS
   over lima files that are never written, a monitor, an energy and 20 more counters per scan);
2. ``xreduce plan`` (one chunk per scan) — target < 10 s for 10 000 scans;
3. writes every chunk's result file with the real chunk writer (``reduction.azint.chunkfile``:
   the format a worker writes, 100 frames x 100 bins of a real integration, the same numbers for
   every chunk) — the frames are not there to reduce, and reducing 10 000 scans is not what this measures;
4. ``xreduce status`` (10 000 chunk files checked) — target < 3 s;
5. ``xreduce merge`` (one master file of 10 000 NXentry groups, virtual datasets, and its PNG
   preview) — target < 60 s.

The exit code is 1 when a target is missed. The files are in the page cache (just written); a
parallel filesystem adds its metadata latency on top.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

from bliss_helpers import write_metadata_only_experiment  # noqa: E402

from reduction.azint.chunkfile import ChunkMeta, ChunkWriter  # noqa: E402
from reduction.azint.integrator import Integrator  # noqa: E402
from reduction.demo.bliss_writer import demo_geometry  # noqa: E402

NFRAMES, NPT = 100, 100
TARGETS = {"plan": 10.0, "status": 3.0, "merge": 60.0}


def _xreduce(command: str, *args: str, env: dict[str, str]) -> tuple[float, str]:
    """Seconds and output of ``xreduce COMMAND ARGS``; stops the benchmark when it fails."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hpc.cli", command, *args], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).resolve().parents[2])
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"xreduce {command} failed (rc {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def write_chunk_files(plan_path: Path, poni: Path) -> tuple[int, float]:
    """Every chunk of the plan as a finished chunk file, from one real integration; (files, seconds)."""
    plan = json.loads(plan_path.read_text())
    geo = demo_geometry("Pilatus1M")
    frames = np.random.default_rng(0).poisson(5.0, (10, *geo.shape)).astype(np.int32)
    result = Integrator(geo, engine="numpy", cache_dir=False).integrate1d(frames, npt=NPT, error_model="poisson")
    output, config_json = Path(plan["output"]), json.dumps(plan["config"])
    start = time.perf_counter()
    for chunk in plan["chunks"]:
        meta = ChunkMeta(chunk_id=chunk["id"], config_hash=plan["config_hash"], kind="azint1d",
                         dataset=chunk["dataset"], scan=chunk["scan"], frame_start=chunk["start"],
                         frame_stop=chunk["stop"], poni=poni.read_text(), config_json=config_json,
                         wavelength=geo.wavelength, energy_kev=None, solid_angle_applied=True,
                         polarization_applied=False, flat_applied=False, monitor_applied=False)
        with ChunkWriter(output / "chunks" / f"{chunk['id']}.h5", meta) as writer:
            for offset in range(0, meta.nframes, len(frames)):
                writer.write(offset, result)
            writer.note_engine("numpy")
    return len(plan["chunks"]), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100, help="dataset master files (default 100)")
    parser.add_argument("--scans", type=int, default=100, help="scans per file (default 100)")
    parser.add_argument("--keep", type=Path, default=None, help="write the files here and keep them")
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()}, h5py {h5py.__version__}, HDF5 {h5py.version.hdf5_version}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="xreduce-bench-campaign-") as tmp:
        root = (args.keep or Path(tmp)).absolute()
        start = time.perf_counter()
        write_metadata_only_experiment(root, args.files, args.scans, n_frames=NFRAMES, extra_counters=20)
        poni = root / "Pilatus1M.poni"
        poni.write_text(demo_geometry("Pilatus1M").to_poni(), encoding="utf-8")
        print(f"wrote {args.files} master files x {args.scans} scans in {time.perf_counter() - start:.1f} s "
              f"under {root}")
        out = root / "processed"
        env = {**os.environ, "TQDM_DISABLE": "1", "XREDUCE_CACHE_DIR": str(root / "cache")}
        overrides = ["campaign=demo", f"campaign.raw_data={root / 'RAW_DATA'}", f"reduction.poni={poni}",
                     "reduction.mask=null", f"reduction.npt={NPT}", "reduction.engine=numpy",
                     f"partition.frames_per_chunk={NFRAMES}", f"campaign.output={out}"]
        seconds = {}
        seconds["plan"], _ = _xreduce("plan", *overrides, env=env)
        files, written = write_chunk_files(out / "plan.json", poni)
        print(f"wrote {files} chunk files in {written:.1f} s")
        seconds["status"], text = _xreduce("status", str(out), env=env)
        total = text.split("\ntotal", 1)[1].split()
        assert int(total[3]) == files, f"status does not count every chunk done:\n{text[-600:]}"
        seconds["merge"], _ = _xreduce("merge", *overrides, env=env)
        with h5py.File(next(out.glob("*.nxs")), "r") as f:
            entries = len(f)
    scans = args.files * args.scans
    ok = True
    print(f"\n{scans} scans, {files} chunks, master file of {entries} entries:")
    for command, target in TARGETS.items():
        verdict = ""
        if scans == 10_000:
            ok &= seconds[command] < target
            verdict = f"   target < {target:.0f} s: {'OK' if seconds[command] < target else 'TOO SLOW'}"
        print(f"  xreduce {command:<7} {seconds[command]:6.1f} s = {1e3 * seconds[command] / scans:5.2f} ms per scan"
              f"{verdict}")
    if scans != 10_000:
        print(f"(the targets are for 10 000 scans: plan < {TARGETS['plan']:.0f} s, status < {TARGETS['status']:.0f} s, "
              f"merge < {TARGETS['merge']:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
