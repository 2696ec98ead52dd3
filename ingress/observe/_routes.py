"""REST and live-stream routes of the per-tenant views, scoped by the caller's own key.

    GET /v1/observe/me                                   who the key is (tenant, admin)
    GET /v1/tenants/{tenant_id}/metrics                  rates, success, latency, timeline
    GET /v1/tenants/{tenant_id}/errors                   errors by code/connector, last failures
    GET /v1/tenants/{tenant_id}/commands?status=&connector=&limit=
    GET /v1/tenants/{tenant_id}/commands/{command_id}/trace
    GET /v1/admin/overview                               admin token only
    GET /v1/stream?view=tenant|admin[&tenant=]           live snapshots (text/event-stream)

A tenant key reads only its own tenant: any other ``tenant_id`` is a 403. The admin
token, or the read-only observer token (``Settings.observer_token``: the dashboard's
operator view without the power to change anything), reads every tenant. The stream is authenticated by the ``Authorization`` header like every
other route (the dashboard reads it with ``fetch()``, so the key never goes in a URL);
it ends after ``stream_lifetime`` seconds (below the edge request timeout) and the
client reconnects, which re-checks the key, so a revoked key stops streaming quickly.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from core.settings import Settings
from ingress._http import IDENTITY, LIMITS, json_response
from ingress.auth import authenticate, reads_everything
from ingress.contracts import Identity, Services
from ingress.errors import BadRequest, Forbidden, NotFound, RateLimited, ServiceUnavailable
from schemas.identifiers import SAFE_ID_PATTERN

from ._aggregator import ResultsAggregator
from ._lag import KafkaLagSource

__all__ = ["OBSERVER", "Observer", "add_observe_routes"]

_SAFE_ID = re.compile(SAFE_ID_PATTERN)
_COMMAND_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATUSES = {"succeeded", "failed", "rejected", "expired", "dead_lettered"}
ADMIN_IDENTITY = Identity(
    tenant_id="*", space_id="*", user_id="admin", role="admin", key_id="admin", is_admin=True
)


@dataclass(slots=True)
class Observer:
    """The observability parts of one ingress app, reachable as ``app[OBSERVER]``."""

    settings: Settings
    services: Services
    aggregator: ResultsAggregator
    lag: KafkaLagSource | None = None
    stream_interval: float = 2.0
    stream_lifetime: float = 25.0
    max_streams: int = 256
    # One tenant's keys may hold this many of a replica's streams (then 429), and the
    # last few are the admin token's: a tenant cannot take every dashboard's stream.
    max_streams_per_tenant: int = 16
    admin_reserved_streams: int = 8
    streams: int = field(default=0)
    tenant_streams: dict[str, int] = field(default_factory=dict)


OBSERVER = web.AppKey("switchyard_observer", Observer)


async def identify(request: web.Request) -> Identity:
    """The caller: the admin token, or a tenant API key through the ingress's authenticator.

    Raises:
        ingress.errors.Unauthorized: missing or invalid key.
        Forbidden / BadRequest: as :func:`ingress.auth.authenticate`.
    """
    observer = request.app[OBSERVER]
    if reads_everything(observer.settings, request.headers):
        return ADMIN_IDENTITY
    identity = await authenticate(observer.services.auth, request.headers)
    request[IDENTITY] = identity
    return identity


async def _scoped(request: web.Request) -> tuple[Observer, str, str | None]:
    """The observer, the tenant asked for, and the workspace a tenant key is confined to
    (its commands, failures and traces: the counts are the tenant's; the admin sees all)."""
    identity = await identify(request)
    tenant_id = request.match_info["tenant_id"]
    if not _SAFE_ID.fullmatch(tenant_id):
        raise BadRequest(f"tenant_id must match {SAFE_ID_PATTERN}")
    if not identity.is_admin and not hmac.compare_digest(identity.tenant_id, tenant_id):
        raise Forbidden("this API key may only read its own tenant")
    return request.app[OBSERVER], tenant_id, None if identity.is_admin else identity.space_id


async def me(request: web.Request) -> web.Response:
    identity = await identify(request)
    return json_response(
        {"tenant_id": None if identity.is_admin else identity.tenant_id,
         "space_id": None if identity.is_admin else identity.space_id,
         "is_admin": identity.is_admin},
        headers={"Cache-Control": "no-store"},
    )


async def tenant_metrics(request: web.Request) -> web.Response:
    observer, tenant_id, _ = await _scoped(request)
    return json_response(observer.aggregator.metrics(tenant_id))


async def tenant_errors(request: web.Request) -> web.Response:
    observer, tenant_id, space_id = await _scoped(request)
    return json_response(observer.aggregator.errors(tenant_id, space_id=space_id))


async def tenant_commands(request: web.Request) -> web.Response:
    observer, tenant_id, space_id = await _scoped(request)
    query = request.query
    status = query.get("status") or None
    if status is not None and status not in _STATUSES:
        raise BadRequest(f"status must be one of {sorted(_STATUSES)}")
    connector = query.get("connector") or None
    if connector is not None and not re.fullmatch(r"[a-z0-9_]{1,32}", connector):
        raise BadRequest("invalid connector")
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= 500:
        raise BadRequest("limit must be between 1 and 500")
    items = observer.aggregator.commands(
        tenant_id, status=status, connector=connector, space_id=space_id, limit=limit
    )
    return json_response({"tenant_id": tenant_id, "commands": items})


async def command_trace(request: web.Request) -> web.Response:
    observer, tenant_id, space_id = await _scoped(request)
    command_id = request.match_info["command_id"]
    if not _COMMAND_ID.match(command_id):
        raise BadRequest("invalid command id")
    found = observer.aggregator.trace(tenant_id, command_id, space_id=space_id)
    if found is None:
        raise NotFound("no recent command with that id for this tenant")
    return json_response(found)


async def _overview(observer: Observer) -> dict[str, Any]:
    data = observer.aggregator.overview()
    data["pools"] = await observer.lag.pools() if observer.lag is not None else None
    return data


async def admin_overview(request: web.Request) -> web.Response:
    identity = await identify(request)
    if not identity.is_admin:
        raise Forbidden("the operator overview needs the admin token")
    return json_response(await _overview(request.app[OBSERVER]))


def _tenant_snapshot(observer: Observer, tenant_id: str, space_id: str | None) -> dict[str, Any]:
    aggregator = observer.aggregator
    return {
        "view": "tenant",
        "tenant_id": tenant_id,
        "metrics": aggregator.metrics(tenant_id),
        "errors": aggregator.errors(tenant_id, space_id=space_id),
        "commands": aggregator.commands(tenant_id, space_id=space_id, limit=25),
        "at": time.time(),
    }


async def stream(request: web.Request) -> web.StreamResponse:
    identity = await identify(request)
    observer = request.app[OBSERVER]
    view = request.query.get("view", "tenant")
    if view == "admin":
        if not identity.is_admin:
            raise Forbidden("the operator view needs the admin token")
        tenant_id = ""
    elif view == "tenant":
        tenant_id = request.query.get("tenant") or identity.tenant_id
        if identity.is_admin and tenant_id == "*":
            raise BadRequest("the admin token names a tenant with ?tenant=")
        if not _SAFE_ID.fullmatch(tenant_id):
            raise BadRequest("invalid tenant")
        if not identity.is_admin and tenant_id != identity.tenant_id:
            raise Forbidden("this API key may only read its own tenant")
    else:
        raise BadRequest("view must be tenant or admin")
    holder = "" if identity.is_admin else identity.tenant_id
    if holder and observer.tenant_streams.get(holder, 0) >= observer.max_streams_per_tenant:
        raise RateLimited(f"this tenant has {observer.max_streams_per_tenant} live streams on this replica", 5.0)
    if observer.streams >= observer.max_streams - (0 if identity.is_admin else observer.admin_reserved_streams):
        raise ServiceUnavailable("too many live streams on this replica", 5.0)
    limits = request.app.get(LIMITS)
    # The edge timeout cancels any handler after request_timeout: end the stream first.
    lifetime = observer.stream_lifetime
    if limits is not None:
        lifetime = max(1.0, min(lifetime, limits.request_timeout - 5.0))
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    observer.streams += 1
    observer.tenant_streams[holder] = observer.tenant_streams.get(holder, 0) + 1
    try:
        await response.prepare(request)
        deadline = time.monotonic() + lifetime
        while True:
            if view == "admin":
                payload = {"view": "admin", "overview": await _overview(observer), "at": time.time()}
            else:
                payload = _tenant_snapshot(observer, tenant_id, None if identity.is_admin else identity.space_id)
            await response.write(b"event: snapshot\ndata: " + orjson.dumps(payload) + b"\n\n")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(observer.stream_interval, remaining))  # the stream's cadence
        await response.write(b"event: reconnect\ndata: {}\n\n")
    finally:
        observer.streams -= 1
        if (left := observer.tenant_streams[holder] - 1) > 0:
            observer.tenant_streams[holder] = left
        else:
            del observer.tenant_streams[holder]
    return response


def add_observe_routes(app: web.Application) -> None:
    """Register the routes (expects ``app[OBSERVER]``)."""
    base = "/v1/tenants/{tenant_id}"
    app.router.add_get("/v1/observe/me", me)
    app.router.add_get(f"{base}/metrics", tenant_metrics)
    app.router.add_get(f"{base}/errors", tenant_errors)
    app.router.add_get(f"{base}/commands", tenant_commands)
    app.router.add_get(f"{base}/commands/{{command_id}}/trace", command_trace)
    app.router.add_get("/v1/admin/overview", admin_overview)
    app.router.add_get("/v1/stream", stream)
