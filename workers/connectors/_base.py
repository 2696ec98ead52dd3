"""The contract every connector implements, so the worker runtime treats them alike.

A connector module defines one :class:`Connector` subclass with:

- ``name`` (the topic suffix, e.g. ``"slack"``) and ``operations``: operation name →
  :class:`Operation` (input JSON Schema, description);
- ``async execute(call: ConnectorCall) -> dict`` which performs one operation against
  the vendor API at ``call.base_url`` with ``call.credentials`` and returns the
  vendor's JSON response (or the useful part of it) as the command's output.

It raises ``core.errors.RetryableError`` / ``PermanentError`` with an
``schemas.ErrorCode`` (see :func:`classify_http`) and never puts a credential value in
an error message. OAuth connectors raise :class:`CredentialsExpired` on 401 so the
runtime refreshes the token once and retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode

__all__ = [
    "Connector",
    "ConnectorCall",
    "CredentialsExpired",
    "Operation",
    "classify_http",
]


@dataclass(frozen=True, slots=True)
class Operation:
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ConnectorCall:
    """Everything one execution needs. ``credentials`` never leaves this object."""

    tenant_id: str
    operation: str
    arguments: Mapping[str, Any]
    credentials: Mapping[str, Any] = field(repr=False)
    base_url: str
    idempotency_key: str
    session: aiohttp.ClientSession = field(repr=False)
    timeout: float = 10.0
    allowed_hosts: tuple[str, ...] = ()
    # W3C trace context headers for the upstream request.
    trace_headers: Mapping[str, str] = field(default_factory=dict)


class CredentialsExpired(PermanentError):
    """The API refused the access token (401): refresh once, then retry."""

    def __init__(self, message: str = "access token rejected by the API") -> None:
        super().__init__(ErrorCode.CREDENTIALS_INVALID, message, http_status=401)


class Connector:
    name: ClassVar[str]
    operations: ClassVar[Mapping[str, Operation]]
    # True when the credentials are OAuth tokens the runtime can refresh.
    oauth: ClassVar[bool] = False

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        raise NotImplementedError


def classify_http(status: int, *, retry_after: str | None, what: str) -> Exception:
    """Turn a failed upstream HTTP status into our error with the retry decision."""
    delay: float | None = None
    if retry_after:
        try:
            delay = max(0.0, float(retry_after))
        except ValueError:
            delay = None
    if status == 401:
        return CredentialsExpired(f"{what}: 401 unauthorized")
    if status == 429:
        return RetryableError(
            ErrorCode.UPSTREAM_RATE_LIMITED, f"{what}: 429 rate limited", retry_after=delay, http_status=429
        )
    if status >= 500:
        return RetryableError(
            ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: {status} server error", retry_after=delay, http_status=status
        )
    if status == 403:
        return PermanentError(ErrorCode.CREDENTIALS_INVALID, f"{what}: 403 forbidden", http_status=403)
    return PermanentError(ErrorCode.UPSTREAM_REJECTED, f"{what}: {status} rejected", http_status=status)
