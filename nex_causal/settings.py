"""Settings: one dataclass per configurable concept, read alike from YAML, Python and the command line.

A concept's dataclass (``CaptureConfig``, ``NexConfig``, ``SelectionConfig``, ...) declares
each setting once, with its default and, in the field's metadata, a help text. From it:

- ``from_mapping`` builds an instance from a mapping (a YAML file), checking every key and
  type and naming the bad one by its key path (``capture.window``);
- ``section`` derives the dataclass an experiment config holds for it, less the fields the
  experiment sets for every stage at once (model, device, ...);
- ``add_options`` gives a command an option per field (``--max-new-tokens``), whose default
  and help come from the field, and ``given_options`` reads back the ones the user gave.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from nex_causal.errors import NexError
from nex_causal.io import file_sha256


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` (its metadata), with its default."""
    f = _fields(cls)[name]
    default = default_of(f)
    text = f.metadata.get("help", "")
    return f"{text} (default {default})" if default is not dataclasses.MISSING else text


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _convert(value: Any, kind: Any, where: str) -> Any:
    """``value`` checked against the annotation ``kind``; NexError naming ``where`` otherwise."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _convert(value, kind, where)
    if origin is typing.Literal:
        if value not in args:
            raise NexError(f"config key {where!r} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise NexError(f"config key {where!r} must be a mapping of {kind.__name__} fields")
        return from_mapping(kind, value, f"{where}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise NexError(f"config key {where!r} must be a list, got {value!r}")
        items = [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is typing.Any:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NexError(f"config key {where!r} must be {kind.__name__}, got {value!r}")
    return value


def from_mapping(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """An instance of the dataclass ``cls`` from ``values``, every key and type checked."""
    if not isinstance(values, Mapping):
        raise NexError(f"config {prefix.rstrip('.') or 'file'!r} must be a mapping of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    fields = _fields(cls)
    if unknown := [k for k in values if k not in fields]:
        raise NexError(f"unknown config key {prefix + str(unknown[0])!r}: use one of {', '.join(fields)}")
    if missing := [k for k, f in fields.items() if default_of(f) is dataclasses.MISSING and k not in values]:
        raise NexError(f"config key {prefix + missing[0]!r} is required")
    return cls(**{k: _convert(v, hints[k], prefix + k) for k, v in values.items()})


def input_digests(config: Any, names: Iterable[str] | None = None) -> dict[str, Any]:
    """``<field>_sha256`` for each field of the dataclass ``config`` marked ``metadata["file"]`` (of ``names``, when
    given) whose value names an existing file (a list of them: a list of digests, None where one is no file).

    A result depends on the content of the files it reads (a tasks file, a neuron set, traces), not on
    their paths alone, so each concept's ``content()`` and each stage key holds these. A field whose
    value names no file (``organism:40``) adds nothing, so such a key is the same as before.
    """
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not f.metadata.get("file") or (names is not None and f.name not in names) or not value:
            continue
        if isinstance(value, (list, tuple)):
            out[f"{f.name}_sha256"] = [file_sha256(v) if os.path.isfile(v) else None for v in value]
        elif isinstance(value, str) and os.path.isfile(value):
            out[f"{f.name}_sha256"] = file_sha256(value)
    return out


def same_field(cls: type, name: str, **changes: Any) -> Any:
    """A field declared as ``cls``'s field ``name`` (default, help), for a dataclass that shares it."""
    f = _fields(cls)[name]
    spec = {"default": f.default, "default_factory": f.default_factory, "metadata": f.metadata, **changes}
    return dataclasses.field(**spec)


def section(cls: type, exclude: Iterable[str], name: str | None = None,
            extra: Iterable[tuple[str, Any, Any]] = ()) -> type:
    """The dataclass of ``extra``'s fields (name, type, ``field``), then ``cls``'s fields less ``exclude``
    with the same defaults and help."""
    exclude = set(exclude)
    hints = typing.get_type_hints(cls)
    fields = [*extra, *((f.name, hints[f.name], dataclasses.field(default=f.default,
                                                                   default_factory=f.default_factory,
                                                                   metadata=f.metadata))
                        for f in dataclasses.fields(cls) if f.name not in exclude)]
    required = [f for f in fields if default_of(f[2]) is dataclasses.MISSING]  # before those with defaults
    fields = required + [f for f in fields if f not in required]
    return dataclasses.make_dataclass(name or f"{cls.__name__}Section", fields, frozen=True)


def _option_type(kind: Any) -> tuple[Any, dict[str, Any]]:
    """The argparse ``type`` (and extra keywords) that reads a field of annotation ``kind``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        (kind,) = [a for a in args if a is not type(None)]
        return _option_type(kind)
    if origin is typing.Literal:
        return str, {"choices": list(args)}
    if origin in (list, tuple):
        item, _ = _option_type(args[0])
        return (lambda text: [item(v.strip()) for v in text.split(",") if v.strip()]), {}
    return (kind if kind in (int, float, str) else str), {}


def add_options(parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = (),
                required: Iterable[str] = ()) -> None:
    """An option per field of ``cls`` (``--field-name``), not set unless given.

    Booleans are flags with their negation (``--saturate`` / ``--no-saturate``), so one that defaults to true can be
    turned off; lists take comma-separated values. ``required`` fields must be given.
    """
    exclude, required = set(exclude), set(required)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = help_of(cls, f.name)
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        convert, extra = _option_type(hints[f.name])
        parser.add_argument(flag, dest=f.name, type=convert, default=None, required=f.name in required,
                            help=text, metavar=f.name.upper(), **extra)


def split_lists(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with comma-separated strings read as lists where ``cls`` expects one (``k: 8,32``),
    as the command line reads them."""
    hints = typing.get_type_hints(cls)

    def is_list(kind: Any) -> bool:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return typing.get_origin(kind) in (list, tuple) or (len(args) == 1 and is_list(args[0]))

    def read(name: str, value: Any) -> Any:
        if not (isinstance(value, str) and name in hints and is_list(hints[name])):
            return value
        try:
            return _option_type(hints[name])[0](value)
        except ValueError:
            raise NexError(f"config key {name!r} must be a comma-separated list, got {value!r}") from None

    return {name: read(name, value) for name, value in values.items()}


def given_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of ``cls``'s fields that the user gave (as raw values, for ``from_mapping``)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def schema(cls: type, indent: str = "") -> list[str]:
    """The YAML a config of ``cls`` reads, every field with its default and help as a comment
    (sections nested; a section that is off by default shows its fields commented out)."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        inner = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        default = default_of(f)
        text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(inner[0]):
            state = "off unless configured" if default is None else "on; null turns it off"
            lines.append(f"{indent}{f.name}:{'':<{max(1, 30 - len(indent) - len(f.name))}}# {text or 'section'} ({state})")
            nested = schema(inner[0], indent + "  ")
            lines += nested if default is not None else [f"{indent}  # {line.strip()}" for line in nested]
            continue
        value = "<required>" if default is dataclasses.MISSING else _yaml_value(default)
        entry = f"{indent}{f.name}: {value}"
        lines.append(f"{entry:<32}# {text}" if text else entry)
    return lines


def _yaml_value(value: Any) -> str:
    import json

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) and (not value or ":" in value or " " in value) else str(value)
