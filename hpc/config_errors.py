"""Config errors in words: Hydra and OmegaConf exceptions turned into one-line ConfigErrors.

Hydra's and OmegaConf's own messages are multi-line and name internals; a user needs the key (or
the override, or the YAML file) at fault, the value, and what was expected: the type in words, the
valid keys with the closest one suggested, the configs available in a group, or an example
override for a mandatory value. :mod:`hpc.config` raises these ``from None``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from reduction.step import ReductionConfig, broken_kinds, get_kind, kinds, rules

from .config_schema import BACKEND_SCHEMAS, BackendConfig
from .errors import ConfigError, XReduceError

#: Example overrides shown when a mandatory value is missing (a reduction kind gives its own: KeyRule.example).
_EXAMPLES = {"campaign.name": "campaign.name=lab6_2024",
             "campaign.raw_data": "campaign.raw_data=/data/visitor/ma1234/id11/20240101/RAW_DATA",
             "campaign.detector": "campaign.detector=pilatus"}


def broken_kind_error(said: str, kind: str) -> ConfigError | None:
    """The error for choosing a reduction kind that is registered but cannot be loaded (``said``: how
    the user chose it), or None when ``kind`` is not such a kind."""
    reason = broken_kinds().get(kind)
    if reason is None:
        return None
    return ConfigError(f"{said}: this reduction kind is installed but cannot be loaded ({reason})")


def _example(key: str, kind: str | None = None) -> str:
    """An example override setting ``key``, for a message about its missing value."""
    group, _, name = key.partition(".")
    if group == "reduction" and kind:
        try:
            example = rules(get_kind(kind).schema).get(name)
        except XReduceError:
            example = None
        if example is not None and example.example:
            return f"{key}={example.example}"
    return _EXAMPLES.get(key, key + "=<value>")


def _did_you_mean(value: str, options: typing.Iterable[Any]) -> str:
    close = difflib.get_close_matches(value, [str(o) for o in options if o is not None], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _describe(annotation: Any) -> str:
    """A type annotation in words: ``list[float] | None`` → "a list of numbers or null"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{' or '.join(_describe(a) for a in inner)} or null"
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if annotation in words:
        return words[annotation]
    if dataclasses.is_dataclass(annotation):
        return f"a mapping of keys ({', '.join(f.name for f in dataclasses.fields(annotation))})"
    return getattr(annotation, "__name__", str(annotation))


_OMEGACONF_TYPES = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "string": "a string"}


def _omegaconf_error(err: OmegaConfBaseException, where: str = "") -> ConfigError:
    """An OmegaConf error as a ConfigError that names the key, the value and what was expected."""
    key = err.full_key or str(err.key or "")
    schema = getattr(err, "object_type", None)
    schema = schema if dataclasses.is_dataclass(schema) else None
    where = f" {where}" if where else ""
    if isinstance(err, MissingMandatoryValue):
        return ConfigError(f"{key} is mandatory and not set{where}: e.g. {_example(key)}")
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and schema is not None:
        valid = [f.name for f in dataclasses.fields(schema)]
        group = key.rpartition(".")[0]
        hint = ""
        if schema in (ReductionConfig, BackendConfig):
            first = next(iter(kinds() if schema is ReductionConfig else BACKEND_SCHEMAS))
            hint = (f"; a {group} config of your own must extend a shipped one: start it with "
                    f"`defaults: [{first}, _self_]`")
        return ConfigError(f"unknown key {key}{where}{_did_you_mean(str(err.key), valid)}; valid keys of "
                           f"{group or 'the config'}: {', '.join(valid)}{hint}")
    if isinstance(err, ValidationError) and not isinstance(err, InterpolationResolutionError) and key:
        assert err.msg is not None  # omegaconf sets msg together with the key (format_and_raise)
        expected = err.msg.split("\n")[0]
        converted = re.search(r"converted to (\w+)|Cannot convert '\w+' to (string)", expected)
        if converted:
            expected = f"expected {_OMEGACONF_TYPES.get(converted[1] or converted[2], converted[1])}"
        if schema is not None and err.key is not None:
            hints = typing.get_type_hints(schema)
            if str(err.key) in hints:
                expected = f"expected {_describe(hints[str(err.key)])}"
        shown = "null" if err.value is None else repr(err.value)
        return ConfigError(f"{key}={shown}{where}: wrong type, {expected}")
    message = err.msg.split("\n")[0] if err.msg else str(err).split("\n")[0]
    return ConfigError(f"{key}{where}: {message}" if key else f"{message}{where}")


def _hydra_error(err: HydraException, overrides: list[str]) -> ConfigError:
    """A Hydra composition or override error as a one-line ConfigError naming the override."""
    cause = err.__cause__ or err.__context__
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    first_line = str(err).split("\n")[0]
    if isinstance(cause, OmegaConfBaseException):
        source = re.match(r"In '([^']+)'", first_line)
        override = re.match(r"Error merging override (.+)", first_line)
        where = f"in {source[1]}.yaml" if source else f"in override {override[1]!r}" if override else ""
        return _omegaconf_error(cause, where)
    if isinstance(err, OverrideParseException):
        bad = next((o for o in overrides if not _parses(o)), None)
        return ConfigError(f"cannot parse override {bad!r}: {first_line} (syntax: key=value, group=option, "
                           f"+key=value; quote a value with special characters, in the shell: "
                           f"\"{bad.partition('=')[0]}='...'\"; see docs/config.md)" if bad
                           else f"bad override: {first_line}")
    ambiguous = re.match(r"Ambiguous value for argument '(([^=]+)=.*)'", first_line)
    if ambiguous:
        return ConfigError(f"override {ambiguous[1]!r} is ambiguous (a comma means a sweep to Hydra): quote the "
                           f"value: '{ambiguous[2]}=\"{ambiguous[1].partition('=')[2]}\"'")
    if isinstance(err, MissingConfigException) and first_line.startswith("Cannot find primary config"):
        return ConfigError(f"no config.yaml found: {first_line}")
    if first_line.startswith("You must specify 'campaign'"):
        options = str(err).split("Available options:")[-1].split()
        return ConfigError(f"no campaign chosen: add campaign=<name> (shipped: {', '.join(options)}; or your own "
                           f"DIR/campaign/<name>.yaml with --config-dir DIR)")
    if isinstance(err, MissingConfigException):
        missing = re.search(r"Could not find '([^']+)'", str(err))
        available = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)*)", str(err))
        listed = ", ".join(available[1].split()) if available else "none"
        if missing:
            group, _, name = missing[1].rpartition("/")
            broken = broken_kind_error(f"reduction={name}", name) if group == "reduction" else None
            if broken:
                return broken
            return ConfigError(f"{group}={name}: no such config {missing[1]}.yaml"
                               f"{_did_you_mean(name, listed.split(', '))}; available: {listed} "
                               f"(add your own with --config-dir DIR)")
    return ConfigError(" ".join(str(err).split("\n")[:2]).strip())


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    try:
        OverridesParser.create().parse_overrides([override])
    except Exception:
        return False
    return True
