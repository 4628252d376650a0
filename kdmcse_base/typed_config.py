"""Typed configs from plain mappings (YAML, flags), one way for every package: each key is checked
against its dataclass annotation (unknown keys, types, ``Literal`` choices, nested sections) and its
numeric range, given as field metadata (``at_least``, ``POSITIVE``, ...), and every error names the key.

    from_dict(TeacherConfig, {"batch_size": "64"}, "teacher.")
    ConfigError: teacher.batch_size must be int, got '64'
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


# Allowed ranges of numeric fields, as dataclass field metadata (checked by ``from_dict``, naming the key).
def at_least(low: float) -> dict[str, Any]:
    return {"range": (low, None, False)}


POSITIVE = {"range": (0, None, True)}  # > 0
UNIT_INTERVAL = {"range": (0, 1, False)}  # in [0, 1]
COSINE = {"range": (-1, 1, False)}  # in [-1, 1]: a threshold on unit-vector similarities
SECTIONS = {"sections": True}
"""Metadata of a ``dict`` field that holds a dataclass's open sections: keys the class does not name whose
values are mappings (sections of something registered elsewhere, typed and checked by their owner), kept
raw. A key set to null is an absent section. ``as_mapping`` writes them back beside the named keys."""


def from_dict(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, checking names and types; ``prefix`` names the section."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    raw = _with_open_sections(cls, raw, known)
    refuse_unknown_keys(raw, known, prefix)
    values = {name: _coerce(hints[name], value, prefix + name) for name, value in raw.items()}
    for f in dataclasses.fields(cls):
        if f.name in values and "range" in f.metadata:
            _check_range(values[f.name], f.metadata["range"], prefix + f.name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # the dataclass's own checks (__post_init__)
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from err


def _with_open_sections(cls: type, raw: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """``raw`` with the keys ``cls`` does not name that hold mappings moved into its ``SECTIONS`` field."""
    target = next((f.name for f in dataclasses.fields(cls) if f.metadata.get("sections")), None)
    if target is None:
        return raw
    named = {key: value for key, value in raw.items() if key in known or not isinstance(value, (dict, type(None)))}
    opened = {key: value for key, value in raw.items() if key not in named and value is not None}
    if opened or target in raw:
        named[target] = {**(raw.get(target) or {}), **opened}
    return named


def as_mapping(value: Any) -> Any:
    """A config dataclass as plain YAML types (``dataclasses.asdict``), its ``SECTIONS`` field's sections
    written as keys of their own, as a config file names them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for item in dataclasses.fields(value):
            inner = as_mapping(getattr(value, item.name))
            if item.metadata.get("sections"):
                out.update(inner)
            else:
                out[item.name] = inner
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(as_mapping(v) for v in value)
    if isinstance(value, dict):
        return {key: as_mapping(v) for key, v in value.items()}
    return copy.deepcopy(value)


def refuse_unknown_keys(raw: dict[str, Any], known: set[str], prefix: str) -> None:
    """One line naming every unknown key, with the known key each most likely meant."""
    unknown = sorted(set(raw) - known)
    if not unknown:
        return
    guesses = {key: difflib.get_close_matches(key, sorted(known), n=1) for key in unknown}
    named = ", ".join(prefix + key + (f" (did you mean {prefix}{guesses[key][0]}?)" if guesses[key] else "")
                      for key in unknown)
    raise ConfigError(f"unknown key(s) {named}; known: {sorted(known)}")


def _check_range(value: Any, bounds: tuple[float, float | None, bool], key: str) -> None:
    low, high, low_open = bounds
    if value is None or isinstance(value, str):  # a named setting (``auto``), checked by its Literal
        return
    if not math.isfinite(value):  # YAML reads .inf and .nan as floats; no setting means either
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if low_open and not value > low or not low_open and not value >= low:
        raise ConfigError(f"{key} must be {'>' if low_open else '>='} {low}"
                          f"{f' and <= {high}' if high is not None else ''}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be {'>' if low_open else '>='} {low} and <= {high}, got {value!r}")


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} must be float, got {value!r}") from None
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
        return value
    return value
