"""Hash the numbers a set of test campaigns produces, to show a refactor leaves them bit-identical.

    python tests/benchmarks/hash_outputs.py OUT.json [--workdir DIR]

Runs ``xreduce run`` on a small generated BLISS experiment with several reduction configs
(azint1d vds, azint2d copy, full splitting with dark/flat, and the sum kind where it exists), then
writes a sha256 of every numeric dataset of every chunk file and master file to OUT.json, keyed by
what the dataset *is* (campaign, dataset, scan, frame range, HDF5 path) rather than by chunk id,
so that a change of config hash (new keys) does not hide or fake a difference. Compare two runs
with ``diff`` or ``python -c 'import json,sys; ...'``: the same keys and digests mean the same numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np


def _write_experiment(root: Path):
    try:
        from reduction.demo.bliss_writer import write_demo_experiment
    except ImportError:  # the layout before reduction/demo/
        from reduction.demo.bliss_writer import write_demo_experiment
    return write_demo_experiment(root, n_datasets=2, n_scans=2, n_frames=12, detector="Pilatus100k",
                                 frames_per_file=4)


def _images(exp, root: Path) -> tuple[Path, Path]:
    """A dark and a flat image of the detector's shape (fixed values: reproducible)."""
    mask = np.load(exp.mask)
    rng = np.random.default_rng(7)
    dark, flat = root / "dark.npy", root / "flat.npy"
    np.save(dark, rng.integers(0, 3, mask.shape).astype(np.float32))
    np.save(flat, (0.9 + 0.2 * rng.random(mask.shape)).astype(np.float32))
    return dark, flat


CAMPAIGNS = {
    "azint1d-vds": ["reduction=azint1d", "reduction.npt=150"],
    "azint2d-copy": ["reduction=azint2d", "reduction.npt_rad=60", "reduction.npt_azim=36", "merge.mode=copy"],
    "azint1d-full-darkflat": ["reduction=azint1d", "reduction.npt=80", "reduction.splitting=full",
                              "reduction.unit=2th_deg", "reduction.polarization_factor=0.95", "DARK", "FLAT"],
    "azint1d-nomonitor-noerr": ["reduction=azint1d", "reduction.npt=90", "campaign.monitor=null",
                                "reduction.error_model=null"],
}


def _digest(ds: h5py.Dataset) -> str | None:
    if ds.dtype.kind not in "fiub":
        return None
    data = np.ascontiguousarray(ds[()])
    return hashlib.sha256(data.tobytes() + str(data.shape).encode() + str(data.dtype).encode()).hexdigest()


def _hash_file(path: Path, label: str, out: dict[str, str]) -> None:
    with h5py.File(path, "r") as f:
        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):
                digest = _digest(obj)
                if digest is not None:
                    out[f"{label}:{name}"] = digest
        f.visititems(visit)


def _chunk_label(path: Path) -> str:
    with h5py.File(path, "r") as f:
        a = f.attrs
        return f"chunk:{Path(str(a['dataset'])).name}:{a['scan']}:{a['frame_start']}-{a['frame_stop']}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--campaigns", nargs="*", default=list(CAMPAIGNS))
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xreduce-hash-"))
    exp = _write_experiment(work / "data")
    dark, flat = _images(exp, work)
    digests: dict[str, str] = {}
    for name in args.campaigns:
        out = work / name
        extra = [a.replace("DARK", f"reduction.dark={dark}").replace("FLAT", f"reduction.flat={flat}")
                 for a in CAMPAIGNS[name]]
        cmd = [sys.executable, "-m", "hpc.cli", "run", "campaign=demo", f"campaign.raw_data={exp.raw_data}",
               f"reduction.poni={exp.poni}", f"campaign.output={out}", "partition.frames_per_chunk=5",
               "reduction.engine=numpy", *extra]
        if "sum" not in name:
            cmd.append(f"reduction.mask={exp.mask}")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        for chunk in sorted((out / "chunks").glob("*.h5")):
            _hash_file(chunk, f"{name}:{_chunk_label(chunk)}", digests)
        for master in sorted(out.glob("*.nxs")):
            _hash_file(master, f"{name}:master:{master.name}", digests)
    args.result.write_text(json.dumps(dict(sorted(digests.items())), indent=1), encoding="utf-8")
    print(f"{len(digests)} datasets hashed → {args.result} (work folder {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
