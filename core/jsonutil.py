"""orjson helpers for hot paths (stdlib json is banned outside tests)."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["dumps", "dumps_str", "loads", "open_objects"]


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)


def open_objects(schema: Any) -> Any:
    """A JSON Schema without any ``"additionalProperties": false``: what a reader
    validates with, so a field a later release adds does not fail it."""
    if isinstance(schema, dict):
        return {k: open_objects(v) for k, v in schema.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(schema, list):
        return [open_objects(v) for v in schema]
    return schema
