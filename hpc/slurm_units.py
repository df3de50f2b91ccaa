"""Slurm's ``--time`` text, read once: the config check and the backends that hand it to another
tool in its own unit (submitit's ``timeout_min``) use the same grammar."""

from __future__ import annotations

import math
import re

__all__ = ["minutes"]

#: D-H[:M[:S]] or M, M:S, H:M:S; the fields after a colon have one or two digits
_TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<fields>\d+(?::\d{1,2}){0,2})")


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
