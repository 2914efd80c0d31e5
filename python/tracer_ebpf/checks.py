"""Checks of the values given to the Python API: wrong types raise
TypeError, bad values ValueError (ConfigError), before anything changes."""

from __future__ import annotations

import math
import os
from typing import Any, List, Optional

from .errors import ConfigError, UnknownEventError

MAX_NAME = 256  # longer event names are rejected without looking for close ones
MAX_NAMES = 4096


def _items(name: str, value: Any, what: str) -> List[Any]:
    """`value` as a list, whatever iterable it is; a TypeError naming
    `what` ("a string or an iterable of strings") if it is not iterable."""
    try:
        return list(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}") from None


def str_list(name: str, value: Any) -> List[str]:
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be a string or an iterable of strings, not {type(value).__name__}")
    items = _items(name, [value] if isinstance(value, str) else value, "a string or an iterable of strings")
    for v in items:
        if not isinstance(v, str):
            raise TypeError(f"{name} must contain strings, not {type(v).__name__} ({v!r:.60})")
        if not v.strip():
            raise ConfigError(f"{name} contains an empty name")
    return list(dict.fromkeys(items))  # without repeats, in order


def path_list(name: str, value: Any) -> List[str]:
    """Paths given as str or os.PathLike, one or an iterable of them; what
    they name is checked by the tracer (CgroupError)."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    elif isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be a path or an iterable of paths, not {type(value).__name__}")
    out = []
    for v in _items(name, value, "a path or an iterable of paths"):
        if not isinstance(v, (str, os.PathLike)):
            raise TypeError(f"{name} must contain paths (str or os.PathLike), not {type(v).__name__} ({v!r:.60})")
        p = os.fspath(v)
        if not isinstance(p, str):
            raise TypeError(f"{name} must contain str paths, not {type(p).__name__} ({p!r:.60})")
        out.append(p)
    return out


def event_names(value: Any) -> List[str]:
    names = str_list("events", value)
    if len(names) > MAX_NAMES:
        raise ConfigError(f"at most {MAX_NAMES} event names or wildcards, got {len(names)}")
    for n in names:
        if len(n) > MAX_NAME:
            raise UnknownEventError(f"unknown event {n[:40]!r}... ({len(n)} characters); see list_events()")
    return names


def int_list(name: str, value: Any, lo: int, hi: int) -> List[int]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be an int or an iterable of ints, not {type(value).__name__}")
    single = isinstance(value, int) and not isinstance(value, bool)
    items = _items(name, [value] if single else value, "an int or an iterable of ints")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must contain ints, not {type(v).__name__} ({v!r:.60})")
        if not lo <= v <= hi:
            raise ConfigError(f"{name}: {v} is out of range ({lo} to {hi})")
    return items


def size(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be from {lo} to {hi}, got {value}")
    return value


def opt_size(name: str, value: Any, lo: int, hi: int) -> Optional[int]:
    return None if value is None else size(name, value, lo, hi)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, got {value}")
    return min(float(value), 1e9)


def duration(name: str, value: Any) -> float:
    """A length of time that must end (collect, settle): not infinite."""
    v = seconds(name, value)
    if not math.isfinite(value) or value > 1e9:
        raise ValueError(f"{name} must be a finite number of seconds up to 1e9, got {value}")
    return v
