"""One source per config: command-line flags are derived from a job's frozen dataclass. No torch.

Each default is written once, in the dataclass; a field's help text lives in its metadata (`opt`). A
command builds its flags with `add_arguments(parser, Config)` (`--help` shows every default), and its
config with `from_args(Config, args)`: the dataclass defaults, then a `--config FILE` (JSON or TOML, such as
a run's own `config.json`), then the flags actually given, each overriding the one before.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from rtdgan.index.errors import UserError

try:  # Python 3.11+; 3.10 reads JSON config files only
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    tomllib = None  # type: ignore[assignment]

C = TypeVar("C")


class _Unset:
    """The default of every derived flag: tells "not given" apart from any real value."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
        flag: str | None = None, cli: bool = True, metavar: str | None = None) -> Any:
    """A dataclass field with its help text: `batch: int = opt(16, "images per step")`.

    `flag` renames the command-line flag (default: --field-name); `cli=False` keeps the field off the
    command line (set by the program, or by a config file only)."""
    meta = {"help": help, "flag": flag, "cli": cli, "metavar": metavar}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(T, True) for `T | None`, else (tp, False)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _parse_tuple(item: Any) -> Any:
    def parse(text: str) -> tuple:
        try:
            return tuple(item(part.strip()) for part in text.split(",") if part.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}") from e
    return parse


def _none_or(parse: Any) -> Any:
    def parse_or_none(text: str) -> Any:
        return None if text.lower() in ("none", "") else parse(text)
    return parse_or_none


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        return "required"
    if isinstance(value, tuple):
        value = ",".join(str(v) for v in value)
    return f"default: {value}"


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, config_file: bool = True) -> None:
    """One flag per field of the dataclass `cls` (type, choices and help from the field; default shown)."""
    hints = typing.get_type_hints(cls)
    if config_file:
        parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                            help="read the config from a JSON or TOML file (e.g. a run's config.json); "
                                 "flags given as well override it")
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if not meta.get("cli", True):
            continue
        tp, optional = _strip_optional(hints[field.name])
        flag = meta.get("flag") or "--" + field.name.replace("_", "-")
        help_text = f"{meta.get('help', '')} ({_default_text(field)})".strip()
        kwargs: dict[str, Any] = {"default": UNSET, "dest": field.name, "help": help_text.replace("%", "%%")}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(tp) is Literal:
            kwargs["choices"] = list(get_args(tp))
            kwargs["type"] = type(get_args(tp)[0])
        elif get_origin(tp) is tuple:
            kwargs["type"] = _parse_tuple(get_args(tp)[0])
            kwargs.setdefault("metavar", "A,B,...")
        else:
            kwargs["type"] = tp
        if optional and "type" in kwargs and "choices" not in kwargs:
            kwargs["type"] = _none_or(kwargs["type"])
        parser.add_argument(flag, **kwargs)


def load_config_file(path: Path) -> dict[str, Any]:
    """A JSON or TOML file of config values (a run's config.json reads back as it was written)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror or e}") from e
    is_toml = path.suffix.lower() == ".toml"
    if is_toml and tomllib is None:
        raise UserError(f"{path}: TOML config files need Python 3.11 or newer; use JSON")
    try:
        values = tomllib.loads(text) if is_toml else json.loads(text)
    except (json.JSONDecodeError, ValueError) as e:
        raise UserError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} ({e})") from e
    if not isinstance(values, dict):
        raise UserError(f"{path}: a config file holds one object of field: value pairs")
    return values


def _coerce(tp: Any, value: Any) -> Any:
    """A JSON/TOML value as the field's type (paths from strings, tuples from lists)."""
    tp, _ = _strip_optional(tp)
    if value is None:
        return None
    if tp is Path:
        return Path(value)
    if get_origin(tp) is tuple and isinstance(value, list | tuple):
        return tuple(_coerce(get_args(tp)[0], v) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def build(cls: type[C], values: dict[str, Any], *, source: str = "config") -> C:
    """cls(**values) with values coerced to the field types; UserError naming unknown or missing fields."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{source}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    missing = [f for f in dataclasses.fields(cls) if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        flags = ", ".join(f.metadata.get("flag") or "--" + f.name.replace("_", "-") for f in missing)
        raise UserError(f"missing {flags} (a flag, or a field of --config)")
    try:
        return cls(**{name: _coerce(hints[name], value) for name, value in values.items()})
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: {e}") from e


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` whose flags were actually given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, UNSET) is not UNSET}


def from_args(cls: type[C], args: argparse.Namespace, **overrides: Any) -> C:
    """The config: dataclass defaults < --config file < flags given < `overrides` (set by the program)."""
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None)
    if config_path is not None:
        values.update(load_config_file(config_path))
    values.update(given(args, cls))
    values.update(overrides)
    return build(cls, values, source=str(config_path or "flags"))


def job_config(cls: type[C], args: argparse.Namespace, command: str, **overrides: Any) -> C:
    """`from_args`, then the effective config printed as the job's one JSON line on stderr."""
    config = from_args(cls, args, **overrides)
    print_config(command, config)
    return config


def to_json_dict(config: object) -> dict[str, Any]:
    """A config as JSON-ready values (paths as strings, tuples as lists): what config.json holds."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)  # type: ignore[arg-type]
    return json.loads(json.dumps(config, default=str))


def print_config(command: str, config: object) -> None:
    """Print the effective config of a job as one JSON object on stderr (stdout stays for results)."""
    print(f"rtd {command}: config {json.dumps(to_json_dict(config))}", file=sys.stderr)
