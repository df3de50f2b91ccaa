"""``xreduce bench``: stage rates of a campaign's own reduction on its first scan."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from campaign_helpers import bench_rates, campaign_overrides, small_experiment

from hpc.bench import first_scan_chunk
from hpc.cli import main
from hpc.config import load_config
from reduction.step import get_kind


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory):
    return small_experiment(tmp_path_factory.mktemp("bench"), n_datasets=1, n_scans=2, n_frames=12)


def test_bench_prints_the_stage_rates_and_the_bound(experiment, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["bench", *campaign_overrides(experiment, out, "reduction.engine=numpy", frames_per_chunk=4),
                 "--frames", "8"])
    text = capsys.readouterr().out
    assert code == 0, text
    rates = bench_rates(text, ("read+decompress", "kernel, first call", "kernel", "end to end"))
    assert rates["read+decompress"][0] == 8 and rates["end to end"][0] == 8  # the first 8 frames of scan 1.1
    assert rates["kernel, first call"][0] == 8 and rates["kernel"][0] == 3 * 8  # 3 calls on one 8-frame block
    assert "scan 1.1, frames [0, 8) of 12" in text and "engine: numpy" in text
    assert "direct chunk reads" in text  # bitshuffle-LZ4 one-frame chunks: the direct path, no fallback
    read, kernel = rates["read+decompress"][1], rates["kernel"][1]
    bound = float(re.search(r"^bound: ([\d.]+) frames/s = 1/\(1/read \+ 1/kernel\)", text, re.M)[1])
    assert bound == pytest.approx(1 / (1 / read + 1 / kernel), rel=0.02)  # numpy shares the cores
    reached = float(re.search(r"end to end reached (\d+) % of the bound", text)[1])
    assert reached == pytest.approx(100 * rates["end to end"][1] / bound, abs=1.5)
    pyfai = re.search(r"^pyFAI \S+ kernel\s+8\s+[\d.]+\s+([\d.]+)\s+integrate1d bbox/csr/cython", text, re.M)
    assert pyfai, text  # pyFAI (the tests' oracle) is installed: its kernel on the same 8 frames, side by side
    ratio = float(re.search(r"kernel / pyFAI on the same frames: ([\d.]+)x", text)[1])
    assert ratio == pytest.approx(kernel / float(pyfai[1]), rel=0.1)
    assert not out.exists()  # nothing written to the campaign's output


def test_bench_uses_the_first_readable_finished_scan(experiment, tmp_path: Path) -> None:
    cfg = load_config(campaign_overrides(experiment, tmp_path / "out", "campaign.scans=2", frames_per_chunk=4))
    chunk = first_scan_chunk(cfg, 100)
    assert (chunk.scan, chunk.start, chunk.stop, chunk.nframes_scan) == ("2.1", 0, 12, 12)
    assert get_kind(cfg.reduction.kind).name == "azint1d"


def test_bench_without_a_usable_scan_exits_2_naming_the_selection(experiment, tmp_path: Path, capsys) -> None:
    code = main(["bench", *campaign_overrides(experiment, tmp_path / "out", "campaign.scans=7",
                                              frames_per_chunk=4)])
    err = capsys.readouterr().err
    assert code == 2
    assert "no finished scan with frames" in err and "campaign.scans = '7'" in err


def test_bench_rejects_a_non_positive_frame_count(experiment, tmp_path: Path, capsys) -> None:
    code = main(["bench", *campaign_overrides(experiment, tmp_path / "out", frames_per_chunk=4), "--frames", "0"])
    assert code == 2 and "--frames 0" in capsys.readouterr().err
