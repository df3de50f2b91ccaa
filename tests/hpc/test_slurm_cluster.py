"""The single-node Slurm test cluster (tests/cluster/start-slurm.sh) works as xreduce's tests need.

Real sbatch/squeue/sacct/scancel, no mocks. These tests FAIL (never skip) when Slurm is missing
or the cluster is down: start it with `bash tests/cluster/start-slurm.sh` (as root; `make test`
does it). Every job writes only under the test's tmp_path (--chdir/--output).

Timing facts they rely on (see tests/cluster/README.md): submit -> done ~1 s; sacct lags squeue
by up to ~5 s for array tasks, so everything read from sacct is polled with a deadline.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

START_HINT = "start it with `bash tests/cluster/start-slurm.sh` (as root; `make test` does it)"
# sacct states after which a job (or array task) will not change any more
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}

T = TypeVar("T")

pytestmark = pytest.mark.slurm


def _run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _poll(what: str, fn: Callable[[], T | None], timeout: float = 30, every: float = 0.2) -> T:
    """Call fn until it returns something other than None/False; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def _config() -> dict[str, str]:
    out = _run("scontrol", "show", "config").stdout
    return {k.strip(): v.strip() for k, sep, v in (line.partition("=") for line in out.splitlines()) if sep}


_CONFIG: dict[str, str] = {}


def _cluster() -> dict[str, str]:
    """The running cluster's `scontrol show config`, after checking it can run and account jobs.

    Called at the top of each test (not a fixture) so that a missing cluster FAILS the tests
    (a failing fixture would report them as errors); checked once per module when it is up.
    """
    if _CONFIG:
        return _CONFIG
    commands = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sinfo")
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.fail(f"Slurm commands not found: {', '.join(missing)}. Install them with "
                    f"`bash tests/services/install-system-packages.sh test`, then {START_HINT}")
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        said = (ping.stdout + ping.stderr).strip().splitlines()
        pytest.fail(f"the Slurm test cluster is not running (`scontrol ping`: {said[0] if said else ''!r}): "
                    f"{START_HINT}")
    states = _run("sinfo", "-h", "-N", "-o", "%T").stdout.split()
    if not any(s.rstrip("*~#!%$@^-") in ("idle", "mixed", "allocated", "completing") for s in states):
        pytest.fail(f"no usable Slurm node (states {states}): {START_HINT}")
    acct = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=30)
    if acct.returncode != 0:
        pytest.fail(f"sacct does not work ({acct.stderr.strip()}): accounting (slurmdbd) is down; "
                    f"{START_HINT}")
    _CONFIG.update(_config())
    return _CONFIG


def _sbatch(tmp: Path, *args: str, script: str) -> str:
    """Submit `script` (bash lines) from/into tmp; return the job id."""
    out = _run("sbatch", "--parsable", f"--chdir={tmp}", f"--output={tmp}/%x_%A_%a.out",
               "--job-name=xr-cluster-test", "--time=00:05:00", *args, f"--wrap={script}").stdout
    return out.strip().split(";")[0]


def _sacct(job_id: str) -> dict[str, tuple[str, str]]:
    """{JobID: (State, ExitCode)} of the job's allocations (array tasks as 'ID_i'), '' if unknown yet.

    -S keeps out rows of an older job with the same id (ids restart at 1 after a state wipe).
    """
    proc = _run("sacct", "-n", "-X", "-P", "-j", job_id, "-S", "now-1hours",
                "-o", "JobID,State,ExitCode", check=False)
    rows = {}
    for line in proc.stdout.splitlines():
        jid, state, code = line.split("|")
        rows[jid] = (state.split()[0], code)  # "CANCELLED by 0" -> "CANCELLED"
    return rows


def _wait_sacct(job_id: str, ids: list[str], timeout: float = 30) -> dict[str, tuple[str, str]]:
    """Poll sacct until every id in ids has a terminal state."""
    def done():
        rows = _sacct(job_id)
        return rows if all(rows.get(i, ("",))[0] in TERMINAL for i in ids) else None
    return _poll(f"sacct to report {ids} finished", done, timeout)


