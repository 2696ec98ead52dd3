"""Bounds on free-form JSON that comes from outside (tool arguments, outputs)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

import orjson

__all__ = [
    "MAX_ARGUMENTS_BYTES",
    "MAX_JSON_DEPTH",
    "check_json_bounds",
    "json_depth_exceeds",
    "lost_integer_digits",
]

MAX_JSON_DEPTH = 16
MAX_ARGUMENTS_BYTES = 256 * 1024


def _depth(value: Any, limit: int) -> int:
    # Level by level over containers only: scalars (most values) are never queued, and a
    # hostile, deeply nested value cannot blow the Python stack. Runs on every command
    # in every process, so it avoids a tuple per element.
    if not isinstance(value, dict | list):
        return 0
    level = 1
    frontier: list[Any] = [value]
    while level <= limit:
        deeper: list[Any] = []
        for item in frontier:
            children: Iterable[Any] = item.values() if isinstance(item, dict) else item
            deeper.extend(child for child in children if isinstance(child, dict | list))
        if not deeper:
            return level
        frontier = deeper
        level += 1
    return level


def nested_too_deep(exc: orjson.JSONDecodeError) -> bool:
    """Whether orjson gave up on nesting (over 1,024 levels), not on malformed JSON."""
    return str(exc).startswith("depth limit exceeded")


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (stops early; never recursive)."""
    return _depth(value, limit) > limit


# An integer literal of 19 digits or more after a JSON value separator: perhaps past
# 64 bits, which orjson reads as a float, dropping digits. (Longer than a double's range
# it cannot have been parsed at all.)
_LONG_INTEGER = re.compile(rb"[\[:,]\s*(-?[0-9]{19,400})(?![0-9.eE])")
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def lost_integer_digits(raw: bytes, value: Any) -> bool:
    """Whether ``value`` (``raw`` as orjson read it) holds an integer of ``raw`` outside
    64 bits as a float: a value changed in silence.

    Quick for the usual body (one regular-expression scan). A long digit run that is no
    such number (inside a string, or in range) is told apart by the float it would have
    become: one exactly equal must be in ``value``.
    """
    lost = set()
    for match in _LONG_INTEGER.finditer(raw):
        number = int(match.group(1))
        if number < _INT64_MIN or number > _UINT64_MAX:
            lost.add(float(number))
    return bool(lost) and _holds_float_in(value, lost)


def _holds_float_in(value: Any, wanted: set[float]) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if item in wanted:
                return True
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


T = TypeVar("T")


def check_json_bounds(value: T, *, max_bytes: int = MAX_ARGUMENTS_BYTES) -> T:
    """Return ``value`` unchanged when it is within the depth and size bounds.

    Raises:
        ValueError: when the value nests deeper than ``MAX_JSON_DEPTH`` or its JSON
            encoding exceeds ``max_bytes``.
    """
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:
        raise ValueError(f"value is not JSON: {exc}") from exc
    if size > max_bytes:
        raise ValueError(f"JSON is {size} bytes, more than the {max_bytes} allowed")
    return value
