"""The 2026-07-28 header value codec: non-token values travel as ``=?base64?...?=``."""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decode_header_value"]

_SENTINEL = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")


def decode_header_value(value: str | None) -> str | None:
    """The value a client mirrored into ``Mcp-Name`` (sentinel-wrapped or verbatim).

    A malformed sentinel decodes to None so it can never match a body value by accident.
    """
    if value is None:
        return None
    match = _SENTINEL.fullmatch(value)
    if match is None:
        return value
    payload = match.group("payload")
    try:
        decoded = base64.b64decode(payload, validate=True)
    except binascii.Error:
        return None
    # Only the canonical encoding is accepted: it is the only one a client emits.
    if base64.b64encode(decoded).decode("ascii") != payload:
        return None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None
