"""Jobs that run xreduce inside its Apptainer image: which image, which host folders to bind, and
the exact command line the job scripts run (``apptainer exec [--nv] --bind ... IMAGE xreduce``).

The image is, first found: ``backend.container``; ``$XREDUCE_IMAGE`` (set by the xreduce
environment module, so that jobs submitted from a module-loaded shell use the module's image);
``$APPTAINER_CONTAINER`` (this xreduce already runs inside an image: its jobs use the same one).
An image sees only the host folders bound into it; besides Apptainer's defaults ($HOME, /tmp, the
current folder) the jobs need the campaign's raw data, its output and the PONI/mask/dark/flat
folders, so those are bound by default (``backend.binds`` replaces them), plus ``$XREDUCE_BINDS``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from reduction.step import get_kind, rules

from .errors import ConfigError

__all__ = ["Container", "IMAGE_VARIABLES", "running_image", "find_image", "parse_binds", "campaign_binds",
           "merge_binds", "container_for"]

#: Environment variables naming the image when backend.container is null, first set wins.
IMAGE_VARIABLES = ("XREDUCE_IMAGE", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER")


@dataclass(frozen=True)
class Container:
    """An image, where it was chosen from, and the host paths bound into it."""

    image: str
    source: str                      # "backend.container", "XREDUCE_IMAGE", ...
    binds: tuple[str, ...] = ()
    apptainer: str = "apptainer"     # $XREDUCE_APPTAINER: the host's apptainer when submitted from an image

    def command(self, program: str = "xreduce", *, gpu: bool = False) -> str:
        """The shell words that run ``program`` in the image; ``--nv`` exposes the node's NVIDIA GPUs
        (and, with the image's ICD file, their OpenCL driver)."""
        words = [self.apptainer, "exec", *(["--nv"] if gpu else []),
                 *(["--bind", ",".join(self.binds)] if self.binds else []), self.image, program]
        return shlex.join(words)


def running_image(env: Mapping[str, str] | None = None) -> str | None:
    """The Apptainer (or Singularity) image this process runs in, or None on a plain host."""
    env = os.environ if env is None else env
    return env.get("APPTAINER_CONTAINER") or env.get("SINGULARITY_CONTAINER") or None


def find_image(container: str | None, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(image, where it came from), or None: the jobs run the submitting interpreter."""
    if container:
        return str(container), "backend.container"
    for name in IMAGE_VARIABLES:
        if env.get(name):
            return env[name], name
    return None


def _check_bind(entry: str, where: str) -> str:
    entry = entry.strip()
    source = entry.split(":", 1)[0]
    if "," in entry or not source.startswith("/"):
        raise ConfigError(f"{where}: bind {entry!r} must be an absolute host path, optionally 'src:dest[:ro]' "
                          f"(Apptainer's --bind syntax), one per entry")
    return entry


def parse_binds(text: str | None, where: str = "XREDUCE_BINDS") -> list[str]:
    """``"/data,/scratch:/scratch:ro"`` → ``["/data", "/scratch:/scratch:ro"]`` (empty entries dropped)."""
    return [_check_bind(item, where) for item in (text or "").split(",") if item.strip()]


def campaign_binds(config: Mapping[str, Any]) -> list[str]:
    """The folders a worker reads and writes: raw data, output, and the folders of the input files."""
    campaign, reduction = config.get("campaign", {}), config.get("reduction", {})
    paths = [campaign.get("raw_data"), campaign.get("output")]
    inputs = [name for name, rule in rules(get_kind(reduction["kind"]).schema).items() if rule.input_file]
    for key in inputs:  # the reduction kind's input files (PONI, mask ...): the jobs must see their folders
        value = reduction.get(key)
        if value:
            paths.append(str(PurePosixPath(str(value).partition("::")[0]).parent))
    return [str(p) for p in paths if p]


def merge_binds(binds: Iterable[str]) -> list[str]:
    """Drop repeats, and plain folders already inside another plain folder bound at the same place."""
    entries = list(dict.fromkeys(b.rstrip("/") or "/" for b in binds))
    plain = [PurePosixPath(b) for b in entries if ":" not in b]
    kept = []
    for entry in entries:
        path = PurePosixPath(entry)
        if ":" not in entry and any(other != path and path.is_relative_to(other) for other in plain):
            continue
        kept.append(entry)
    return kept


def _check_image(image: str, source: str, inside: bool) -> None:
    """Catch a mistyped image before hundreds of jobs fail on it (not checkable inside an image,
    which may not see the host path of its own file)."""
    if "://" in image:  # docker://, oras://, library://: apptainer fetches it
        return
    if not os.path.isabs(image):
        raise ConfigError(f"{source}={image}: give the image as an absolute path (jobs run in another folder)")
    if not inside and not os.path.exists(image):
        raise ConfigError(f"{source}={image}: no such image on this machine (an .sif file or an unpacked "
                          f"sandbox folder, e.g. /cvmfs/<repo>/xreduce/<version>/xreduce.sif)")


def container_for(backend: Any, config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Container | None:
    """The container a backend's jobs run in, or None (they run this Python interpreter).

    ``backend`` is a batch backend's config (:class:`hpc.config.BatchBackendConfig`: slurm, submitit,
    dask), with ``container`` and ``binds``; ``config`` is the resolved campaign config (a plan's
    ``config``). Raises ConfigError naming the key or variable at fault.
    """
    env = os.environ if env is None else env
    found = find_image(backend.container, env)
    if found is None:
        return None
    image, source = found
    _check_image(image, source, inside=running_image(env) is not None)
    binds = ([_check_bind(str(b), "backend.binds") for b in backend.binds] if backend.binds is not None
             else campaign_binds(config))
    binds += parse_binds(env.get("XREDUCE_BINDS"))
    return Container(image, source, tuple(merge_binds(binds)), env.get("XREDUCE_APPTAINER") or "apptainer")
