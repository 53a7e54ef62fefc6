"""Typed readers for settings that come from the environment (12-factor).

Every secret can also be given as a file: ``NAME_FILE=/run/secrets/name`` is read when
``NAME`` is not set, which is how Docker and Kubernetes secrets arrive.

An empty value counts as unset: compose files pass ``NAME: ${NAME:-}`` through, and an unset
variable there must mean "the default", not "empty".
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T", int, float)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def get_str(name: str, default: str = "") -> str:
    """Return ``name`` from the environment, or the contents of ``name_FILE``, or ``default``."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path} cannot be read: {exc}") from exc
    return default


def get_bool(name: str, default: bool) -> bool:
    raw = get_str(name, "1" if default else "0").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _get_parsed(name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
    raw = get_str(name, str(default)).strip()
    try:
        return parse(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be {expected}, got {raw!r}") from exc


def get_int(name: str, default: int) -> int:
    return _get_parsed(name, default, int, "an integer")


def get_float(name: str, default: float) -> float:
    return _get_parsed(name, default, float, "a number")


def get_list(name: str, default: str = "") -> list[str]:
    """A comma-separated list; blanks are dropped."""
    return [item.strip() for item in get_str(name, default).split(",") if item.strip()]
