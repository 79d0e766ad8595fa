"""Run configurations: dataclasses that papermill parameters fill, validated before any training.

An unknown or ill-typed parameter fails at once and names itself (docs/design.md, "Runs"), so a
typo in a 10-hour reproduction is caught in the first second, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["ConfigError", "from_params", "reproduction_settings", "to_dict", "to_json", "typed_like_defaults"]


class ConfigError(ValueError):
    """A parameter is unknown, of the wrong type or out of range; the message names it."""


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check ``value`` against a simple annotation; return (ok, value coerced where lossless)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            ok, coerced = _type_ok(value, arm)
            if ok:
                return True, coerced
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(annotation), value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        coerced = []
        for item in value:
            ok, c = _type_ok(item, item_type)
            if not ok:
                return False, value
            coerced.append(c)
        return True, origin(coerced)
    if annotation is Any:
        return True, value
    if annotation is type(None):
        return value is None, value
    if annotation is float:
        if isinstance(value, bool):
            return False, value
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is str:
        return isinstance(value, str), value
    return isinstance(value, annotation), value


def from_params(cls: type[T], params: dict[str, Any] | None = None, **overrides: Any) -> T:
    """Build config ``cls`` from a parameter dict, failing on unknown or ill-typed values.

    Example: ``from_params(PretrainConfig, {"lr": 0.1, "max_epochs": 5})``. The dataclass's own
    ``__post_init__`` then checks ranges and choices.
    """
    values = {**(params or {}), **overrides}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{cls.__name__}: unknown parameter {key!r}{hint}")
        ok, values[key] = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{cls.__name__}: parameter {key!r} must be {hints[key]}, got {value!r} ({type(value).__name__})"
            )
    return cls(**values)


def reproduction_settings(
    defaults: dict[str, Any], overrides: dict[str, Any] | None = None, name: str = "reproduction"
) -> types.SimpleNamespace:
    """A chapter's reproduction settings as attributes (``repro.ft_lr``): ``defaults`` (the notebook's
    ``REPRODUCTION`` cell) updated by ``overrides`` (its ``reproduction`` parameter).

    The chapters keep the knobs a student changes in their parameters cell and the rest of a
    paper reproduction here, out of the reader's way but as strict: an override must name a
    default (a close match is suggested) and have its type (``None`` accepts anything, an int
    stands for a float); the error names ``name``, the key, the expected type and the value.
    """
    return types.SimpleNamespace(**{**defaults, **typed_like_defaults(defaults, overrides, name)})


def typed_like_defaults(
    defaults: dict[str, Any], overrides: dict[str, Any] | None, name: str, kind: str = "setting"
) -> dict[str, Any]:
    """``overrides`` checked against ``defaults``: every key known, every value of its default's
    type (``None`` accepts anything, an int stands for a float; lists and dicts are not looked
    into). Returns the overrides, coerced where lossless (an int given for a float: a float).

    Raises:
        ConfigError: naming ``name``, the ``kind`` ("setting", "parameter"), the key, the expected
            type and the value.
    """
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{name} must be a mapping of {kind}: value, got {overrides!r}")
    values = {}
    for key, value in overrides.items():
        if key not in defaults:
            close = difflib.get_close_matches(str(key), defaults, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{name}: unknown {kind} {key!r}{hint}; known: {sorted(defaults)}")
        default = defaults[key]
        expected = Any if default is None else float if isinstance(default, float) else type(default)
        ok, values[key] = _type_ok(value, expected)
        if not ok:
            raise ConfigError(
                f"{name}: {kind} {key!r} must be {expected.__name__ if expected is not Any else 'any'}"
                f" like its default {default!r}, got {value!r} ({type(value).__name__})"
            )
    return values


def to_dict(config: Any) -> dict[str, Any]:
    """The config as a plain dict (tuples as lists), for JSON files and checkpoints."""
    return json.loads(to_json(config))


def changed_fields(saved: dict[str, Any], config: Any, ignore=()) -> set[str]:
    """Fields of dataclass ``config`` whose value differs from a saved configuration dict (a run's
    ``config.json`` or checkpoint), ``ignore`` aside. A field the saved dict lacks (added to the
    class since) counts as its default value."""
    now, defaults = to_dict(config), to_dict(type(config)())
    return {k for k in now if k not in ignore and saved.get(k, defaults[k]) != now[k]}


def to_json(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)


def check_choice(cls_name: str, name: str, value: Any, choices) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{cls_name}: {name}={value!r} is not one of {sorted(choices)}")


def check_range(cls_name: str, name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (either bound optional)."""
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{cls_name}: {name}={value!r} must be in [{low}, {high}]")


def pick(value: Any, default: Any) -> Any:
    """A notebook parameter's value, or ``default`` when it is left empty: ``0``, ``0.0``,
    ``-1``, ``[]``, ``""`` or ``None`` (the chapters' "0: the size's value" convention)."""
    return default if value in (0, 0.0, -1, [], "", None) else value

