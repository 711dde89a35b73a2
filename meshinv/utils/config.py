"""YAML files mapped onto typed dataclasses.

A config class is a (nested) dataclass whose fields carry type hints and defaults. A YAML file sets
any subset of the fields; `--set section.key=value` overrides any key after that (the value is
parsed as YAML, so `--set train.lr=1e-4`, `--set data.views=[0,90]` and `--set out=null` work).
Unknown keys and values of the wrong type are errors that name the key, so a typo fails at once
instead of being silently ignored.

Once built, a config is validated as a whole (`validate_config`): every float must be finite
(except in the fields a class lists in `NON_FINITE_OK`), every `Literal` field must hold one of its
values, and each section's own `validate()` checks its ranges with the helpers below
(`at_least`, `greater_than`, `within`, ...), which raise a `SettingError` naming the field; the
walk prefixes the section's path, so the message names the full key ("pretrain.batch_size must be
>= 1, got 0"). `parse_cli` validates before --dry-run prints, so a dry run refuses exactly what a
real run would.

A run folder records its resolved config (`RUN_CONFIG_FILE`); `changed_settings` compares it with
the current one, skipping the settings that a section declares in `RUN_ONLY` (how a run is driven
or logged, not what it computes), so that a resumed run can refuse to mix two kinds of result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, TypeVar

import yaml

from .io import save_text

T = TypeVar("T")
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config file or override that does not fit the config class."""


