"""Streamable HTTP transport for MCP on aiohttp: one endpoint, POST (and OPTIONS).

Routing by revision: ``MCP-Protocol-Version: 2026-07-28`` selects the stateless path
(per-request ``_meta``, header/body checks, no session); everything else is the
initialize-handshake path (2025-03-26, 2025-06-18, 2025-11-25) with a signed, stateless
session id.
Responses are ``application/json`` (a one-event SSE stream when the client accepts only
``text/event-stream``). The server offers no server-initiated stream, so GET is 405, as
the spec allows. DELETE of a session is 405 too: a session id is signed, not stored, so
it cannot be ended before it expires (answering 204 would say it was).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PROTOCOL_VERSION_META_KEY,
    UnsupportedProtocolVersionErrorData,
)
from mcp_types.jsonrpc import HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION
from yarl import URL

from core.errors import KafkaUnavailable
from ingress.auth import TENANT_HEADERS, bearer_token, refuse_repeated_headers
from ingress.contracts import Identity, Services
from ingress.errors import BadRequest, IngressError

from ._dispatch import HANDSHAKE_VERSIONS, MODERN_VERSIONS, Dispatcher
from ._headers import decode_header_value
from ._in_flight import CALL_IN_SESSION, CLIENT_GONE, request_key
from ._jsonrpc import (
    FORBIDDEN,
    MODERN_STATUS,
    Incoming,
    RpcError,
    error_response,
    parse_message,
    reply_result,
)
from ._session import SessionSigner
from ._tools import rpc_from_ingress_error

__all__ = ["McpEndpoint"]

logger = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
METHOD_HEADER = "Mcp-Method"
NAME_HEADER = "Mcp-Name"
SPACE_HEADER = "X-Switchyard-Space"
TENANT_HEADER = "X-Switchyard-Tenant"
_ROUTING_HEADERS = (VERSION_HEADER, METHOD_HEADER, NAME_HEADER)
# What /mcp answers (RFC 9110: a 405's Allow lists the methods the resource supports).
_ALLOW = "POST, OPTIONS"
# What a browser client may read of an answer: the session, when to retry (429, 503) and
# the 401's challenge.
_EXPOSED = f"{SESSION_HEADER}, Retry-After, WWW-Authenticate"
_CORS_HEADERS = {
    # GET and DELETE too: a browser client that sends them then reads our 405, not a
    # CORS failure.
    "Access-Control-Allow-Methods": "POST, GET, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": ", ".join(
        (
            "Authorization",
            "Content-Type",
            "Accept",
            SESSION_HEADER,
            *_ROUTING_HEADERS,
            SPACE_HEADER,
            "Last-Event-ID",
        )
    ),
    "Access-Control-Expose-Headers": _EXPOSED,
    "Access-Control-Max-Age": "600",
}


def _refused(params: str) -> bool:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip()) == 0
            except ValueError:
                return False
    return False


def _accepts(request: web.Request) -> tuple[bool, bool]:
    """(json, sse) acceptable, with wildcards; a missing Accept accepts anything."""
    header = request.headers.get("Accept")
    if not header:
        return True, True
    return _accepted_types(header)


@functools.lru_cache(maxsize=256)
def _accepted_types(header: str) -> tuple[bool, bool]:
    # Clients send the same few Accept headers on every request: parse each once. A type
    # with q=0 is one the client refuses (RFC 9110 12.5.1).
    types = {
        media.strip().lower()
        for media, _, params in (part.partition(";") for part in header.split(","))
        if not _refused(params)
    }
    wildcard = "*/*" in types
    return (
        wildcard or "application/json" in types or "application/*" in types,
        wildcard or "text/event-stream" in types or "text/*" in types,
    )


def _unsupported(requested: str) -> RpcError:
    # Echoed back only as printable ASCII (raw header bytes arrive as surrogates,
    # which no JSON encoder takes), and short.
    shown = requested[:64] if requested.isascii() and requested.isprintable() else "(invalid)"
    data = UnsupportedProtocolVersionErrorData(
        supported=[*HANDSHAKE_VERSIONS, *MODERN_VERSIONS], requested=shown
    ).model_dump(mode="json")
    return RpcError(
        UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", data=data, status=400
    )


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


# Refusals of a caller (another tenant claimed, too many key checks at once, a service
# unavailable) that a session of a handshake revision answers with HTTP 200.
_REFUSED_BEFORE_IT_RUNS = frozenset({403, 429, 503})

class McpEndpoint:
    """The aiohttp handlers of ``/mcp`` and ``/mcp/{space_id}``."""

    def __init__(
        self,
        services: Services,
        dispatcher: Dispatcher,
        signer: SessionSigner,
        *,
        max_body_bytes: int,
    ) -> None:
        self._services = services
        self._dispatcher = dispatcher
        self._signer = signer
        self._max_body = max_body_bytes
        self._stopping = False

    async def shutting_down(self, app: web.Application) -> None:
        """The server stops (its ``on_shutdown``): the waits it cuts next are no client's
        disconnect, and cancel no command."""
        self._stopping = True

    # -- edge checks -------------------------------------------------------------------

    def _cross_origin(self, request: web.Request) -> str | None:
        """The Origin to echo in CORS headers, None for same-host or no Origin.

        Raises:
            RpcError: 403 for an Origin neither allowed nor the endpoint's own loopback
                host (DNS-rebinding protection the spec requires).
        """
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        allowed = self._services.allowed_origins
        if origin.rstrip("/") in allowed or "*" in allowed:
            return origin
        try:
            url = URL(origin)
            host, _, port = (
                request.host.rpartition(":") if ":" in request.host else (request.host, "", "")
            )
            own_port = int(port) if port.isdigit() else (443 if request.scheme == "https" else 80)
            # Host headers bracket IPv6 literals ("[::1]:8080"); URL.host does not.
            host = host.strip("[]")
            # Only a loopback host counts as "our own" here: a rebound name (an attacker's
            # domain resolving to this server) has Origin and Host agree as well. Other
            # hosts are named by SWITCHYARD_PUBLIC_URL or the allowed origins.
            if url.host == host and url.port == own_port and host in _LOOPBACK:
                return None
        except ValueError:
            pass
        raise RpcError(FORBIDDEN, "Forbidden: Origin not allowed", status=403)

    async def _identity(self, request: web.Request) -> Identity:
        """Authenticate the caller for the requested workspace.

        Raises:
            RpcError: 401 (with WWW-Authenticate), 403 or 400 from the edge.
        """
        try:
            refuse_repeated_headers(request.headers)
        except BadRequest as exc:
            raise RpcError(INVALID_REQUEST, exc.message, status=400) from None
        path_space = request.match_info.get("space_id")
        header_space = request.headers.get(SPACE_HEADER) or None  # empty: not given, as on REST
        if path_space and header_space and path_space != header_space:
            raise RpcError(
                INVALID_REQUEST, f"{SPACE_HEADER} disagrees with the URL's workspace", status=400
            )
        bearer = bearer_token(request.headers)
        try:
            auth = self._services.auth
            # Prefer the authenticator's async variant: verifying a key (scrypt) on a
            # cache miss takes tens of milliseconds, which must not block the loop.
            authenticate_async = getattr(auth, "authenticate_async", None)
            if authenticate_async is not None:
                identity = await authenticate_async(bearer, path_space or header_space)
            else:
                identity = auth.authenticate(bearer, path_space or header_space)
            # The same tenant headers the REST API refuses (ingress.auth.TENANT_HEADERS).
            for header in TENANT_HEADERS:
                claimed = request.headers.get(header)
                if claimed is not None and claimed.strip() != identity.tenant_id:
                    raise RpcError(
                        FORBIDDEN,
                        f"{header} names another tenant than the API key's",
                        status=403,
                    )
        except (IngressError, KafkaUnavailable) as exc:
            raise rpc_from_ingress_error(exc) from exc
        return identity

    async def _body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self._max_body:
            raise RpcError(INVALID_REQUEST, f"Body over {self._max_body} bytes", status=413)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_body:
                raise RpcError(INVALID_REQUEST, f"Body over {self._max_body} bytes", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    def _session(self, request: web.Request, identity: Identity) -> str:
        """The negotiated version of the request's session.

        Raises:
            RpcError: 400 without a session id, 404 for one this deployment did not give
                this caller (forged, expired, another tenant's), 400 for a version header
                that disagrees with the session.
        """
        token = request.headers.get(SESSION_HEADER)
        if not token:
            raise RpcError(
                INVALID_REQUEST,
                f"Bad Request: missing {SESSION_HEADER}; send initialize first",
                status=400,
            )
        claims = self._signer.verify(token, identity.tenant_id, identity.space_id)
        if claims is None:
            raise RpcError(INVALID_REQUEST, "Session not found", status=404)
        header = request.headers.get(VERSION_HEADER)
        if header is not None and header != claims.protocol_version:
            if header not in HANDSHAKE_VERSIONS:
                raise _unsupported(header)
            raise RpcError(
                INVALID_REQUEST, f"{VERSION_HEADER} differs from the session's version", status=400
            )
        return claims.protocol_version

    @staticmethod
    def _modern_envelope(request: web.Request, raw: dict[str, Any]) -> str:
        """Check a 2026-07-28 request's ``_meta`` envelope and routing headers.

        Raises:
            RpcError: -32602 for a missing envelope, -32020 for headers that disagree
                with the body, -32022 for an unsupported version (all HTTP 400).
        """
        params = raw.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if not isinstance(meta, dict) or any(
            key not in meta for key in (PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY)
        ):
            raise RpcError(
                INVALID_PARAMS,
                f"params._meta must carry {PROTOCOL_VERSION_META_KEY!r} and {CLIENT_CAPABILITIES_META_KEY!r}",
                status=400,
            )
        for name in _ROUTING_HEADERS:
            if len(request.headers.getall(name, [])) > 1:
                raise RpcError(HEADER_MISMATCH, f"{name} header appears more than once", status=400)
        version = meta[PROTOCOL_VERSION_META_KEY]
        if request.headers.get(VERSION_HEADER) != version:
            raise RpcError(
                HEADER_MISMATCH, f"{VERSION_HEADER} header does not match _meta", status=400
            )
        if request.headers.get(METHOD_HEADER) != raw["method"]:
            raise RpcError(
                HEADER_MISMATCH, f"{METHOD_HEADER} header does not match the method", status=400
            )
        if (
            raw["method"] == "tools/call"
            and isinstance(params, dict)
            and params.get("name") is not None
        ):
            if decode_header_value(request.headers.get(NAME_HEADER)) != params["name"]:
                raise RpcError(
                    HEADER_MISMATCH, f"{NAME_HEADER} header does not match params.name", status=400
                )
        if not isinstance(version, str) or version not in MODERN_VERSIONS:
            raise _unsupported(str(version))
        return version

    # -- handlers ----------------------------------------------------------------------

    async def post(self, request: web.Request) -> web.StreamResponse:
        request_id: Any = None
        cors: dict[str, str] = {}
        json_ok, sse_ok = _accepts(request)
        sse = sse_ok and not json_ok
        modern = request.headers.get(VERSION_HEADER) in MODERN_VERSIONS
        try:
            origin = self._cross_origin(request)
            if origin is not None:
                cors = {
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Expose-Headers": _EXPOSED,
                    "Vary": "Origin",
                }
            if not (json_ok or sse_ok):
                raise RpcError(
                    INVALID_REQUEST,
                    "Not Acceptable: accept application/json or text/event-stream",
                    status=406,
                )
            content_type = request.headers.get("Content-Type")
            if (
                content_type is not None
                and content_type.split(";")[0].strip().lower() != "application/json"
            ):
                raise RpcError(
                    INVALID_REQUEST, "Unsupported Media Type: send application/json", status=415
                )
            # Read first, so that a refusal of the caller answers the request's own id; a
            # body that is no message is answered after the caller is known, as before.
            read: Incoming | RpcError
            try:
                read = parse_message(await self._body(request))
            except RpcError as exc:
                read = exc
            if isinstance(read, Incoming) and read.request is not None:
                request_id = read.request.id
            try:
                identity = await self._identity(request)
            except RpcError as exc:
                in_session = SESSION_HEADER in request.headers
                if not (modern or in_session) or exc.status not in _REFUSED_BEFORE_IT_RUNS:
                    raise
                # Inside a session, or on the stateless revision, as a method's error
                # below: with 200 (401 stays 401, the challenge a client answers with
                # credentials).
                raise RpcError(exc.code, exc.message, data=exc.data, headers=exc.headers) from None
            if isinstance(read, RpcError):
                raise read
            incoming = read
            if incoming.refused is not None:
                # Answered with the request's id; on the handshake revisions with 200, as
                # a method's error (see below).
                raise RpcError(INVALID_PARAMS, incoming.refused, status=400 if modern else None)
            method = incoming.raw.get("method")
            if incoming.request is not None and method == "initialize" and not modern:
                version, result = self._dispatcher.initialize(incoming.request.params)
                headers = {
                    SESSION_HEADER: self._signer.issue(
                        identity.tenant_id, identity.space_id, version
                    ),
                    **cors,
                }
                return reply_result(request_id, result, sse=sse, headers=headers)
            header_version = request.headers.get(VERSION_HEADER)
            if modern:
                version = (
                    self._modern_envelope(request, incoming.raw)
                    if incoming.request is not None
                    else ""
                )
            elif header_version is not None and header_version not in HANDSHAKE_VERSIONS:
                raise _unsupported(header_version)
            elif (
                header_version is None
                and SESSION_HEADER not in request.headers
                and (declared := _declared_version(incoming.raw)) is not None
                and declared not in HANDSHAKE_VERSIONS  # those are told to initialize
            ):
                # A stateless client that left out the header: a header mismatch (or a
                # version we lack), not a missing session, which would send it back to a
                # handshake.
                if declared not in MODERN_VERSIONS:
                    raise _unsupported(str(declared))
                raise RpcError(
                    HEADER_MISMATCH, f"{VERSION_HEADER} header is missing; _meta declares it", status=400
                )
            else:
                version = self._session(request, identity)
            session_id = None if modern else request.headers.get(SESSION_HEADER)
            if incoming.request is None:
                # Notifications and responses: accepted, nothing to answer. The stateless
                # revision defines none a server must act on (closing a stream cancels).
                if session_id is not None and isinstance(incoming.raw, dict):
                    await self._dispatcher.notified(identity, session_id, incoming.raw)
                return web.Response(status=202, headers=cors)
            call = CALL_IN_SESSION.set(None if session_id is None else (session_id, request_key(request_id)))
            gone = CLIENT_GONE.set(self._disconnected(request) if modern else None)
            try:
                result = await self._dispatcher.handle(
                    identity, version, incoming.request.method, incoming.request.params
                )
            except RpcError as exc:
                if exc.status is None:
                    raise
                # A method's error is its answer, sent with 200 like the SDKs' own servers
                # (on the stateless revision with the status its transport rules give the
                # code: 400 for bad params, 404 for an unknown method): the Python SDK
                # 1.x client raises on a non-2xx status and never completes the call
                # (python-sdk #3091); the TypeScript clients read a JSON-RPC error only
                # from a 200 or (2.x, stateless) a 400 answer, and turn any other status
                # into a transport error that hides its code and data.
                raise RpcError(exc.code, exc.message, data=exc.data, headers=exc.headers) from None
            finally:
                CALL_IN_SESSION.reset(call)
                CLIENT_GONE.reset(gone)
            return reply_result(request_id, result, sse=sse, headers=cors)
        except RpcError as exc:
            # A body's parse error is raised from ``read``: dropped, or this frame (on its
            # traceback) and the error would hold each other, and the request, for the GC.
            read = None
            default = MODERN_STATUS.get(exc.code, 200) if modern else 200
            return error_response(exc, request_id, default_status=default, sse=sse, headers=cors)
        except Exception:
            # The request boundary: an unexpected failure answers a JSON-RPC error with no
            # detail (never a stack trace) and is logged here with its traceback.
            logger.exception("MCP request failed")
            error = RpcError(INTERNAL_ERROR, "Internal error", status=500)
            return error_response(error, request_id, headers=cors)

    def _disconnected(self, request: web.Request) -> Callable[[], bool]:
        """Whether ``request``'s client has closed its connection (asked once its handler
        is cancelled: the server runs with ``handler_cancellation``); never while the
        server itself shuts down, which closes the connections it cuts."""

        def gone() -> bool:
            transport = request.transport
            return not self._stopping and (transport is None or transport.is_closing())

        return gone

    async def get(self, request: web.Request) -> web.StreamResponse:
        # No server-initiated stream is offered (nothing is ever pushed unprompted), which
        # the spec answers with 405.
        return web.Response(status=405, headers={"Allow": _ALLOW})

    async def delete(self, request: web.Request) -> web.StreamResponse:
        # Session ids are signed, not stored: one cannot be ended before it expires, and
        # answering 204 would tell the client it was. The spec's answer for a server that
        # does not let clients end sessions is 405; both SDKs' clients accept it.
        try:
            self._cross_origin(request)
        except RpcError as exc:
            return error_response(exc, None)
        return web.Response(status=405, headers={"Allow": _ALLOW})

    async def options(self, request: web.Request) -> web.StreamResponse:
        """CORS preflight for browser-based clients on allowed origins."""
        try:
            origin = self._cross_origin(request)
        except RpcError as exc:
            return error_response(exc, None)
        if origin is None:
            return web.Response(status=204, headers={"Allow": _ALLOW})
        return web.Response(
            status=204,
            headers={"Access-Control-Allow-Origin": origin, "Vary": "Origin", **_CORS_HEADERS},
        )


def _declared_version(raw: dict[str, Any] | None) -> Any:
    """The protocol version a message's ``params._meta`` declares (the stateless
    revision's envelope), or None."""
    params = raw.get("params") if isinstance(raw, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta.get(PROTOCOL_VERSION_META_KEY) if isinstance(meta, dict) else None
