"""``xreduce bench`` for ``reduction=xpcs``: the stage rates of the campaign's own correlator on the
first frames of its first scan, and the bound they allow."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from campaign_helpers import bench_rates

from hpc.cli import main
from reduction.azint.detectors import Detector
from reduction.azint.geometry import Geometry
from reduction.demo.bliss_writer import ScanSpec, write_dataset

SHAPE = (32, 32)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("xpcs_bench")
    geo = Geometry(dist=2.0, poni1=16 * 75e-6, poni2=16 * 75e-6, wavelength=1e-10,
                   detector=Detector("Detector", 75e-6, 75e-6, SHAPE))
    (root / "g.poni").write_text(geo.to_poni(), encoding="utf-8")
    frames = np.random.default_rng(1).poisson(0.5, (300, *SHAPE)).astype(np.uint16)
    write_dataset(root / "RAW_DATA" / "s" / "s_0001" / "s_0001.h5", [ScanSpec(frames)], frames_per_file=100)
    return root


@pytest.mark.parametrize("engine", ["numpy", pytest.param("opencl", marks=pytest.mark.opencl)])
def test_bench_prints_the_correlator_stages_and_the_bound(experiment, tmp_path, capsys, engine: str) -> None:
    out = tmp_path / "out"
    code = main(["bench", "campaign=demo", f"campaign.raw_data={experiment / 'RAW_DATA'}", "campaign.monitor=null",
                 "reduction=xpcs", f"reduction.poni={experiment / 'g.poni'}", "reduction.dynamic_q.npt=3",
                 "reduction.dynamic_q.range=[0.05,0.25]", f"reduction.engine={engine}",
                 "reduction.twotime.enabled=true", f"campaign.output={out}", "--frames", "200"])
    text = capsys.readouterr().out
    assert code == 0, text
    rates = bench_rates(text, ("correlator, first call", "read+decompress", "correlator", "two-time", "end to end"))
    assert rates["read+decompress"][0] == 200 and rates["end to end"][0] == 200 and rates["two-time"][0] == 200
    assert rates["correlator"][0] == 400  # two passes over the 200 frames (at least 256 frames timed)
    assert "frames [0, 200) of 300" in text
    assert (f"engine: {'numpy (float64)' if engine == 'numpy' else 'opencl on '}") in text
    pixels = int(re.search(r"^(\d+) of 1024 pixels in the q partition \(3 dynamic", text, re.M)[1])
    assert 0 < pixels < 1024  # the corners are outside the q range
    assert re.search(rf"multi-tau, 2 pass\(es\) over 200 frames × {pixels} pixels", text)
    bound = float(re.search(r"^bound: ([\d.]+) frames/s = 1/\(1/read\+decompress \+ 1/correlator \+ 1/two-time\)",
                            text, re.M)[1])  # numpy and PoCL share the cores with decompression
    expected = 1 / sum(1 / rates[s][1] for s in ("read+decompress", "correlator", "two-time"))
    assert bound == pytest.approx(expected, rel=0.02)
    assert not out.exists()  # nothing written to the campaign's output
