"""A tenant's credentials taken out of what a command reports: its error message and
its output (an upstream may echo them back, as an endpoint of the HTTP connector that
returns the request's headers does).

Connectors must not put credentials in messages or outputs; this is defence in depth,
run before anything reaches Kafka or a log line. An output is searched for each secret
as written and in the forms an upstream may write it in (JSON-escaped, with ``\\/``,
URL-encoded), and the end of a truncated text for the start of one (an echo cut inside
the secret).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import orjson

from core.vault import TenantSecret
from schemas import ErrorInfo

__all__ = ["scrub_error", "scrub_output"]

_MASK = "***"
# Keys whose values are credentials (not, say, a Jira site or a header name).
_SECRET_KEY = re.compile(r"token|secret|password|passwd|key|credential|header_value|auth", re.I)
# The shortest credential masked (shorter strings would mask ordinary text), and the
# shortest start of a secret cut off at the end of a truncated text that is masked.
_MIN_SECRET = 4
_MIN_TAIL = 4


def scrub_error(info: ErrorInfo, secret: TenantSecret | None) -> ErrorInfo:
    """``info`` whose message names no string of the tenant's credentials."""
    if secret is None:
        return info
    message = info.message
    for value in sorted(_secret_strings(secret.data, set()), key=len, reverse=True):
        message = message.replace(value, _MASK)
    return info if message == info.message else info.model_copy(update={"message": message})


def scrub_output(output: dict[str, Any], secret: TenantSecret | None) -> dict[str, Any]:
    """``output`` without the tenant's credentials, in any form it may hold them."""
    if secret is None:
        return output
    values = {form for value in _secret_values(secret.data, set()) for form in _written_forms(value)}
    if not values:
        return output
    strings: list[str] = []
    _strings_of(output, strings)
    found = sorted((v for v in values if any(v in s for s in strings)), key=len, reverse=True)
    if found:
        output = _replace_in(output, found)
    text = output.get("text")
    if output.get("truncated") is True and isinstance(text, str):
        cut = _cut_tail(text, values)
        if cut != text:
            output = {**output, "text": cut}
    return output


def _secret_strings(data: Any, out: set[str]) -> set[str]:
    if isinstance(data, str):
        if len(data) >= _MIN_SECRET:
            out.add(data)
    elif isinstance(data, Mapping):
        for value in data.values():
            _secret_strings(value, out)
    elif isinstance(data, list | tuple):
        for value in data:
            _secret_strings(value, out)
    return out


def _secret_values(data: Any, out: set[str], secret_key: bool = False) -> set[str]:
    if isinstance(data, str):
        if secret_key and len(data) >= _MIN_SECRET:
            out.add(data)
            scheme, _, rest = data.partition(" ")  # "Bearer <token>": the token alone too
            if len(rest) >= _MIN_SECRET:
                out.add(rest)
    elif isinstance(data, Mapping):
        for key, value in data.items():
            _secret_values(value, out, secret_key or bool(_SECRET_KEY.search(str(key))))
    elif isinstance(data, list | tuple):
        for value in data:
            _secret_values(value, out, secret_key)
    return out


def _written_forms(value: str) -> set[str]:
    """``value`` as written, JSON-escaped (also with ``\\/``) and URL-encoded."""
    escaped = orjson.dumps(value).decode()[1:-1]
    return {value, escaped, escaped.replace("/", "\\/"), quote(value, safe=""), quote_plus(value)}


def _cut_tail(text: str, values: set[str]) -> str:
    """``text`` whose end, when it is the start of a secret, is masked."""
    for value in sorted(values, key=len, reverse=True):
        for length in range(len(value) - 1, _MIN_TAIL - 1, -1):
            if text.endswith(value[:length]):
                return text[:-length] + _MASK
    return text


def _replace_in(data: Any, values: list[str]) -> Any:
    if isinstance(data, str):
        for value in values:
            data = data.replace(value, _MASK)
        return data
    if isinstance(data, dict):
        return {_replace_in(key, values): _replace_in(value, values) for key, value in data.items()}
    if isinstance(data, list):
        return [_replace_in(value, values) for value in data]
    return data


def _strings_of(data: Any, out: list[str]) -> None:
    """Every string of ``data``, keys included (a secret can hide in either)."""
    if isinstance(data, str):
        out.append(data)
    elif isinstance(data, dict):
        for key, value in data.items():
            out.append(str(key))
            _strings_of(value, out)
    elif isinstance(data, list):
        for value in data:
            _strings_of(value, out)