class SettingError(ConfigError):
    """One setting's value is not allowed: `key` (dotted, relative to the config object that
    raised it) and `problem` ("must be >= 1, got 0")."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key} {problem}")
        self.key, self.problem = key, problem

    def within(self, section: str) -> "SettingError":
        """The same error, named from the config that holds `section`."""
        return SettingError(f"{section}.{self.key}" if section else self.key, self.problem)


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot or exponent sign (`1e-4`, `1.0e5`)
    as floats, as YAML 1.2 does; PyYAML's YAML 1.1 rules would make them strings."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml_load(stream: Any) -> Any:
    return yaml.load(stream, Loader=_YamlLoader)


# Scalar config types: (accepts the YAML value?, what was expected, conversion). bool is excluded
# from int and float on purpose: `lr: true` is a mistake, not 1.0.
_SCALARS = {
    bool: (lambda v: isinstance(v, bool), "true/false", bool),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", int),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number", float),
    str: (lambda v: isinstance(v, str), "a string", str),
}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the type hint `tp`, converting where YAML is looser (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}: " + "; ".join(errors))
    if origin is typing.Literal:
        if value not in args:
            raise SettingError(where, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp in _SCALARS:
        accepts, expected, convert = _SCALARS[tp]
        if not accepts(value):
            raise ConfigError(f"{where}: expected {expected}, got {value!r}")
        return convert(value)
    raise ConfigError(f"{where}: unsupported config type {tp}")


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build the dataclass `cls` from a nested dict, rejecting unknown keys."""
    if data is None:
        data = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _convert(value, hints[name], key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """The plain nested dict of a config (tuples become lists so that YAML stays plain)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


# -- validation -------------------------------------------------------------------------------------

def _join(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def _items(key: str, value: Any) -> Iterable[tuple[str, Any]]:
    """(key, value) of a setting, or of each item of a list / mapping setting ("iterations[2]")."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _items(f"{key}[{i}]", item)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _items(f"{key}.{name}", item)
    else:
        yield key, value


def check(cfg: Any, names: Sequence[str], ok: Callable[[Any], bool], requirement: str) -> None:
    """Raise a SettingError for the first of the fields `names` of `cfg` (or item of a list or
    mapping field) for which `ok(value)` is false. None (an unset optional) passes."""
    for name in names:
        for key, value in _items(name, getattr(cfg, name)):
            if value is not None and not ok(value):
                raise SettingError(key, f"must be {requirement}, got {value!r}")


def at_least(cfg: Any, minimum: float, *names: str) -> None:
    check(cfg, names, lambda v: v >= minimum, f">= {minimum}")


def greater_than(cfg: Any, bound: float, *names: str) -> None:
    check(cfg, names, lambda v: v > bound, f"> {bound}")


def within(cfg: Any, low: float, high: float, *names: str) -> None:
    """low <= value <= high."""
    check(cfg, names, lambda v: low <= v <= high, f"in [{low}, {high}]")


def non_empty(cfg: Any, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name):
            raise SettingError(name, f"must not be empty, got {getattr(cfg, name)!r}")


def require(condition: bool, key: str, problem: str) -> None:
    """A check the helpers above do not express: `problem` says what is wrong with `key`."""
    if not condition:
        raise SettingError(key, problem)


def _literal_values(tp: Any) -> Optional[tuple]:
    """The allowed values of a Literal (or Optional Literal) type hint, else None."""
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        literals = [_literal_values(option) for option in typing.get_args(tp) if option is not type(None)]
        if literals and all(v is not None for v in literals):
            return tuple(v for values in literals for v in values)
    return None


def validate_config(cfg: Any, section: str = "") -> None:
    """Check a built config and every config nested in it (children first), naming the full key of
    the first problem: Literal fields hold one of their values, floats are finite (except the
    fields a class lists in `NON_FINITE_OK`), then each class's own `validate()`.

    `validate()` raises SettingError (keys relative to its own config) for a setting, or ConfigError
    / ValueError for anything else (reported with the section's name, unless it starts with it).
    """
    hints = typing.get_type_hints(type(cfg))
    non_finite_ok = set(getattr(cfg, "NON_FINITE_OK", ()))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), _join(section, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_config(value, key)
            continue
        allowed = _literal_values(hints.get(f.name))
        if allowed is not None and value is not None and value not in allowed:
            raise SettingError(key, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        if f.name not in non_finite_ok:
            for item_key, item in _items(key, value):
                if isinstance(item, float) and not math.isfinite(item):
                    raise SettingError(item_key, f"must be a finite number, got {item!r}")
    own_check = getattr(cfg, "validate", None)
    if callable(own_check):
        try:
            own_check()
        except SettingError as err:
            raise err.within(section) from None
        except ValueError as err:  # ConfigError included: a problem that is not one setting's
            message = str(err)
            if section and not message.startswith(section):
                message = f"{section}: {message}"  # name the section, unless the message does
            raise ConfigError(message) from None


# -- run folders ------------------------------------------------------------------------------------

RUN_CONFIG_FILE = "config.yaml"  # the resolved config a script writes into its output folder


def saved_run_config(out_dir: str | os.PathLike) -> Optional[dict]:
    """The resolved config (a plain dict) of the run that wrote `out_dir`, or None."""
    path = Path(out_dir) / RUN_CONFIG_FILE
    if not path.is_file():
        return None
    with open(path) as f:
        return _yaml_load(f) or {}


def flatten_config(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a nested config dict (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def run_only_settings(cfg: Any, section: str = "") -> set[str]:
    """Dotted keys (under `section`) of the settings that the config classes in `cfg` declare in
    `RUN_ONLY`: how a run is driven or logged, not what it computes. A name there that is a
    nested config covers all of it."""
    keys = {_join(section, name) for name in getattr(cfg, "RUN_ONLY", ())}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            keys |= run_only_settings(value, _join(section, f.name))
    return keys


def changed_settings(previous: dict, current: dict, sections: Sequence[str], ignore: Iterable[str] = ()) -> list[str]:
    """The dotted keys in `sections` of two resolved configs (plain dicts) whose values differ,
    except the keys in `ignore` and everything under an ignored key."""
    ignored = tuple(ignore)
    old = flatten_config({k: previous.get(k) or {} for k in sections})
    new = flatten_config({k: current.get(k) or {} for k in sections})
    return sorted(key for key in old.keys() | new.keys()
                  if old.get(key) != new.get(key) and not any(key == i or key.startswith(i + ".") for i in ignored))


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` override to a nested dict in place (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: {part} is not a section")
    node[parts[-1]] = _yaml_load(raw) if raw.strip() != "" else ""


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of `cls`, updated by the YAML file at `path`, then by `overrides` (key=value), and
    validated (`validate_config`)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            loaded = _yaml_load(f)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        cfg = from_dict(cls, data)
        validate_config(cfg)
        return cfg
    except ConfigError as e:
        source = f"{path}" if path is not None else "defaults"
        raise ConfigError(f"{source}: {e}") from None


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config (atomically) so that a run can be reproduced from its folder."""
    save_text(path, dump_config(cfg))


def _shortcut_dest(option: str) -> str:
    return "shortcut_" + option.lstrip("-").replace("-", "_")


def parse_cli(cls: type[T], description: str, argv: Sequence[str] | None = None,
              shortcuts: dict[str, str] | None = None,
              flags: dict[str, str] | None = None) -> tuple[T, argparse.Namespace]:
    """The shared command line of our scripts: --config FILE, --set key=value ..., --dry-run.

    `shortcuts` maps extra options to config keys ({"--out": "synthetic.out_dir"}): `--out DIR` is
    the same as `--set synthetic.out_dir=DIR`, applied after the --set overrides. `flags` adds
    on/off options that are not config ({"--resume": "help"}), read from the returned namespace.

    Returns the resolved, validated config and the parsed arguments. A config error exits with
    status 2 and the message. With --dry-run the resolved config is printed and the process exits,
    so that a user can see what a run would use (and is refused what a run would be refused).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML config file (keys not given keep their defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key, e.g. --set render.image_size=128 (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    shortcuts = shortcuts or {}
    for option, key in shortcuts.items():
        parser.add_argument(option, dest=_shortcut_dest(option), metavar="VALUE", help=f"same as --set {key}=VALUE")
    for option, help_text in (flags or {}).items():
        parser.add_argument(option, action="store_true", help=help_text)
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for option, key in shortcuts.items():
        value = getattr(args, _shortcut_dest(option))
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")  # quoted, so that a path stays a string
    try:
        cfg = load_config(cls, args.config, overrides)
    except ConfigError as e:
        parser.error(str(e))
    if args.dry_run:
        sys.stdout.write(dump_config(cfg))  # the command's output, not a log message
        raise SystemExit(0)
    return cfg, args
