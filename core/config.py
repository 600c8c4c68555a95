"""Config dataclasses: one source of defaults, read back strictly from checkpoints and command lines.

Every config is a dataclass whose field defaults are the only defaults. `config_kwargs` rebuilds one
from a dict (a checkpoint's metadata), refusing keys it does not know instead of silently dropping
them; `add_config_arguments` / `config_from_args` derive command-line options from the fields, so a
command cannot drift from the library's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def config_kwargs(cls, values: dict) -> dict:
    """Constructor arguments of dataclass `cls` from a JSON dict (lists back to tuples); unknown keys raise."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


class SavedConfig:
    """to_dict / from_dict for a config dataclass that is saved inside its weights (JSON metadata)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        return cls(**config_kwargs(cls, values))


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls, exclude=(), help: dict | None = None,
                         choices: dict | None = None) -> None:
    """One option per field of dataclass `cls`, typed and defaulted from the field.

    Tuples take several values (`--widths 32 64`), booleans are switches with a `--no-` form.
    """
    hints = typing.get_type_hints(cls)
    help, choices = help or {}, choices or {}
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        hint, default = hints[field.name], field.default
        text = help.get(field.name, "") + f" (default: {default})"
        if hint is bool:
            parser.add_argument(_option(field.name), action=argparse.BooleanOptionalAction, default=default,
                                help=text)
        elif typing.get_origin(hint) is tuple:
            (item, *_) = typing.get_args(hint)
            parser.add_argument(_option(field.name), type=item, nargs="+", default=list(default), help=text)
        else:
            parser.add_argument(_option(field.name), type=hint, default=default, choices=choices.get(field.name),
                                help=text)


def config_from_args(cls, args: argparse.Namespace, **overrides):
    """The dataclass built from the options add_config_arguments added (fields it excluded keep their defaults)."""
    values = {}
    for field in dataclasses.fields(cls):
        if hasattr(args, field.name):
            value = getattr(args, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**{**values, **overrides})
