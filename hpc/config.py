"""The campaign configuration: loading with Hydra, and the public face of the config modules.

:func:`load_config` composes the shipped ``configs/`` tree (plus a user's ``--config-dir``, searched
first) with Hydra's compose API, validates every value against the schemas, resolves paths and the
default output folder, and returns a **read-only, resolved** ``DictConfig`` whose structure is
:class:`Config` (Hydra's duck-typing idiom: annotate it as ``Config``)::

    cfg = load_config(["campaign=my_exp", "reduction.npt=2000"], config_dir="~/xreduce-configs")
    cfg.reduction.npt              # 2000 (int)
    cfg.campaign.raw_data          # "/data/visitor/.../RAW_DATA" (absolute path, a str)
    cfg.reduction.radial_range     # None or a read-only list [min, max]; tuple() it if needed
    OmegaConf.get_type(cfg.backend)   # LocalBackendConfig

Anything wrong raises :class:`hpc.errors.ConfigError` naming the key and the value, before anything
runs. :func:`config_hash` identifies the results a config produces; :func:`to_yaml`,
:func:`to_json`, :func:`to_dict` dump it for provenance and :func:`config_from_dict` reads a dump
back (what a worker does with the config stored in ``plan.json``).

Import everything from here. This module composes with Hydra and ties the others together, one job each:

- :mod:`hpc.config_schema`: the structured-config dataclasses, registered in Hydra's ConfigStore;
- :mod:`hpc.config_checks`: the value checks (``_CHECKS``) a type annotation cannot express;
- :mod:`hpc.config_errors`: Hydra and OmegaConf exceptions turned into one-line ConfigErrors;
- :mod:`hpc.config_identity`: :func:`config_hash` and the YAML / JSON / dict dumps.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, version
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config_checks import _check_missing, _check_values
from .config_errors import _did_you_mean, _hydra_error, _omegaconf_error, broken_kind_error
from .config_identity import config_hash, to_dict, to_json, to_yaml
from .config_schema import (
    BACKEND_SCHEMAS,
    MERGE_MODES,
    BackendConfig,
    BatchBackendConfig,
    CampaignConfig,
    Config,
    DaskBackendConfig,
    LocalBackendConfig,
    MergeConfig,
    MPIBackendConfig,
    PartitionConfig,
    SlurmBackendConfig,
    SubmititBackendConfig,
    reduction_schemas,
    shipped_config_dir,
)
from .errors import ConfigError

__all__ = ["Config", "CampaignConfig", "BackendConfig", "LocalBackendConfig", "SlurmBackendConfig",
           "SubmititBackendConfig", "BatchBackendConfig", "DaskBackendConfig", "MPIBackendConfig", "PartitionConfig",
           "MergeConfig", "BACKEND_SCHEMAS", "MERGE_MODES", "reduction_schemas", "load_config", "config_from_dict",
           "config_hash", "to_yaml", "to_json", "to_dict", "shipped_config_dir"]


def load_config(overrides: list[str] | tuple[str, ...] = (), config_dir: str | Path | None = None) -> Config:
    """Compose, validate and resolve the configuration.

    Parameters
    ----------
    overrides : Hydra overrides, e.g. ``["campaign=my_exp", "reduction.npt=2000", "backend.workers=8"]``.
    config_dir : a user's folder of configs (``campaign/my_exp.yaml``, ``reduction/...``), searched
        before the shipped ``configs/``.

    Returns
    -------
    A read-only ``DictConfig`` with the structure of :class:`Config`: values typed, interpolations
    resolved, paths absolute, ``campaign.output`` filled in.

    Raises
    ------
    ConfigError : naming the key and value (or the override) at fault.

    Example
    -------
    >>> cfg = load_config(["campaign=example", "campaign.raw_data=/data/RAW_DATA", ...])
    >>> cfg.campaign.output
    '/data/PROCESSED_DATA/xreduce/example'
    """
    typed = [str(o) for o in overrides]
    overrides = _quoted(typed)
    user_dir = None
    if config_dir is not None:
        user_dir = Path(config_dir).expanduser().absolute()
        if not user_dir.is_dir():
            raise ConfigError(f"--config-dir {config_dir}: no such directory")
    try:
        with _hydra(user_dir):
            composed = compose(config_name="config", overrides=overrides)
    except OmegaConfBaseException as err:
        raise _as_typed(_omegaconf_error(err), overrides, typed) from None
    except HydraException as err:
        raise _as_typed(_hydra_error(err, overrides), overrides, typed) from None
    _check_choice_consistent(composed)
    return config_from_dict(_container(composed))


def _quoted(overrides: list[str]) -> list[str]:
    """Overrides as Hydra's grammar takes them: a ``key=value`` whose value the grammar rejects
    (``reduction.unit=q_nm^-1``, a path with ``~``, ``#``, ``(``, ``&``, ``'`` or non-ASCII letters)
    gets its value quoted, when quoting gives back exactly the text typed. A bare word after a
    ``key=value`` is the rest of a path that the shell split at a space: say how to quote it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out: list[str] = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            if out and "=" in out[-1] and not override.startswith(("~", "+")):
                raise ConfigError(f"{override!r} is not an override (key=value): if it is the rest of "
                                  f"{out[-1]!r}, a value with a space, quote the whole override in the shell: "
                                  f"\"{out[-1]} {override}\"")
            out.append(override)
            continue
        if value[:1] in ("'", '"') or _parses(parser, override):
            out.append(override)
            continue
        quote = "'" if "'" not in value else '"'
        candidate = f"{key}={quote}{value}{quote}"
        parsed = _parses(parser, candidate)
        out.append(candidate if parsed and parsed.value() == value else override)
    return out


def _as_typed(error: ConfigError, quoted: list[str], typed: list[str]) -> ConfigError:
    """The error naming the overrides as they were typed, not as :func:`_quoted` quoted them."""
    message = str(error)
    for mine, theirs in zip(quoted, typed):
        if mine != theirs:
            message = message.replace(mine, theirs)
    return ConfigError(message)


def _parses(parser: Any, override: str) -> Any:
    """The parsed override, or None where Hydra's grammar rejects it."""
    try:
        return parser.parse_override(override)
    except HydraException:
        return None


def config_from_dict(data: Mapping[str, Any], *, check_paths: bool = True) -> Config:
    """Validate a plain dict (e.g. ``plan.json``'s ``config``) into a config like :func:`load_config`'s.

    ``check_paths=False`` skips the existence checks (reading a plan on a machine without the data).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a config must be a mapping of groups, got {type(data).__name__}")
    reduction, backend = data.get("reduction"), data.get("backend")
    schema = Config(reduction=_schema("reduction", "kind", reduction, reduction_schemas())(),
                    backend=_schema("backend", "name", backend, BACKEND_SCHEMAS)())
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), dict(data))
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err) from None
    assert isinstance(cfg, DictConfig)  # merged into a structured (dataclass) config
    _check_missing(cfg)
    _check_values(cfg, check_paths)
    OmegaConf.set_readonly(cfg, True)
    return typing.cast(Config, cfg)


@contextmanager
def _hydra(user_dir: Path | None) -> Iterator[None]:
    """Hydra initialised on the shipped configs, with ``user_dir`` searched first.

    Like ``hydra.initialize_config_dir``, but prepending the user's folder as Hydra's own
    ``--config-dir`` does (the public initialisers can only append after the primary folder).
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    try:
        version.setbase("1.3")
        search_path = create_config_search_path(str(shipped_config_dir()))
        if user_dir is not None:
            search_path.prepend(provider="xreduce --config-dir", path=f"file://{user_dir}")
        Hydra.create_main_hydra2(task_name="xreduce", config_search_path=search_path)
        yield
    finally:
        restore_gh_from_backup(backup)


def _container(cfg: DictConfig) -> dict[str, Any]:
    """Plain, resolved values (``???`` kept, so that missing values are reported with their key)."""
    try:
        return typing.cast(dict, OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err) from None


def _schema(group: str, key: str, node: Any, schemas: Mapping[str, type]) -> type:
    """The schema of a group whose kind is chosen by ``<group>.<key>`` (reduction.kind, backend.name)."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{group} must be a mapping of keys (choose it with {group}="
                          f"{next(iter(schemas))}), got {node!r}")
    value = node.get(key, MISSING)
    if value in (MISSING, None):
        raise ConfigError(f"{group}.{key} is not set; choose one of {', '.join(schemas)} "
                          f"(e.g. {group}={next(iter(schemas))})")
    if value not in schemas:
        broken = broken_kind_error(f"{group}.{key}={value!r}", str(value)) if group == "reduction" else None
        if broken:
            raise broken
        raise ConfigError(f"{group}.{key}={value!r} is not allowed{_did_you_mean(str(value), schemas)}; "
                          f"allowed: {', '.join(schemas)}")
    return schemas[value]


def _check_choice_consistent(cfg: DictConfig) -> None:
    """``reduction.kind`` / ``backend.name`` must match the group config chosen (its schema)."""
    for group, key, schemas in (("reduction", "kind", reduction_schemas()), ("backend", "name", BACKEND_SCHEMAS)):
        node = cfg.get(group)
        chosen = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        value = node.get(key) if isinstance(node, DictConfig) else None
        if chosen not in schemas.values() or value not in schemas:
            continue                     # untyped or unknown: reported by config_from_dict
        assert chosen is not None  # one of schemas.values()
        expected = _field_default(chosen, key)
        if value != expected:
            raise ConfigError(f"{group}.{key}={value} does not match the {group} config chosen ({expected}); "
                              f"choose the {group} group instead: {group}={value}")


def _field_default(schema: type, key: str) -> Any:
    return next(f.default for f in dataclasses.fields(schema) if f.name == key)
