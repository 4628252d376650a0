"""``--print-config``: every key of a config dataclass with its type, value, default and a line of doc.

The doc of a field is its ``metadata["doc"]``, else its trailing ``# comment``, else the clause of the
class docstring that names it, so the dataclasses stay the one place a setting is described.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml


@dataclass(frozen=True)
class ConfigKey:
    """One leaf of a config: ``section.key``, its type, its value here, its default and a line of doc."""

    key: str
    type: str
    value: Any
    default: Any
    doc: str


def config_keys(cfg: Any, prefix: str = "") -> list[ConfigKey]:
    """Every leaf key of config dataclass ``cfg``, nested sections flattened to ``section.key``."""
    hints = typing.get_type_hints(type(cfg))
    keys = []
    for item in dataclasses.fields(cfg):
        value = getattr(cfg, item.name)
        if dataclasses.is_dataclass(value):
            keys += config_keys(value, f"{prefix}{item.name}.")
        elif item.metadata.get("sections"):  # a term's own section: its keys as set (distill/terms/)
            keys += [ConfigKey(f"{prefix}{name}.{key}", type(setting).__name__, setting, None,
                               f"set in the section of the term {name!r} (docs/extending.md)")
                     for name, section in value.items() for key, setting in (section or {}).items()]
        else:
            keys.append(ConfigKey(prefix + item.name, type_name(hints[item.name]), value, _field_default(item),
                                  field_doc(type(cfg), item)))
    return keys


PRINT_CONFIG_HEADER = ("# every config key: type = value here (default), then what it does; "
                       "set any with section.key=value or in the YAML file")


def describe_config(cfg: Any, prefix: str = "") -> str:
    """``key: type = value (default ...)`` and an indented line of doc for every key of ``cfg``."""
    lines = []
    for key in config_keys(cfg, prefix):
        default = "" if key.value == key.default else f" (default {_show(key.default)})"
        lines.append(f"{key.key}: {key.type} = {_show(key.value)}{default}")
        lines.append(f"    {key.doc or '(undocumented)'}")
    return "\n".join(lines)


def type_name(hint: Any) -> str:
    """A type annotation as a reader writes it: ``int | None``, ``'fp32' | 'bf16'``, ``tuple[str, ...]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return " | ".join(repr(choice) for choice in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if hint is type(None):
        return "None"
    if origin is not None:
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    return getattr(hint, "__name__", str(hint))


def field_doc(cls: type, item: dataclasses.Field) -> str:
    """One line saying what a field does: its ``metadata["doc"]``, else its trailing ``# comment``, else
    the sentence of the class docstring that names it in double backticks."""
    if item.metadata.get("doc"):
        return item.metadata["doc"]
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        source = ""
    comment = re.search(rf"^\s+{item.name}\s*:[^#\n]*#\s*(.+)$", source, flags=re.M)
    if comment:
        return comment.group(1).strip()
    clauses = _docstring_clauses(cls)
    named = next((c for c in clauses if re.search(rf"``{item.name}(``|:)|^{item.name}: ", c)), None)
    in_formula = next((c for c in clauses if any(re.search(rf"\b{item.name}\b", span)
                                                 for span in re.findall(r"``(.+?)``", c))), None)
    return (named or in_formula or "").replace("``", "`")


def _docstring_clauses(cls: type) -> list[str]:
    """The class docstring cut at paragraphs, bullets, sentences and semicolons."""
    clauses = []
    for chunk in re.split(r"\n\s*\n|\n\s*(?=- )", inspect.getdoc(cls) or ""):
        text = " ".join(chunk.split()).removeprefix("- ").replace("e.g. ", "e.g.\0").replace("i.e. ", "i.e.\0")
        for sentence in re.split(r"(?<=\.) ", text):
            clauses += [clause.replace("\0", " ").strip() for clause in _split_outside_parentheses(sentence, "; ")]
    return clauses


def _split_outside_parentheses(text: str, separator: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            start = i + len(separator)
    return parts + [text[start:]]


def _field_default(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return "required"


def _show(value: Any) -> str:
    """A value as it would be written in the YAML file."""
    return yaml.safe_dump(_plain(value), default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _plain(value: Any) -> Any:
    """``value`` in YAML's types: a dataclass (an own data source) as the mapping of its set fields."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
