"""The config schema of ``reduction=sum``: its keys, their defaults and their rules.

``hpc`` registers it with Hydra (there is no shipped YAML file: the schema is the config) and
checks every value by the :class:`~reduction.step.KeyRule` of its field.
"""

from __future__ import annotations

from dataclasses import dataclass

from reduction.step import ReductionConfig, key

__all__ = ["SumConfig"]


@dataclass
class SumConfig(ReductionConfig):
    """``reduction=sum``: per frame, the total counts and the maximum over the valid pixels."""

    kind: str = "sum"
    # .npy, or "file.h5::/dataset", of the detector's shape; nonzero = masked. An input file: it must
    # exist, its content enters the config hash, and its folder is bound into containers.
    mask: str | None = key(None, input_file=True)
