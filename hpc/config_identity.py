"""Config identity and provenance: the hash of what determines the numbers, and dumps of the config.

:func:`config_hash` identifies the results a config produces: it is stored in the plan and in each
chunk file, and a worker keeps a chunk file only when its hash matches. :func:`to_yaml`,
:func:`to_json` and :func:`to_dict` dump the resolved config for provenance (the plan and chunk
files); :func:`hpc.config.config_from_dict` reads a dump back.
"""

from __future__ import annotations

import hashlib
import json
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reduction.step import get_kind, rules

from .config_schema import Config
from .errors import ConfigError

__all__ = ["config_hash", "to_dict", "to_yaml", "to_json"]

def config_hash(cfg: Config) -> str:
    """sha256 (hex) of what determines the numbers of a result.

    It covers the reduction group (resolved; all keys but those the kind's schema marks
    ``hashed=False``, such as ``engine`` and ``device``), the *content* of the input files it marks
    ``input_file`` (PONI, mask, dark, flat: not their paths, so editing a file in place changes the
    hash, moving it does not), and ``campaign.detector`` / ``campaign.monitor`` (they choose the frames and their
    normalisation), and ``campaign.frame_band`` when it is not the default ``all`` (so the hash of every
    config that does not set it is what it was before the key existed). Not the backend, partition, merge or
    campaign output.
    """
    reduction = to_dict(cfg)["reduction"]
    for key, rule in rules(get_kind(cfg.reduction.kind).schema).items():
        if not rule.hashed:
            reduction.pop(key, None)
        elif rule.input_file and reduction.get(key):
            file, _, inner = reduction[key].partition("::")
            reduction[key] = {"sha256": _file_digest(key, file), "dataset": inner or None}
    payload = {"format": "xreduce-config-hash-1", "reduction": reduction,
               "detector": cfg.campaign.detector, "monitor": cfg.campaign.monitor}
    frame_band = getattr(cfg.campaign, "frame_band", "all")
    if frame_band != "all":
        payload["frame_band"] = frame_band
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_digest(key: str, path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise ConfigError(f"reduction.{key}={path}: cannot read it ({err.strerror})") from None
    return digest.hexdigest()


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain Python containers (JSON-serialisable)."""
    return typing.cast(dict, OmegaConf.to_container(typing.cast(DictConfig, cfg), resolve=True))


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what ``config_from_dict(yaml.safe_load(...))`` reads back)."""
    return OmegaConf.to_yaml(typing.cast(DictConfig, cfg), resolve=True)


def to_json(cfg: Config, indent: int | None = 2) -> str:
    """The resolved config as JSON, for plan and chunk files."""
    return json.dumps(to_dict(cfg), indent=indent)
