"""Typed configuration: pydantic models read from / written to YAML, with one-line validation errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from raywave.errors import ConfigError
from raywave.io import write_text_atomic

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, values are validated on assignment too, and float
    fields refuse inf and nan (no config value here means anything infinite; a field that does must opt in
    with `Field(allow_inf_nan=True)`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


def format_validation_error(exc: ValidationError, what: str = "config") -> str:
    """Turn pydantic's multi-line report into one line: `config error: <field>: <problem> (got <value>)`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter; check the spelling (see `--help` or the README for valid names)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif err["type"] == "finite_number":
            msg = "must be a finite number"
        if not loc:  # a check across fields: its message names them, the input is the whole config
            parts.append(msg)
            continue
        got = err.get("input")
        got_txt = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {_short(got)})"
        parts.append(f"{loc}: {msg}{got_txt}")
    return " ".join((f"{what} error: " + "; ".join(parts)).split())  # one line, whatever the messages hold


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build(model: type[M], data: dict[str, Any], what: str = "config") -> M:
    """Validate `data` into `model`, raising ConfigError with one clear line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, what)) from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping (UTF-8); a missing, unreadable, non-UTF-8 or malformed file is a ConfigError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory; give a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of option: value")
    return data


def load_config(
    model: type[M],
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    what: str = "config",
) -> M:
    """THE config loader of every command: YAML file (optional), then `overrides` (dotted keys such as
    `params.gA`; None values are skipped, so unset CLI options keep the file's value), validated together.
    Every problem is a one-line ConfigError naming the file; nothing is written here."""
    data = load_yaml(path) if path else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, key, value)
    return build(model, data, what=f"{what} {str(path)!r}" if path else what)


def load_model(model: type[M], path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> M:
    """A YAML config file into `model` (see load_config)."""
    return load_config(model, path, overrides)


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c = value` in a nested dict, creating the intermediate mappings."""
    node = data
    *heads, last = key.split(".")
    for h in heads:
        node = node.setdefault(h, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key!r}: {h!r} is not a mapping")
    node[last] = value


def dump_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)


def save_model(model: BaseModel, path: str | os.PathLike) -> None:
    write_text_atomic(path, dump_yaml(model))
