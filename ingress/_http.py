"""HTTP plumbing shared by every route: the error middleware, JSON bodies, JSON answers."""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from opentelemetry import context as otel_context

from core.errors import KafkaUnavailable, VaultError
from core.logs import bind
from core.telemetry import extract
from schemas import json_depth_exceeds, lost_integer_digits, nested_too_deep

from .contracts import Identity
from .errors import (
    BadRequest,
    IngressError,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)

__all__ = [
    "COMMAND_ID", "IDENTITY", "Limits", "LIMITS", "REQUEST_METRICS", "error_middleware", "json_response", "read_json", "time_left",
]

logger = logging.getLogger("ingress.http")

# An envelope ({"items": [{"arguments": ...}]}) adds a few levels above the arguments,
# which the Command model bounds to schemas._limits.MAX_JSON_DEPTH on their own.
MAX_BODY_DEPTH = 20


@dataclass(frozen=True, slots=True)
class Limits:
    """Edge limits of one app."""

    max_body_bytes: int = 2 * 1024 * 1024
    request_timeout: float = 40.0


LIMITS = web.AppKey("switchyard_http_limits", Limits)
# The process's metrics, when the app counts its requests (core.metrics.Metrics).
REQUEST_METRICS = web.AppKey("switchyard_request_metrics", Any)

# When the edge cuts the request being handled (time.monotonic()); None outside one.
_REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("switchyard_request_deadline", default=None)


# How long before the edge cuts a request a handler stops waiting, to answer in time.
ANSWER_MARGIN = 1.0


def time_left(margin: float = 0.0) -> float | None:
    """Seconds the request being handled has left before the edge cuts it, less
    ``margin`` (never below 0); None outside a request."""
    deadline = _REQUEST_DEADLINE.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic() - margin)
# Set by handlers so the request's log line carries the tenant and the command id.
IDENTITY = web.RequestKey("switchyard_identity", Identity)
COMMAND_ID = web.RequestKey("switchyard_command_id", str)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(exc: IngressError) -> web.Response:
    return json_response(
        {"error": {"code": exc.code, "message": exc.message, **exc.details}},
        status=exc.status,
        headers=exc.headers(),
    )



_LOST_DIGITS = "an integer in the body is outside 64 bits and would lose digits; send it as a string"


async def read_json(request: web.Request) -> Any:
    """The request body parsed as JSON, within the size and depth limits.

    Raises:
        PayloadTooLarge: the body is over the cap (checked before parsing).
        BadRequest: empty, malformed, or too deeply nested JSON, or an integer outside
            64 bits (it would be changed, not kept).
        UnsupportedMediaType: the body is not declared as JSON.
    """
    raw = await request.read()  # aiohttp stops at client_max_size (→ 413)
    if not raw:
        raise BadRequest("a JSON body is required")
    media = request.content_type
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType("send the body as JSON (Content-Type: application/json)")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if nested_too_deep(exc):
            raise BadRequest(f"the JSON body nests deeper than {MAX_BODY_DEPTH} levels") from None
        raise BadRequest("the body is not valid JSON") from None
    if json_depth_exceeds(body, MAX_BODY_DEPTH):
        raise BadRequest(f"the JSON body nests deeper than {MAX_BODY_DEPTH} levels")
    if lost_integer_digits(raw, body):
        raise BadRequest(_LOST_DIGITS)
    return body


def _http_error(exc: web.HTTPException) -> IngressError:
    if exc.status == 413:
        return PayloadTooLarge("the request body is too large")
    error = IngressError(exc.reason or "error")
    error.status = exc.status
    error.code = (exc.reason or "error").lower().replace(" ", "_")
    return error


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Map every error to ``{"error": {"code", "message"}}``; bound time and body size.

    An unexpected exception is logged with its stack trace and answered 500 with a
    generic message: stack traces and secrets never reach a response body.
    """
    limits = request.app[LIMITS]
    started = time.monotonic()
    _REQUEST_DEADLINE.set(started + limits.request_timeout)
    # Most callers send no trace context: skip building a carrier for the propagator
    # then (without a traceparent it extracts the same empty context). The header
    # lookup is case-insensitive.
    headers = request.headers
    if "traceparent" in headers:
        token = otel_context.attach(extract({k.lower(): v for k, v in headers.items()}))
    else:
        token = otel_context.attach(otel_context.Context())
    status = 500
    try:
        if request.content_length is not None and request.content_length > limits.max_body_bytes:
            raise PayloadTooLarge(f"the body is over {limits.max_body_bytes} bytes")
        async with asyncio.timeout(limits.request_timeout):
            response = await handler(request)
        status = response.status
        return response
    except IngressError as exc:
        status = exc.status
        return error_response(exc)
    except KafkaUnavailable:
        status = 503
        return error_response(ServiceUnavailable("the message broker is unavailable", 2.0))
    except VaultError:
        status = 503
        return error_response(ServiceUnavailable("the credential store is unavailable", 2.0))
    except TimeoutError:
        status = 503
        return error_response(ServiceUnavailable("the request took too long", 1.0))
    except web.HTTPException as exc:
        if exc.status < 400:
            status = exc.status
            raise
        error = _http_error(exc)
        status = error.status
        response = error_response(error)
        for name in ("Allow",):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except asyncio.CancelledError:
        status = 499  # the client went away; nothing to answer
        raise
    except Exception:
        logger.exception("unexpected error in %s %s", request.method, request.path)
        return json_response(
            {"error": {"code": "internal", "message": "internal error"}}, status=500
        )
    finally:
        otel_context.detach(token)
        metrics = request.app.get(REQUEST_METRICS)
        if metrics is not None:
            metrics.http_request(_route_of(request), request.method, status, time.monotonic() - started)
        if logger.isEnabledFor(logging.INFO):
            _log_request(request, status, started)


def _route_of(request: web.Request) -> str:
    """The matched route's pattern (``/v1/commands/{command_id}``): a bounded label."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unmatched)"


def _log_request(request: web.Request, status: int, started: float) -> None:
    """The request's one log line, with the tenant and command id when known."""
    identity = request.get(IDENTITY)
    with bind(
        tenant_id=getattr(identity, "tenant_id", None),
        space_id=getattr(identity, "space_id", None),
        command_id=request.get(COMMAND_ID),
    ):
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        logger.info(
            "%s %s %d",
            request.method,
            request.path,
            status,
            extra={"fields": {"status": status, "ms": elapsed_ms}},
        )
