"""Registries of named parts (strategies, tasks, backends) and the one spec grammar.

A spec names a part and its options: `NAME` or `NAME:key=value,...` ("self-refine:rounds=3",
"arithmetic:digits=1,steps=2"); a task may also be a `.jsonl` path ("items.jsonl:visible=2").
Each part registers itself with the options it takes, their defaults (whose types are the
options' types) and bounds; a spec is checked against them, with "did you mean" for a
mistyped name or option, before anything runs. Parts from other packages register through
Python entry points (`selfcorrect.strategies`, `selfcorrect.tasks`, `selfcorrect.backends`),
loaded on first use.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from selfcorrect.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Entry:
    name: str
    factory: Callable  # a class, or a function that makes the part
    about: str = ""
    options: dict[str, object] = field(default_factory=dict)  # name -> default
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    plugin: str | None = None  # the distribution it came from


class Registry:
    """Named parts of one kind."""

    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group
        self._entries: dict[str, Entry] = {}
        self._plugins_loaded = False

    def register(self, name: str | None = None, *, about: str = "", options: dict | None = None,
                 bounds: dict | None = None, choices: dict | None = None):
        """A decorator: `@STRATEGIES.register()` on a class with `name` and `options`, or
        `@TASKS.register("name")` on a class or factory whose keyword defaults are its options."""
        def add(factory):
            entry_name = name or getattr(factory, "name")
            self._entries[entry_name] = Entry(
                entry_name, factory, about or _first_line(factory.__doc__),
                options if options is not None else _defaults(factory),
                bounds if bounds is not None else dict(getattr(factory, "bounds", {})),
                choices if choices is not None else dict(getattr(factory, "choices", {})))
            return factory
        return add

    def names(self) -> list[str]:
        self._load_plugins()
        return list(self._entries)

    def entries(self) -> list[Entry]:
        self._load_plugins()
        return list(self._entries.values())

    def get(self, name: str) -> Entry:
        self._load_plugins()
        entry = self._entries.get(name)
        if entry is None:
            near = difflib.get_close_matches(name, self._entries, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"unknown {self.kind} {name!r}", f"{hint}use one of: {', '.join(self._entries)}")
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for point in importlib.metadata.entry_points(group=self.group):
            try:
                factory = point.load()
            except Exception as e:  # a broken plugin must not take the built-in parts with it
                log.warning("the %s plugin %r (%s) failed to load: %s", self.kind, point.name, point.value, e)
                continue
            self.register(point.name)(factory)
            self._entries[point.name].plugin = point.dist.name if point.dist else point.value


def parse_spec(spec: str, kind: str) -> tuple[str, dict[str, str]]:
    """NAME or NAME:key=value,... as (name, raw options); a `.jsonl` path is the task
    `jsonl` with its path as an option, and `served:STORE,...` the task `served` of that store."""
    spec = spec.strip()
    if match := re.fullmatch(r"(?:jsonl:)?(.+?\.jsonl)(?::(.*))?", spec):
        name, rest, options = "jsonl", match.group(2) or "", {"path": match.group(1)}
    elif match := re.fullmatch(r"served:([^,=]+)(?:,(.*))?", spec):  # served:STORE,key=value
        name, rest, options = "served", match.group(2) or "", {"store": match.group(1)}
    else:
        name, _, rest = spec.partition(":")
        options = {}
    if not name:
        raise ConfigError(f"empty {kind} spec {spec!r}", "write NAME or NAME:key=value,...")
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, equals, value = pair.partition("=")
        if not equals:
            raise ConfigError(f"option {pair!r} of {kind} {name} has no value", "write key=value")
        options[key.strip()] = value.strip()
    return name, options


def split_specs(text: str) -> list[str]:
    """A comma-separated list of specs, where a spec's own options are comma-separated too:
    `beam-search:n=4,width=2,single` is two specs. A piece `key=value` with no name before
    it belongs to the spec before it."""
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if specs and "=" in piece and ":" not in piece.split("=", 1)[0]:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def coerce(entry: Entry, kind: str, raw: dict[str, str], extra: tuple[str, ...] = ()) -> dict:
    """Raw option strings as the types of their defaults, checked against bounds and
    choices; `extra` names options the caller handles itself."""
    typed = {}
    for key, value in raw.items():
        if key in extra:
            continue
        if key not in entry.options:
            near = difflib.get_close_matches(key, entry.options, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"{kind} {entry.name} has no option {key!r}",
                              f"{hint}its options are: {', '.join(entry.options) or 'none'}")
        typed[key] = typed_value(entry.name, kind, key, value, entry.options[key])
    check_bounds(entry.name, typed, entry.bounds, entry.choices)
    return typed


def check_bounds(name: str, values: dict, bounds: dict[str, tuple[float, float]],
                 choices: dict[str, tuple[str, ...]]) -> None:
    """Option values against a part's bounds and choices (a typo in a budget fails here)."""
    for key, value in values.items():
        if key in bounds and isinstance(value, (int, float)):
            low, high = bounds[key]
            if not low <= value <= high:
                raise ConfigError(f"{name}:{key}={value} is outside {low:g} to {high:g}",
                                  f"choose {key} from {low:g} to {high:g}")
        if key in choices and value not in choices[key]:
            raise ConfigError(f"{name}:{key}={value!r} is not an option",
                              f"use one of: {', '.join(choices[key])}")


def typed_value(name: str, kind: str, key: str, value: str, default):
    """An option's value, of the type of its default (text where the default is None)."""
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"option {key}={value!r} of {kind} {name} is not a {type(default).__name__}",
                          f"the default is {default!r}") from None
    return value


def _defaults(factory) -> dict:
    """A part's options: a class's `options` table, else its keyword defaults."""
    if isinstance(getattr(factory, "options", None), dict):
        return dict(factory.options)
    signature = inspect.signature(factory)
    return {p.name: p.default for p in signature.parameters.values()
            if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0]
