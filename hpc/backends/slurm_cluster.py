"""The Slurm cluster this process submits to, as every backend that submits to it sees it (slurm,
submitit, dask with ``cluster=slurm``): whether its client commands are here, its MaxArraySize, and
how chunks are packed into task groups and job arrays below that size."""

from __future__ import annotations

import re
import shutil

from ..container import running_image
from ..process import call

__all__ = ["missing", "max_array_size", "pack_groups", "split_arrays"]


def missing(*commands: str) -> str | None:
    """None when every Slurm command named is on PATH, else a message naming the first one missing
    (inside an Apptainer image: how to reach the host's Slurm)."""
    absent = next((command for command in commands if shutil.which(command) is None), None)
    if absent is None:
        return None
    image = running_image()
    if image:
        return (f"`{absent}` not found inside the Apptainer image {image}: the host's Slurm client is not "
                "visible here. Run xreduce through the xreduce module's wrapper, which binds it (XREDUCE_SLURM, "
                "docs/containers.md), or submit from a host installation")
    return (f"`{absent}` not found: Slurm is not installed (or not on PATH) on this machine; "
            "use backend=local to run here")


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices must stay below it)."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", call(["scontrol", "show", "config"]).stdout, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def pack_groups(indices: list[int], per_task: int) -> list[list[int]]:
    """Chunk indices → task groups of ``per_task`` chunks (short chunks share one array task)."""
    return [indices[i:i + per_task] for i in range(0, len(indices), per_task)]


def split_arrays(ngroups: int, limit: int) -> list[tuple[int, int]]:
    """(offset, count) of each array: every array indexed 0..count-1 with count ≤ ``limit``."""
    return [(offset, min(limit, ngroups - offset)) for offset in range(0, ngroups, limit)]
