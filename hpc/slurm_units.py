"""Slurm's ``--time`` and ``--mem`` texts, each read by one function: the config checks and the backends
that hand them to another tool in its own unit (submitit's ``timeout_min`` and ``mem_gb``, dask's
``memory``) use the same grammar."""

from __future__ import annotations

import math
import re

__all__ = ["minutes", "mebibytes"]

#: D-H[:M[:S]] or M, M:S, H:M:S; the fields after a colon have one or two digits
_TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<fields>\d+(?::\d{1,2}){0,2})")
#: a whole number, then K, M, G or T (any case, optionally followed by B); no unit means M
_MEM = re.compile(r"(?P<amount>\d+)(?:(?P<unit>[KMGT])B?)?", re.IGNORECASE)
_KIB_PER_UNIT = {"K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}


def minutes(text: str) -> int:
    """Slurm's ``--time`` text → whole minutes, a started minute counting as one.

    Slurm reads M, M:S, H:M:S, D-H, D-H:M and D-H:M:S (``sbatch --time``):

    >>> minutes("45"), minutes("10:30"), minutes("01:30:00"), minutes("1-02"), minutes("2-00:00:00")
    (45, 11, 90, 1560, 2880)

    Raises ValueError for anything else.
    """
    match = _TIME.fullmatch(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a Slurm time (M, M:S, H:M:S, D-H, D-H:M or D-H:M:S)")
    fields = [int(field) for field in match["fields"].split(":")]
    if match["days"] is not None:
        hours, mins, secs = (fields + [0, 0])[:3]
    else:
        hours, mins, secs = [[0, fields[0], 0], [0, *fields], fields][len(fields) - 1]
    return int(match["days"] or 0) * 1440 + hours * 60 + mins + math.ceil(secs / 60)


def mebibytes(text: str) -> int:
    """Slurm's ``--mem`` text → MiB, rounded up. Slurm counts in powers of 1024 and reads no unit as M:

    >>> mebibytes("16G"), mebibytes("16gb"), mebibytes("1500"), mebibytes("1500M"), mebibytes("1T"), mebibytes("1K")
    (16384, 16384, 1500, 1500, 1048576, 1)

    Raises ValueError for anything else (a fraction, a space, "GiB").
    """
    match = _MEM.fullmatch(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a Slurm memory size (a whole number with K, M, G or T, e.g. 16G)")
    kib = int(match["amount"]) * _KIB_PER_UNIT[(match["unit"] or "M").upper()]
    return math.ceil(kib / 1024)
