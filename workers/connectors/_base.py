"""The contract every connector implements, so the worker runtime treats them alike.

A connector module defines one :class:`Connector` subclass with:

- ``name`` (the topic suffix, e.g. ``"slack"``) and ``operations``: operation name →
  :class:`Operation` (input JSON Schema, description);
- ``async execute(call: ConnectorCall) -> dict`` which performs one operation against
  the vendor API at ``call.base_url`` with ``call.credentials`` and returns the
  vendor's JSON response (or the useful part of it) as the command's output;
- optionally (``finds_done = True``) ``async find_done(call, doubt) -> dict | None``,
  which looks in the vendor API for the effect of an earlier attempt of the same call
  (same ``idempotency_key``) so that the runtime does not repeat it.

It raises ``core.errors.RetryableError`` / ``PermanentError`` with an
``schemas.ErrorCode`` (see :func:`classify_http`) and never puts a credential value in
an error message. OAuth connectors raise :class:`CredentialsExpired` on 401 so the
runtime refreshes the token once and retries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import aiohttp

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode

__all__ = [
    "CallHeld",
    "Connector",
    "ConnectorCall",
    "CredentialsExpired",
    "Doubt",
    "Operation",
    "classify_http",
    "held_call",
    "maybe",
    "output_schema",
    "parse_retry_after",
]


@dataclass(frozen=True, slots=True)
class Operation:
    description: str
    input_schema: Mapping[str, Any]
    # What a call does to the app, for MCP clients (tool annotations): whether it only
    # reads, and whether it may destroy or overwrite (None: it depends on the arguments).
    read_only: bool = False
    destructive: bool | None = None
    # The shape of a successful call's output (the Result's ``output``, an MCP tool's
    # ``outputSchema``): every output the operation returns, found again included, fits it.
    output_schema: Mapping[str, Any] | None = None


def output_schema(properties: Mapping[str, Any], *required: str) -> dict[str, Any]:
    """An operation's output schema: an object with these properties (more may follow)."""
    return {"type": "object", "properties": dict(properties), "required": list(required)}


def maybe(kind: str, description: str) -> dict[str, Any]:
    """A field the vendor's reply sets, null when a reply lacked it."""
    return {"type": [kind, "null"], "description": description}


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


@dataclass(frozen=True, slots=True)
class Doubt:
    """An earlier attempt of a call may have taken effect upstream (see ``Connector.find_done``)."""

    since: float  # Unix time before which no attempt was made (the command's submission)
    settled_at: float  # Unix time by which every doubtful attempt had been sent


class CredentialsExpired(PermanentError):
    """The API refused the access token (401): refresh once, then retry."""

    def __init__(self, message: str = "access token rejected by the API") -> None:
        super().__init__(ErrorCode.CREDENTIALS_INVALID, message, http_status=401)


class CallHeld(RetryableError):
    """A request stopped just before it was written: the worker's event loop had stalled
    and the group has not yet confirmed it still owns its work (``workers._stall_guard``).
    Nothing reached the upstream, so nothing is in doubt; the command runs here once the
    hold is lifted, or is left to its partition's new owner."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.UPSTREAM_UNAVAILABLE, "request held after an event-loop stall; not sent")


def held_call(exc: BaseException) -> CallHeld | None:
    """The :class:`CallHeld` behind ``exc``: itself, or the cause aiohttp's body writer
    wrapped in a ``ClientConnectionError`` (the hook there runs in a task of its own)."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, CallHeld):
            return candidate
    return None


class Connector:
    name: ClassVar[str]
    operations: ClassVar[Mapping[str, Operation]]
    # True when the credentials are OAuth tokens the runtime can refresh.
    oauth: ClassVar[bool] = False
    # An OAuth connector's token endpoint takes JSON rather than a form (see oauth.refresh).
    token_request_json: ClassVar[bool] = False
    # The vendor's API root; the runtime passes Settings.connector_base_url instead when set.
    default_base_url: ClassVar[str] = ""
    # True when the upstream API deduplicates on our idempotency key, so a redelivered
    # command cannot repeat its side effect. False: a retry after an ambiguous failure
    # (timeout, crash after the call) may act twice.
    upstream_idempotency: ClassVar[bool] = False
    # True when find_done can look upstream for an earlier attempt's effect.
    finds_done: ClassVar[bool] = False
    # True when tenants choose the hosts: host names then reach public addresses only
    # (and the networks of Settings.http_private_networks), see _addresses.py.
    public_addresses_only: ClassVar[bool] = False
    # Field sets the stored credentials must hold one of in full, each field a non-empty
    # string (what execute reads); checked when credentials are written. Empty: any.
    credential_shapes: ClassVar[tuple[frozenset[str], ...]] = ()
    # Fields of those sets that only locate the API, needless with a configured base URL.
    credential_locators: ClassVar[frozenset[str]] = frozenset()

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        raise NotImplementedError

    def check_wait(self, doubt: Doubt) -> float:
        """Seconds :meth:`find_done` will wait before its upstream can answer ``doubt``
        (an index that trails writes); the runtime's time bound on the check adds them."""
        return 0.0

    async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
        """The output of an earlier attempt of ``call`` that took effect, or None when the
        upstream shows none. Asked before a call is made again after an attempt whose
        effect is unknown; raises as ``execute`` does when the upstream cannot be read."""
        return None


def classify_http(status: int, *, retry_after: str | None, what: str) -> Exception:
    """Turn a failed upstream HTTP status into our error with the retry decision."""
    delay = parse_retry_after(retry_after)
    if status == 401:
        return CredentialsExpired(f"{what}: 401 unauthorized")
    if status == 429:
        return RetryableError(
            ErrorCode.UPSTREAM_RATE_LIMITED,
            f"{what}: 429 rate limited",
            retry_after=delay,
            http_status=429,
        )
    if status == 408:
        return RetryableError(
            ErrorCode.UPSTREAM_TIMEOUT,
            f"{what}: 408 request timeout",
            retry_after=delay,
            http_status=408,
        )
    if status >= 500:
        return RetryableError(
            ErrorCode.UPSTREAM_UNAVAILABLE,
            f"{what}: {status} server error",
            retry_after=delay,
            http_status=status,
        )
    if status == 403:
        return PermanentError(
            ErrorCode.CREDENTIALS_INVALID, f"{what}: 403 forbidden", http_status=403
        )
    return PermanentError(
        ErrorCode.UPSTREAM_REJECTED, f"{what}: {status} rejected", http_status=status
    )


# The longest Retry-After taken from an upstream, in seconds.
MAX_RETRY_AFTER = 86_400.0
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date (RFC 9110),
    at most a day (a larger one, or ``inf``, must not overflow a deadline's arithmetic)."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):  # delta-seconds = 1*DIGIT (a decimal part tolerated)
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(MAX_RETRY_AFTER, max(0.0, (when - (now or datetime.now(UTC))).total_seconds()))
