"""Bounds on free-form JSON that comes from outside (tool arguments, outputs)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import orjson

__all__ = ["MAX_ARGUMENTS_BYTES", "MAX_JSON_DEPTH", "check_json_bounds", "json_depth_exceeds"]

MAX_JSON_DEPTH = 16
MAX_ARGUMENTS_BYTES = 256 * 1024


def _depth(value: Any, limit: int) -> int:
    # Iterative so that a hostile, deeply nested value cannot blow the Python stack.
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (stops early; never recursive)."""
    return _depth(value, limit) > limit


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