def _squeue_states(job_id: str) -> list[str]:
    return _run("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.split()


def test_cluster_shape():
    """What the project's tests assume: partitions debug (default) + gpu, >= 4 CPUs, >= 2 GPUs,
    accounting, and a small MaxArraySize."""
    cluster = _cluster()
    parts = _run("sinfo", "-h", "-o", "%P").stdout.split()
    assert "debug*" in parts and "gpu" in parts, parts
    cpus, gres = _run("sinfo", "-h", "-N", "-o", "%c %G").stdout.split()[:2]
    assert int(cpus) >= 4, "array tasks must be able to run side by side"
    assert gres.startswith("gpu:") and int(gres.split(":")[-1].split("(")[0]) >= 2, gres
    assert cluster["AccountingStorageType"] == "accounting_storage/slurmdbd"
    assert 2 <= int(cluster["MaxArraySize"]) <= 64, "tests split arrays for real only on a small MaxArraySize"


def test_job_completes_and_sacct_reports_it(tmp_path):
    _cluster()
    jid = _sbatch(tmp_path, script="echo hello from $SLURM_JOB_ID; pwd")
    rows = _wait_sacct(jid, [jid])
    assert rows[jid] == ("COMPLETED", "0:0")
    lines = next(tmp_path.glob(f"*_{jid}_*.out")).read_text().split()  # %a of a non-array job: 4294967294
    assert lines[:4] == ["hello", "from", jid, str(tmp_path)]


def test_failing_job_is_failed_with_exit_code(tmp_path):
    _cluster()
    jid = _sbatch(tmp_path, script="exit 3")
    assert _wait_sacct(jid, [jid])[jid] == ("FAILED", "3:0")


def test_array_with_throttle(tmp_path):
    """--array=0-3%2: all four tasks run, never more than two at once, and two do overlap."""
    _cluster()
    jid = _sbatch(tmp_path, "--array=0-3%2",
                  script="i=$SLURM_ARRAY_TASK_ID; date +%s.%N > start_$i; sleep 2; date +%s.%N > end_$i")
    assert "ArrayTaskThrottle=2" in _run("scontrol", "show", "job", jid).stdout
    ids = [f"{jid}_{i}" for i in range(4)]
    rows = _wait_sacct(jid, ids, timeout=40)
    assert {i: rows[i][0] for i in ids} == dict.fromkeys(ids, "COMPLETED")
    events = []
    for i in range(4):
        events += [(float((tmp_path / f"start_{i}").read_text()), 1),
                   (float((tmp_path / f"end_{i}").read_text()), -1)]
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same time
        running += step
        peak = max(peak, running)
    assert peak <= 2, f"throttle %2 not honoured: {peak} tasks ran at once"
    assert peak == 2, "tasks did not run side by side (are other jobs filling the node? see `squeue`)"
    for i in range(4):
        assert (tmp_path / f"xr-cluster-test_{jid}_{i}.out").exists()


def test_afterany_dependency_runs_after_a_failed_task(tmp_path):
    """The merge-job pattern: --dependency=afterany:<array> runs once every task ended, failed or not."""
    _cluster()
    arr = _sbatch(tmp_path, "--array=0-1",
                  script="i=$SLURM_ARRAY_TASK_ID; sleep 1; [ $i = 1 ] && exit 5; touch done_$i")
    dep = _sbatch(tmp_path, f"--dependency=afterany:{arr}", "--kill-on-invalid-dep=yes",
                  script="ls done_* > merged")
    rows = _wait_sacct(arr, [f"{arr}_0", f"{arr}_1"])
    assert (rows[f"{arr}_0"], rows[f"{arr}_1"]) == (("COMPLETED", "0:0"), ("FAILED", "5:0"))
    assert _wait_sacct(dep, [dep])[dep] == ("COMPLETED", "0:0")
    assert (tmp_path / "merged").read_text().split() == ["done_0"]


def test_gpu_task_sees_cuda_visible_devices(tmp_path):
    _cluster()
    jid = _sbatch(tmp_path, "--partition=gpu", "--gres=gpu:1",
                  script='echo "CVD=$CUDA_VISIBLE_DEVICES"')
    assert _wait_sacct(jid, [jid])[jid][0] == "COMPLETED"
    text = next(tmp_path.glob(f"*_{jid}_*.out")).read_text()
    assert text.strip() in ("CVD=0", "CVD=1"), text
    # more GPUs than the node has: rejected at submit time, by Slurm
    proc = _run("sbatch", "--gres=gpu:3", f"--chdir={tmp_path}", "--wrap=true", check=False)
    assert proc.returncode != 0 and "Requested node configuration is not available" in proc.stderr


def test_scancel_gives_cancelled(tmp_path):
    _cluster()
    jid = _sbatch(tmp_path, script="sleep 300")
    _poll("the job to start", lambda: _squeue_states(jid) == ["RUNNING"], timeout=20)
    _run("scancel", jid)
    assert _wait_sacct(jid, [jid])[jid][0] == "CANCELLED"
    assert _squeue_states(jid) in ([], ["COMPLETING"])


def test_array_index_at_max_array_size_is_rejected(tmp_path):
    """Indices run 0..MaxArraySize-1: the backend must split larger arrays (each indexed from 0)."""
    cluster = _cluster()
    max_size = int(cluster["MaxArraySize"])
    proc = _run("sbatch", "--parsable", f"--chdir={tmp_path}", "--output=/dev/null",
                f"--array=0-{max_size}", "--wrap=true", check=False)
    assert proc.returncode != 0
    assert "Invalid job array specification" in proc.stderr, proc.stderr
    proc = _run("sbatch", "--parsable", f"--chdir={tmp_path}", "--output=/dev/null",
                f"--array={max_size}", "--wrap=true", check=False)
    assert proc.returncode != 0 and "Invalid job array specification" in proc.stderr
    # the largest allowed index is accepted (held, then cancelled: nothing runs)
    jid = _sbatch(tmp_path, "--hold", f"--array={max_size - 1}", script="true")
    _run("scancel", jid)
