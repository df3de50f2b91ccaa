"""Slurm's --time text read once (hpc.slurm_units), for the config checks and submitit's timeout_min."""

from __future__ import annotations

import doctest

import pytest

import hpc.slurm_units
from hpc.slurm_units import minutes

TIMES = [  # (text, minutes), every form sbatch --time reads
    ("45", 45), ("0", 0), ("10:30", 11), ("10:00", 10), ("01:30:00", 90), ("1:00:01", 61),
    ("1-02", 1560), ("1-02:30", 1590), ("2-00:00:00", 2880), ("0-00:00:30", 1),
]
NOT_TIMES = ["", "abc", "1h", "-5", "1-", "1:2:3:4", "1:234", "01:30:00 ", "1.5", "1-2:3:4:5", "UNLIMITED"]


@pytest.mark.parametrize(("text", "expected"), TIMES)
def test_slurm_times_in_minutes(text: str, expected: int) -> None:
    assert minutes(text) == expected


@pytest.mark.parametrize("text", NOT_TIMES)
def test_other_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Slurm time"):
        minutes(text)


def test_docstring_examples() -> None:
    assert doctest.testmod(hpc.slurm_units).failed == 0
