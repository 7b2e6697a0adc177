"""Configuration loading: a TOML file plus environment overrides, validated by pydantic.

Environment overrides use ``<PREFIX>__SECTION__KEY=value`` (double underscores separate
levels), for example ``FARMIQ_AGENT__MQTT__PORT=8883``. Values are parsed as TOML scalars
when they look like one (numbers, booleans, quoted strings, arrays), else taken as strings.
Errors name the offending key, e.g. ``mqtt.port: Input should be a valid integer``.

Why not pydantic-settings (measured, 2026-12, pydantic-settings 2.16 on this project's venv):
importing it after the agent's own modules adds 110-150 ms (``python -X importtime``) to
agent start-up, against a start-to-ready budget of 1.5 s, for the ~40 lines below. It would
also change what users see: an override of an unknown top-level key
(``FARMIQ_AGENT__MQQT_PORT=1``) is silently ignored there instead of refused by name, and
``FARMIQ_AGENT__NAME='"x"'`` keeps its quotes instead of being read as a TOML string.
``tests/foundation/test_config_and_cli.py`` pins both behaviours.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


def _parse_scalar(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    marker = prefix + "__"
    for name, raw in environ.items():
        if not name.startswith(marker):
            continue
        path = [p.lower() for p in name[len(marker) :].split("__") if p]
        if not path:
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another override")
        node[path[-1]] = _parse_scalar(raw)
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    model: type[T],
    path: str | Path | None = None,
    *,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Read ``path`` (if given), apply env overrides then explicit overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {p}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    data = _merge(data, _env_overrides(env_prefix, os.environ if environ is None else environ))
    if overrides:
        data = _merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            problems.append(f"{key}: {err['msg']}")
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}: " + "; ".join(problems)) from None


def dump_toml(data: Mapping[str, Any]) -> str:
    """Write a small nested mapping as TOML (enough for the configs we generate)."""

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        s = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'

    lines: list[str] = []

    def emit(table: Mapping[str, Any], prefix: str) -> None:
        subtables = []
        for k, v in table.items():
            if v is None:
                continue
            if isinstance(v, Mapping):
                subtables.append((k, v))
            else:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in subtables:
            name = f"{prefix}.{k}" if prefix else k
            lines.append("")
            lines.append(f"[{name}]")
            emit(v, name)

    emit(data, "")
    return "\n".join(lines).lstrip() + "\n"
