"""Type-checked frozen dataclasses from YAML: one level of `base:`, `a.b=c` overrides, errors that name the key.

Generic: nothing here knows the project's sections; `pipeline.config` defines them and `load_config` puts the
pieces together:

    raw = read_with_base(Path("configs/demo.yaml"))   # child's sections merged over its base's
    apply_override(raw, "train.iterations=50")        # value parsed as YAML
    cfg = build(Config, raw, where="", renamed=RENAMED_KEYS)   # unknown keys, types, ranges, choices checked

A field's range and choices come from its `metadata` (`{"range": (lo, hi)}`, `{"choices": (...)}`). A key that is
not a field but is in `renamed` (the project's table of old names) gets that table's message instead of the
generic unknown-key error, in YAML files and overrides alike (both reach `build` as one mapping).
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key (and file) and says why."""


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: e.g. timestamp 2024-02-30
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def read_with_base(path: Path) -> dict:
    """The YAML mapping at `path`, merged section by section over the one `base:` file it may name."""
    child = _read_yaml(path)
    base_name = child.pop("base", None)
    if base_name is None:
        return child
    if not isinstance(base_name, str) or not base_name or "\0" in base_name:
        raise ConfigError(f"{path}: key 'base' must be a file path string, got {base_name!r}")
    base_path = (path.parent / base_name).resolve()
    base = _read_yaml(base_path)
    if "base" in base:
        raise ConfigError(f"{base_path}: a base config may not have a base of its own (one level only)")
    merged = dict(base)
    for section, values in child.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def apply_override(raw: dict, item: str) -> None:
    """Set `raw[a][b] = c` in place from the override `a.b=c`, `c` parsed as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.iterations=100")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:  # absent, or an empty section (`train:` in YAML)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""  # `key=` sets an empty string
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from None


def build(cls: type, raw: Any, where: str, renamed: Mapping[str, str] | None = None) -> Any:
    """Build dataclass `cls` from a dict, checking keys, types, ranges and choices; `where` is the key path.

    `renamed` maps an old "section.key" to what became of it ("renamed to ..."); such a key raises that message."""
    renamed = renamed or {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        what = f"config key '{where}'" if where else "config"
        raise ConfigError(f"{what}: expected a mapping (a section of keys), got {type(raw).__name__} {raw!r:.60}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if not isinstance(key, str):
            raise ConfigError(f"config key {f'{where}.' if where else ''}{key!r}: keys must be names (strings), "
                              f"got {type(key).__name__}")
    unknown = sorted(set(raw) - set(fields))
    for name in unknown:
        key = f"{where}.{name}" if where else name
        if key in renamed:
            raise ConfigError(f"config key '{key}': {renamed[key]}")
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config key '{key}' (known here: {', '.join(sorted(fields))})")
    values = {}
    for name, value in raw.items():
        path = f"{where}.{name}" if where else name
        values[name] = _check_value(value, hints[name], fields[name].metadata, path, renamed)
    return cls(**values)


def _check_value(value: Any, hint: Any, meta: Any, path: str, renamed: Mapping[str, str]) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path, renamed)
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{path}': expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            items = tuple(_scalar(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        else:
            if len(value) != len(args):
                raise ConfigError(f"config key '{path}': expected {len(args)} values, got {len(value)}")
            items = tuple(_scalar(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
        return items
    value = _scalar(value, hint, path)
    lo, hi = meta.get("range", (None, None))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"config key '{path}': {value!r} is out of range [{lo}, {hi if hi is not None else 'inf'}]")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"config key '{path}': {value!r} is not one of {', '.join(choices)}")
    return value


_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _scalar(value: Any, hint: Any, path: str) -> Any:
    if isinstance(hint, types.UnionType):
        raise ConfigError(f"config key '{path}': union types are not supported")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads `1e-3` as a string; it is meant as a number
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if isinstance(value, float) or abs(value) < 2**1000 else math.inf
            if not math.isfinite(number):
                raise ConfigError(f"config key '{path}': {value!r} is not a finite number")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
    type_name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"config key '{path}': expected {type_name}, got {type(value).__name__} {value!r}")
