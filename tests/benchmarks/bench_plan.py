"""Planning benchmark: discover and describe 10 000 scans of BLISS master files, metadata only.

Run from the repository root::

    python tests/benchmarks/bench_plan.py                     # 100 files x 100 scans
    python tests/benchmarks/bench_plan.py --files 200 --scans 50 --counters 40 --keep /tmp/plan-bench

It writes ``--files`` dataset master files of ``--scans`` finished scans each in a temporary
folder (:func:`tests/bliss_helpers.write_metadata_only_experiment`: Pilatus1M-shaped VDS over
lima files that are never written, a monitor, a monochromator energy and ``--counters`` more
counters per scan), then times what ``xreduce plan`` does with them:
``bliss.find_datasets`` + ``bliss.read_scans`` over every file, best of ``--reps``. The files are
in the page cache (just written); a parallel filesystem adds its metadata latency on top.
The requirement is under 20 s for 10 000 scans; the exit code is 1 above ``--limit``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import h5py

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

from bliss_helpers import write_metadata_only_experiment  # noqa: E402

from reduction.io import bliss  # noqa: E402


def plan_metadata(raw_data: Path, detector: str, monitor: str | None) -> tuple[int, int, int]:
    """find_datasets + read_scans over everything: (files, scans, scans with a problem)."""
    datasets = bliss.find_datasets(raw_data)
    scans = problems = 0
    for dataset in datasets:
        for info in bliss.read_scans(dataset, detector, monitor):
            scans += 1
            problems += info.problem is not None
    return len(datasets), scans, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100, help="dataset master files (default 100)")
    parser.add_argument("--scans", type=int, default=100, help="scans per file (default 100)")
    parser.add_argument("--counters", type=int, default=20, help="extra counters per scan (default 20)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions, best reported (default 3)")
    parser.add_argument("--limit", type=float, default=20.0, help="seconds allowed (default 20)")
    parser.add_argument("--keep", type=Path, default=None, help="write the files here and keep them")
    args = parser.parse_args(argv)

    print(f"python {platform.python_version()}, h5py {h5py.__version__}, HDF5 {h5py.version.hdf5_version}, "
          f"{platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="xreduce-bench-plan-") as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        write_metadata_only_experiment(root, args.files, args.scans, extra_counters=args.counters)
        print(f"wrote {args.files} master files x {args.scans} scans in {time.perf_counter() - start:.2f} s "
              f"under {root}")
        best = float("inf")
        for rep in range(args.reps):
            start = time.perf_counter()
            files, scans, problems = plan_metadata(root / "RAW_DATA", "pilatus", "mon")
            elapsed = time.perf_counter() - start
            best = min(best, elapsed)
            print(f"  run {rep + 1}: {files} files, {scans} scans ({problems} with a problem) in {elapsed:.2f} s "
                  f"= {elapsed / max(scans, 1) * 1e6:.0f} µs/scan")
    verdict = "OK" if best < args.limit else "TOO SLOW"
    print(f"find_datasets + read_scans, {scans} scans: {best:.2f} s (best of {args.reps}); "
          f"limit {args.limit:.0f} s: {verdict}")
    return 0 if best < args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
