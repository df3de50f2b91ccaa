"""The one interface between orchestration and science: a *step*.

A step is built once per worker process from the resolved ``reduction`` config and then turns
chunks into chunk result files. ``hpc`` knows nothing else of what a step does; ``reduction``
implements it (``reduction.azint.step.AzintStep``) without importing ``hpc`` (a Protocol needs no
inheritance). The config names the class (``reduction.azint.step``), so a new reduction — XPCS
correlation, say — is a new step class and a config file, never a change to the backends.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigError

__all__ = ["Step", "load_step"]


@runtime_checkable
class Step(Protocol):
    """Given a chunk and the config, produce a chunk result file."""

    def __call__(self, chunk: Mapping[str, Any], out: Path, *, config_hash: str,
                 config_json: str) -> int:
        """Reduce ``chunk`` (a plan entry: dataset, scan, detector, monitor, start, stop, id) into the
        result file ``out``, written atomically; return the number of frames reduced. Raise on
        failure (the caller records the error beside the chunk)."""
        ...


def load_step(reduction: Mapping[str, Any]) -> Step:
    """Instantiate the step class named by ``reduction.azint.step`` ("module.Class") with the reduction config."""
    target = str(reduction.get("step") or "")
    module_name, _, class_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"reduction.step = {target!r} does not name an importable step class ({exc})") from None
    step = cls(reduction)
    if not isinstance(step, Step):
        raise ConfigError(f"reduction.step = {target!r} is not a step (it must be callable as step(chunk, out, ...))")
    return step
