"""Disk faults: a full output filesystem (chunks, error records, the merge), an output that cannot be
written, temporary files of writers that died, permissions that follow the umask; and the mistakes
found before any work (empty raw data, a scan selection matching nothing, absurd bin counts).
A full or read-only filesystem is a real tmpfs (mounted as root), never a mock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from fault_helpers import fill, overrides, tmpfs, xreduce

from hpc.cli import main
from hpc.plan import Chunk
from hpc.state import ChunkPaths, record_failure
from reduction.azint.chunkfile import read_chunk_meta
from reduction.demo.bliss_writer import write_demo_experiment

N_CHUNKS = 6  # 2 scans × 12 frames, 4 frames per chunk


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return write_demo_experiment(tmp_path_factory.mktemp("data"), n_datasets=1, n_scans=2, n_frames=12,
                                 detector="Pilatus100k", frames_per_file=4)


def run(*args: str) -> tuple[int, str, str]:
    process = xreduce(*args)
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


@pytest.mark.parametrize("keep_kib", [8, 64, 400])
def test_a_full_disk_fails_chunks_cleanly_and_nothing_half_written_counts(experiment, tmp_path, keep_kib) -> None:
    with tmpfs(tmp_path / "fs", "1m") as fs:
        fill(fs, keep_kib << 10)
        out = fs / "out"
        rc, stdout, stderr = run("run", *overrides(experiment, out, frames_per_chunk=4, npt=1000))
        assert rc == 1, stderr  # never 139 (the segfault in h5py's close), never a traceback
        assert "Traceback" not in stderr and "Exception ignored" not in stderr
        assert "No space left on device" in stdout + stderr
        assert sorted(p.name for p in fs.rglob(".*.tmp")) == []
        done = sorted(out.glob("chunks/c-*.h5"))
        for path in done:  # whatever is under a final name is complete
            meta = read_chunk_meta(path)
            assert meta["nframes"] == 4
        records = [json.loads(p.read_text()) for p in out.glob("chunks/*.error.json")]
        assert all("No space left on device" in r["message"] for r in records)
        if "xreduce: error: cannot write the plan" in stderr:  # no room for the run's work order: nothing ran
            assert str(out / "plans") in stderr and not done and not records
            return
        # every chunk is done, has an ENOSPC record, or (no room even for that) was reported as such
        reported = stdout.count("(error record not written: No space left on device)")
        assert len(done) + len(records) + reported == N_CHUNKS


def test_a_merge_on_a_full_disk_is_one_line_naming_the_file(experiment, tmp_path) -> None:
    with tmpfs(tmp_path / "fs", "2m") as fs:
        out = fs / "out"
        rc, _, stderr = run("run", *overrides(experiment, out, frames_per_chunk=4, npt=100))
        assert rc == 0, stderr
        (master,) = out.glob("*.nxs")
        master.unlink()
        fill(fs, 8 << 10)
        rc, stdout, stderr = run("merge", *overrides(experiment, out, frames_per_chunk=4, npt=100))
        assert rc == 1
        assert stderr.strip() == "", stderr  # no traceback: one line per experiment, in the merge report
        assert f"master: {master} not written: cannot write master file {master}: No space left on device" in stdout
        assert not master.exists() and sorted(p.name for p in fs.rglob(".*.tmp")) == []


def test_an_output_under_a_regular_file_exits_2_before_any_work(experiment, tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "out"
    assert main(["run", *overrides(experiment, out)]) == 2
    assert (f"xreduce: error: campaign.output={out}: {tmp_path / 'afile'} is a file, not a folder"
            in capsys.readouterr().err)


def test_an_output_on_a_read_only_mount_exits_2_before_any_work(experiment, tmp_path, capsys) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert main(["run", *overrides(experiment, ro / "out")]) == 2
        err = capsys.readouterr().err
        assert f"campaign.output={ro / 'out'}: {ro} is on a read-only filesystem" in err
    # status only reads: a campaign on a read-only mount can still be looked at (no check there)


def test_temporary_files_of_dead_writers_are_removed_by_the_next_run(experiment, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    chunks = out / "chunks"
    chunks.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    names = {"dead": f".c-0000000000000000.h5.{host}.{dead.pid}-0123abcd.tmp",
             "alive": f".c-0000000000000001.h5.{host}.{os.getpid()}-0123abcd.tmp",
             "elsewhere_old": ".c-0000000000000002.h5.other-node.12-0123abcd.tmp",
             "elsewhere_new": ".c-0000000000000003.h5.other-node.13-0123abcd.tmp",
             "master": f".x.nxs.{host}.{dead.pid}-0123abcd.tmp"}
    for key, name in names.items():
        folder = out if key == "master" else chunks
        (folder / name).write_bytes(b"half-written")
    two_days_ago = (chunks / names["elsewhere_old"]).stat().st_mtime - 2 * 24 * 3600
    os.utime(chunks / names["elsewhere_old"], (two_days_ago, two_days_ago))
    assert main(["run", *overrides(experiment, out, frames_per_chunk=12)]) == 0
    left = sorted(p.name for p in out.rglob(".*.tmp"))
    assert left == sorted([names["alive"], names["elsewhere_new"]])


def test_plan_error_records_and_results_follow_the_umask(experiment, tmp_path) -> None:
    out = tmp_path / "out"
    previous = os.umask(0o002)
    try:
        assert main(["run", *overrides(experiment, out, frames_per_chunk=12)]) == 0
        chunk = Chunk("c-0", "/d.h5", "e", "1.1", "pilatus", None, 0, 1, 1)
        record_failure(ChunkPaths(out, chunk.id), chunk, OSError("x"))
    finally:
        os.umask(previous)
    files = [out / "plan.json", *out.glob("*.nxs"), *out.glob("chunks/*.h5"), out / "chunks" / "c-0.error.json"]
    assert len(files) == 5
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o664)}


@pytest.mark.parametrize("override, message", [
    ("campaign.scans=99", "campaign.scans = '99' matches no scan of the 1 dataset(s) under campaign.raw_data"),
    ("reduction.npt=100000000", "reduction.npt=100000000 must be between 1 and 100000"),
])
def test_mistakes_found_up_front_exit_2(experiment, tmp_path, capsys, override, message) -> None:
    out = tmp_path / "out"
    assert main(["run", *overrides(experiment, out), override]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_an_empty_raw_data_folder_exits_2(experiment, tmp_path, capsys) -> None:
    (tmp_path / "RAW_DATA").mkdir()
    out = tmp_path / "out"
    assert main(["plan", *overrides(experiment, out), f"campaign.raw_data={tmp_path / 'RAW_DATA'}"]) == 2
    assert "no dataset master file under campaign.raw_data" in capsys.readouterr().err and not out.exists()
