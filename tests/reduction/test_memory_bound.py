"""A worker's memory does not grow with the length of a chunk: measured, as peak RSS of real runs.

Two runs of the azint step in fresh processes, on scans of the same detector (Pilatus1M int32
frames, 4.1 MB each; blocks of 32 frames = 131 MB): 64 frames and 320 frames (1.3 GB of frames).
The pipeline holds at most the block being reduced, the one read ahead and the one being read
(reduction.io.blocks), so the long chunk's peak stays within about one block of the short one's,
and far below what holding its frames would take. docs/performance.md states the bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reduction.demo.bliss_writer import ScanSpec, demo_geometry, demo_mask, write_dataset

FRAME_BYTES = 1043 * 981 * 4
BLOCK_BYTES = 32 * FRAME_BYTES

_RUN = """
import json, resource, sys
from pathlib import Path
from reduction.azint.step import AzintStep
master, nframes, poni, mask, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], Path(sys.argv[5])
step = AzintStep(dict(kind="azint1d", poni=poni, mask=mask, npt=500, unit="q_nm^-1", splitting="bbox",
                      error_model="poisson", engine="numpy"))
chunk = dict(id="c", dataset=master, scan="1.1", detector="pilatus", monitor=None, start=0, stop=nframes,
             energy_kev=None)
done = step(chunk, out, config_hash="h", config_json="{}")
print(json.dumps({"frames": done, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _frames(start: int, stop: int) -> np.ndarray:
    """Cheap, varied int32 frames (a ramp plus the frame index), compressible as real ones are."""
    base = (np.arange(1043 * 981, dtype=np.int32).reshape(1043, 981) % 97)
    return np.stack([base + i for i in range(start, stop)])


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("memory")
    geo = demo_geometry("Pilatus1M")
    (root / "setup.poni").write_text(geo.to_poni(), encoding="utf-8")
    np.save(root / "mask.npy", demo_mask(geo))
    out = {}
    for n in (64, 320):
        out[n] = write_dataset(root / f"long_{n}" / f"long_{n}.h5",
                               [ScanSpec(_frames, nframes=n, frame_shape=geo.shape, dtype="int32")],
                               compression="bitshuffle", frames_per_file=32)
    return out


def _peak(master: Path, nframes: int, tmp_path: Path) -> int:
    root = master.parents[1]
    done = subprocess.run([sys.executable, "-c", _RUN, str(master), str(nframes), str(root / "setup.poni"),
                           str(root / "mask.npy"), str(tmp_path / f"chunk_{nframes}.h5")],
                          capture_output=True, text=True, timeout=600,
                          env={"XREDUCE_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["frames"] == nframes
    return int(result["peak_rss"])


def test_peak_memory_does_not_grow_with_the_chunk_length(scans: dict[int, Path], tmp_path: Path) -> None:
    short = _peak(scans[64], 64, tmp_path)  # also builds the matrix cache the long run then loads
    short = min(short, _peak(scans[64], 64, tmp_path))  # the same conditions as the long run: matrix cached
    long = _peak(scans[320], 320, tmp_path)
    assert 320 * FRAME_BYTES > 1.2e9  # holding the long chunk's frames would take this much
    assert long - short < BLOCK_BYTES, (
        f"peak RSS {long / 2**20:.0f} MiB for 320 frames vs {short / 2**20:.0f} MiB for 64: grows with the chunk")
    assert long < 5 * BLOCK_BYTES + 600 * 2**20, f"peak RSS {long / 2**20:.0f} MiB above the stated bound"
