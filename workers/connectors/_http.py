"""HTTP plumbing shared by every connector: one request, its span, its errors.

Connectors build the vendor request; :func:`send` performs it with the call's
timeout, a CLIENT span (W3C ``traceparent`` forwarded upstream), the idempotency key
and a bounded body read, and translates aiohttp's exceptions into ours with
``raise ... from exc``. Messages name the operation and the host, never a header
value, a body or a URL path (webhook URLs often embed their own secret).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from opentelemetry.trace import SpanKind, StatusCode
from yarl import URL

from core.errors import PermanentError, RetryableError
from core.telemetry import extract, inject, span
from schemas import ErrorCode

from ._addresses import AddressNotAllowed
from ._base import ConnectorCall, classify_http, held_call

__all__ = ["MAX_BODY_BYTES", "Reply", "raise_for_status", "request", "send", "upstream_session"]

# Vendor replies we act on are small; webhook replies are returned to the caller and
# travel in a Result on Kafka, so the body kept is bounded.
MAX_BODY_BYTES = 256 * 1024
USER_AGENT = "switchyard-connector/0.1"
_TRACE_KEYS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class Reply:
    """An upstream response, already read (up to ``MAX_BODY_BYTES``)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    truncated: bool

    def json(self, what: str) -> Any:
        """The body as JSON.

        Raises:
            RetryableError: UPSTREAM_UNAVAILABLE when the body is not JSON; a proxy or
                an outage page answered instead of the API, so nothing was done.
        """
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise RetryableError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"{what}: {self.status} response is not JSON",
                http_status=self.status,
            ) from exc


def upstream_session(
    concurrency: int,
    *,
    resolver: aiohttp.abc.AbstractResolver | None = None,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
) -> aiohttp.ClientSession:
    """The HTTP session a worker pool calls every tenant's upstream with.

    No cookie jar: the session is shared by all tenants, and a cookie one tenant's
    receiver set (or a load balancer's, for one tenant's account) must not reach another
    tenant's call. Redirects are not followed either (``request``).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, resolver=resolver),
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
        trace_configs=trace_configs,
    )


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    # Bounded: each read returns at least one byte until EOF and size grows to limit.
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    more = await response.content.read(1)
    return b"".join(chunks), bool(more)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    *,
    what: str,
    request_timeout: float,
    headers: Mapping[str, str],
    json_body: Any = None,
    data: Any = None,
    limit: int = MAX_BODY_BYTES,
) -> Reply:
    """One HTTP exchange with our error translation; any status is returned as a Reply.

    Raises:
        RetryableError: UPSTREAM_TIMEOUT when no full response arrived within
            ``request_timeout``; UPSTREAM_UNAVAILABLE on connection and protocol errors.
        PermanentError: INVALID_ARGUMENTS when aiohttp refuses the URL or a header;
            HOST_NOT_ALLOWED when the session's resolver (``_addresses``) left no address
            to connect to.
    """
    body = orjson.dumps(json_body) if json_body is not None else data
    all_headers = dict(headers)
    if json_body is not None:
        all_headers["Content-Type"] = "application/json"
    answered = False
    try:
        async with session.request(
            method,
            url,
            headers=all_headers,
            data=body,
            timeout=aiohttp.ClientTimeout(total=request_timeout),
            # A redirect could leave the vendor or the allow-list; callers see the 3xx.
            allow_redirects=False,
        ) as response:
            answered = True
            payload, truncated = await _read_bounded(response, limit)
            return Reply(response.status, response.headers, payload, truncated)
    except TimeoutError as exc:  # aiohttp's ServerTimeoutError is a TimeoutError too
        raise RetryableError(
            ErrorCode.UPSTREAM_TIMEOUT, f"{what}: no response within {request_timeout:g}s"
        ) from exc
    except aiohttp.InvalidURL as exc:
        raise PermanentError(ErrorCode.INVALID_ARGUMENTS, f"{what}: invalid URL") from exc
    except aiohttp.ClientError as exc:
        if isinstance(exc, aiohttp.ClientConnectorDNSError) and isinstance(exc.os_error, AddressNotAllowed):
            raise PermanentError(  # no connection was made
                ErrorCode.HOST_NOT_ALLOWED, f"{what}: the host resolves to no public address"
            ) from None
        if (held := held_call(exc)) is not None:  # held by the pool's hook in the body writer
            raise held from None
        raise RetryableError(
            ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: {type(exc).__name__} talking to upstream"
        ) from exc
    except OSError as exc:
        raise RetryableError(
            ErrorCode.UPSTREAM_UNAVAILABLE, f"{what}: {type(exc).__name__} talking to upstream"
        ) from exc
    except ValueError as exc:
        # Last: aiohttp's errors (a certificate refused, an invalid URL) are ValueErrors
        # too, and have their clauses above.
        if answered:
            raise
        # aiohttp refused to write the request (a control character in a header, say):
        # nothing was sent, and the same arguments would be refused again.
        raise PermanentError(
            ErrorCode.INVALID_ARGUMENTS, f"{what}: the request could not be written ({exc.__class__.__name__})"
        ) from None


async def send(
    call: ConnectorCall,
    method: str,
    url: str | URL,
    *,
    what: str,
    headers: Mapping[str, str],
    json_body: Any = None,
    limit: int = MAX_BODY_BYTES,
) -> Reply:
    """Perform the call's upstream request inside a CLIENT span.

    Adds ``User-Agent``, ``Idempotency-Key`` and the W3C trace context of the CLIENT
    span (a child of ``call.trace_headers`` when those carry a ``traceparent``).

    Raises:
        RetryableError: see :func:`request`.
        PermanentError: see :func:`request`.
    """
    target = url if isinstance(url, URL) else URL(url)
    parent = None
    if any(key in call.trace_headers for key in _TRACE_KEYS):
        parent = extract({k: v for k, v in call.trace_headers.items() if k in _TRACE_KEYS})
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "server.address": target.host or "",
        "switchyard.connector.operation": what,
    }
    if target.port is not None:
        attributes["server.port"] = target.port
    with span(method, kind=SpanKind.CLIENT, attributes=attributes, context=parent) as current:
        carrier: list[tuple[str, bytes]] = []
        inject(carrier)
        full = {
            "User-Agent": USER_AGENT,
            "Idempotency-Key": call.idempotency_key,
            **{key: value.decode() for key, value in carrier},
            **headers,
        }
        try:
            reply = await request(
                call.session,
                method,
                target,
                what=what,
                request_timeout=call.timeout,
                headers=full,
                json_body=json_body,
                limit=limit,
            )
        except asyncio.CancelledError:
            current.set_attribute("switchyard.cancelled", True)
            raise
        current.set_attribute("http.response.status_code", reply.status)
        if reply.status >= 500:
            current.set_status(StatusCode.ERROR)
        return reply


def raise_for_status(reply: Reply, what: str) -> None:
    """Raise our classified error for a non-2xx reply.

    Raises:
        CredentialsExpired: on 401.
        RetryableError: on 408, 429 and 5xx (with ``Retry-After`` when sent).
        PermanentError: on other 4xx (and 3xx, which no vendor API here answers).
    """
    if 200 <= reply.status < 300:
        return
    raise classify_http(reply.status, retry_after=reply.headers.get("Retry-After"), what=what)
