"""JSON-RPC framing for the MCP endpoint: parsing one POST body, errors, responses.

Only one message per POST: JSON-RPC batches were removed from MCP in 2025-06-18, and
the stateless revision never had them, so a JSON array is an invalid request. (2025-03-26
had them; its clients are served, but a batch from one is refused the same way: the
SDKs that speak it never send one.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from mcp_types import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
)
from mcp_types.jsonrpc import (
    HEADER_MISMATCH,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from pydantic import ValidationError

from schemas import json_depth_exceeds, lost_integer_digits, nested_too_deep

__all__ = [
    "FORBIDDEN",
    "Incoming",
    "RATE_LIMITED",
    "RpcError",
    "UNAUTHORIZED",
    "TASK_STILL_WORKING",
    "UNAVAILABLE",
    "error_response",
    "parse_message",
    "reply",
    "reply_result",
]

# Implementation-defined codes (the -32000..-32019 band; -32000/-32001 are taken by
# the SDK's client-side codes). The HTTP status carries the same meaning.
UNAUTHORIZED = -32010
FORBIDDEN = -32011
RATE_LIMITED = -32012
UNAVAILABLE = -32013
# tasks/result waited as long as a request may and the task is still working: ask again.
TASK_STILL_WORKING = -32014

# Nesting of a whole JSON-RPC body: tool arguments may nest 16 levels (schemas._limits),
# plus the envelope, params and _meta levels around them.
MAX_BODY_DEPTH = 24

# HTTP status of a JSON-RPC error on the stateless revision (2026-07-28 transport
# rules; the same table the SDK's server uses). Handshake-era dispatch errors ride 200.
MODERN_STATUS: dict[int, int] = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_REQUIRED_CLIENT_CAPABILITY: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}


class RpcError(Exception):
    """A JSON-RPC error answer; ``status`` is the HTTP status when it must not be 200."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        data: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Incoming:
    """One decoded POST body: a request (``id`` set) or a notification/response (no answer)."""

    raw: dict[str, Any]
    request: JSONRPCRequest | None
    # Why a well-formed request's content cannot be taken (its answer is an error with
    # the request's own id, like a method's, not an HTTP refusal with a null id).
    refused: str | None = None

    @property
    def is_request(self) -> bool:
        return self.request is not None



def parse_message(body: bytes) -> Incoming:
    """Decode one JSON-RPC message from a POST body.

    A request whose content nests deeper than allowed or holds an integer outside 64
    bits (it would lose digits) is returned with ``refused`` set: a model writes those
    arguments, and an answer without the request's id ends an SDK client's session.

    Raises:
        RpcError: -32700 for invalid JSON, -32600 for a batch, a non-object, a malformed
            envelope, or a notification or response too deep or with too large an
            integer (HTTP 400).
    """
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if nested_too_deep(exc):  # valid JSON, perhaps, but too deep to read its id
            raise RpcError(
                PARSE_ERROR, f"Parse error: JSON nests deeper than {MAX_BODY_DEPTH} levels", status=400
            ) from exc
        raise RpcError(PARSE_ERROR, "Parse error: body is not valid JSON", status=400) from exc
    if isinstance(decoded, list):
        raise RpcError(
            INVALID_REQUEST,
            "Batches are not supported: send one JSON-RPC message per POST",
            status=400,
        )
    if not isinstance(decoded, dict):
        raise RpcError(INVALID_REQUEST, "Body must be one JSON-RPC object", status=400)
    refused = None
    if json_depth_exceeds(decoded, MAX_BODY_DEPTH):
        refused = f"JSON nests deeper than {MAX_BODY_DEPTH} levels"
    elif lost_integer_digits(body, decoded):
        refused = "An integer is outside 64 bits and would lose digits: send it as a string"
    # JSON-RPC 2.0 section 4.1: key presence, not which model validates, decides the kind,
    # so a request with a malformed id is answered with an error, not a silent 202.
    if "id" in decoded and "method" in decoded:
        try:
            return Incoming(decoded, JSONRPCRequest.model_validate(decoded), refused)
        except ValidationError as exc:
            raise RpcError(
                INVALID_REQUEST, "Invalid JSON-RPC request envelope", status=400
            ) from exc
    if refused is not None:
        raise RpcError(INVALID_REQUEST, refused, status=400)
    try:
        if "method" in decoded:
            JSONRPCNotification.model_validate(decoded)
        elif "error" in decoded:
            JSONRPCError.model_validate(decoded)
        else:
            JSONRPCResponse.model_validate(decoded)
    except ValidationError as exc:
        raise RpcError(INVALID_REQUEST, "Invalid JSON-RPC message envelope", status=400) from exc
    return Incoming(decoded, None)


def _body_bytes(message: JSONRPCResponse | JSONRPCError) -> bytes:
    body = message.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(message, JSONRPCError) and message.id is None:
        # JSON-RPC requires "id": null when the request id could not be read.
        body["id"] = None
    return orjson.dumps(body)


def reply(
    message: JSONRPCResponse | JSONRPCError,
    *,
    status: int = 200,
    sse: bool = False,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """One JSON-RPC answer, as ``application/json`` or as a one-event SSE stream."""
    return _respond(_body_bytes(message), status=status, sse=sse, headers=headers)


def reply_result(
    request_id: RequestId,
    result: dict[str, Any],
    *,
    sse: bool = False,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The success answer to a request whose id and result this server already checked.

    The same bytes as ``reply(JSONRPCResponse(...))`` without building and dumping a
    model around a result the dispatcher serialized through ``mcp-types`` already.
    """
    body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})
    return _respond(body, status=200, sse=sse, headers=headers)


def _respond(
    data: bytes, *, status: int, sse: bool, headers: dict[str, str] | None
) -> web.Response:
    if sse:
        return web.Response(
            status=status,
            body=b"event: message\ndata: " + data + b"\n\n",
            content_type="text/event-stream",
            # no-store as every other answer: a tenant's data is kept by no cache.
            headers={"Cache-Control": "no-store", **(headers or {})},
        )
    return web.Response(status=status, body=data, content_type="application/json", headers=headers)


def error_response(
    error: RpcError,
    request_id: RequestId | None,
    *,
    default_status: int = 200,
    sse: bool = False,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Render an :class:`RpcError` for ``request_id`` (None when it could not be read)."""
    message = JSONRPCError(
        jsonrpc="2.0",
        id=request_id,
        error=ErrorData(code=error.code, message=error.message, data=error.data),
    )
    status = error.status if error.status is not None else default_status
    # Errors with a 4xx status are always JSON: SSE is only for a successful exchange.
    return reply(
        message,
        status=status,
        sse=sse and status < 300,
        headers={**error.headers, **(headers or {})},
    )
