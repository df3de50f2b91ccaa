"""hpc.process.call, the one subprocess helper: what a failure tells the user."""

from __future__ import annotations

import shlex
import sys

import pytest

from hpc.errors import BackendError
from hpc.process import call


def test_output_and_exit_code_are_returned() -> None:
    done = call([sys.executable, "-c", "print('hello')"])
    assert (done.returncode, done.stdout) == (0, "hello\n")
    assert call([sys.executable, "-c", "raise SystemExit(3)"], check=False).returncode == 3


def test_a_failure_names_command_exit_code_stdout_and_stderr() -> None:
    cmd = [sys.executable, "-c", "import sys; print('to stdout'); sys.exit('sbatch: error: invalid partition')"]
    with pytest.raises(BackendError) as failure:
        call(cmd)
    message = str(failure.value)
    assert f"`{shlex.join(cmd)}` failed with exit code 1" in message
    assert "stderr: sbatch: error: invalid partition" in message and "stdout: to stdout" in message


def test_a_missing_program_is_named() -> None:
    with pytest.raises(BackendError, match="`no-such-xreduce-program` not found: it is not installed, or not on PATH"):
        call(["no-such-xreduce-program", "--version"])


def test_a_program_that_does_not_answer_times_out() -> None:
    with pytest.raises(BackendError, match=r"`.* -c 'import time; time.sleep\(10\)'` did not answer within 0.5 s"):
        call([sys.executable, "-c", "import time; time.sleep(10)"], timeout=0.5)
