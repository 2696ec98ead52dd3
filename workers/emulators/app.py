"""One aiohttp app serving every vendor API the connectors call, plus admin endpoints.

Vendor paths (``connector_base_url`` = this app's base URL works for all connectors):

- ``POST /api/chat.postMessage`` (Slack; ``conversations.history``, ``.replies`` and ``.list``
  read back what was posted), ``POST /gmail/v1/users/me/messages/send`` (``GET
  .../messages`` and ``.../messages/{id}`` read the sent messages back),
  ``POST /v1/pages`` (Notion; ``POST /v1/databases/{id}/query``, or from Notion-Version
  2025-09-03 on ``/v1/data_sources/{id}/query``, finds the pages created
  in a database), ``POST /rest/api/3/issue`` (Jira; ``/rest/api/3/search/jql``
  finds them again),
  ``POST /repos/{owner}/{repo}/issues`` (GitHub; ``GET`` lists them), ``* /hooks/{path}`` (webhooks),
- ``POST /oauth/token``: RFC 6749 ``refresh_token`` grant for registered refresh tokens.

Admin (``/_emulator/...``): ``POST tokens`` register ``{connector, token, tenant, ...}``
(or ``{"tokens": [...]}``); ``GET calls?connector=&tenant=`` the call log (never a token);
``GET effects?connector=`` side effects per idempotency key; ``POST faults``
``{connector?, tenant?, kind: 400|403|404|429|500|503|latency|expire_token|lost_reply, count?,
retry_after?, latency_ms?}`` for the next ``count`` matching calls (``lost_reply``: the call
takes effect, then the connection is cut before the answer) (faults match on the tenant the
token resolves to; the token endpoint's connector name is ``oauth``); ``POST reset``
(``{"tokens": true}`` also forgets tokens); ``GET health``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from ._state import ACCESS_TOKEN_LIFETIME, EmulatorState
from ._vendors import VENDORS, Vendor, json_response

__all__ = ["STATE_KEY", "make_app"]

STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)
_SKIP = object()


def _entry(
    vendor: str, tenant: str | None, request: web.Request, status: int, summary: dict[str, Any]
) -> dict[str, Any]:
    # Deliberately no headers but these two: Authorization and custom credential
    # headers must never reach the call log. ``at`` (when answered) and the client's
    # ``port`` tell which connection, so which process, made a call.
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return {
        "connector": vendor,
        "tenant": tenant,
        "method": request.method,
        "path": request.path,
        "status": status,
        "idempotency_key": request.headers.get("Idempotency-Key"),
        "traceparent": request.headers.get("traceparent"),
        "summary": summary,
        "at": round(time.time(), 3),
        "port": peer[1] if isinstance(peer, tuple) and len(peer) > 1 else None,
    }


def _vendor_handler(vendor: Vendor) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        raw = await request.read()
        data: Any = None
        if raw:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = _SKIP
        token = vendor.token(request)
        tenant = state.tenant_for(vendor.name, token)
        expired = lost_reply = False
        fault = state.take_fault(vendor.name, tenant) if state.faults else None
        if fault is not None:
            if fault.kind == "lost_reply":
                lost_reply = True
            elif fault.kind == "latency":
                await asyncio.sleep(fault.latency_ms / 1000)
            elif fault.kind == "expire_token":
                state.revoke(vendor.name, token)
                tenant, expired = None, True
            else:
                response = vendor.error(int(fault.kind), fault.retry_after)
                state.record(
                    _entry(vendor.name, tenant, request, response.status, {"fault": fault.kind})
                )
                return response
        summary: dict[str, Any] = (
            vendor.summary(data) if data is not _SKIP else {"invalid_json": True}
        )
        summary["bytes"] = len(raw)
        if expired or (tenant is None and (vendor.requires_auth or token)):
            response = vendor.unauthorized(expired)
            state.record(_entry(vendor.name, None, request, response.status, summary))
            return response
        key = request.headers.get("Idempotency-Key")
        dedup = vendor.name in state.dedup and bool(key) and vendor.has_effect(request)
        if dedup and key:
            replay = state.replay(vendor.name, key)
            if replay is not None:
                status, body, ctype = replay
                summary["replayed"] = True
                state.record(_entry(vendor.name, tenant, request, status, summary))
                return web.Response(
                    status=status,
                    body=body,
                    content_type=ctype,
                    headers={"Idempotent-Replayed": "true"},
                )
        if data is _SKIP:
            response = vendor.error(400)
        else:
            response = vendor.handle(state, tenant or "-", request, data)
        if 200 <= response.status < 300 and vendor.has_effect(request):
            state.count_effect(vendor.name, key)
            summary["effect"] = True
            if dedup and key and isinstance(response.body, bytes):
                state.remember(
                    vendor.name, key, response.status, response.body, response.content_type
                )
        if lost_reply:  # the call took effect; its answer never reaches the caller
            summary["reply_lost"] = True
            if request.transport is not None:
                request.transport.abort()
        state.record(_entry(vendor.name, tenant, request, response.status, summary))
        return response

    return handle


def _client_credentials(request: web.Request, form: Any) -> tuple[str | None, str | None]:
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "basic ":
        try:
            client_id, _, secret = (
                base64.b64decode(header[6:], validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        return client_id, secret
    return form.get("client_id"), form.get("client_secret")


async def _token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    form: Mapping[str, Any]
    if request.content_type == "application/json":  # Atlassian's documented form
        body = await _json_body(request)
        form = body if isinstance(body, dict) else {}
    else:
        form = await request.post()
    grant = state.grants.get(str(form.get("refresh_token", "")))
    tenant = grant.tenant if grant else None
    fault = state.take_fault("oauth", tenant) if state.faults else None
    if fault is not None and fault.kind == "latency":
        await asyncio.sleep(fault.latency_ms / 1000)
    elif fault is not None and fault.kind != "expire_token":
        state.record(_entry("oauth", tenant, request, int(fault.kind), {"fault": fault.kind}))
        return json_response(int(fault.kind), {"error": "temporarily_unavailable"})
    status = 200
    payload: dict[str, Any] = {}
    if form.get("grant_type") != "refresh_token":
        status, payload = 400, {"error": "unsupported_grant_type"}
    elif grant is None or (fault is not None and fault.kind == "expire_token"):
        if grant is not None:  # an expire_token fault revokes the refresh token itself
            state.grants.pop(str(form.get("refresh_token")), None)
        status = 400
        payload = {
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked.",
        }
    else:
        client_id, secret = _client_credentials(request, form)
        if (grant.client_id and grant.client_id != client_id) or (
            grant.client_secret and grant.client_secret != secret
        ):
            status, payload = 401, {"error": "invalid_client", "error_description": "Unauthorized"}
        else:
            payload = {
                "access_token": state.issue_access_token(grant),
                "expires_in": ACCESS_TOKEN_LIFETIME,
                "token_type": "Bearer",
                "scope": "https://www.googleapis.com/auth/gmail.send https://www.googleapis.com/auth/gmail.metadata",
            }
            state.count_effect("oauth", None)
    summary = {
        "grant_type": str(form.get("grant_type", ""))[:32],
        "for": grant.connector if grant else None,
        "body": "json" if request.content_type == "application/json" else "form",
    }
    state.record(_entry("oauth", tenant, request, status, summary))
    return json_response(status, payload, {"Cache-Control": "no-store"})


async def _json_body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text="body must be JSON") from exc


async def _add_tokens(request: web.Request) -> web.Response:
    body = await _json_body(request)
    entries = body.get("tokens", [body]) if isinstance(body, dict) else body
    state = request.app[STATE_KEY]
    try:
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, dict):
                raise ValueError("each token entry must be an object")
            state.add_token(entry)
    except ValueError as exc:
        return json_response(400, {"error": str(exc)})
    return json_response(200, {"ok": True})


async def _calls(request: web.Request) -> web.Response:
    connector, tenant = request.query.get("connector"), request.query.get("tenant")
    since = int(request.query["since"]) if request.query.get("since", "").isdigit() else 0
    calls = [
        call
        for call in request.app[STATE_KEY].calls
        if call["seq"] > since
        and (connector is None or call["connector"] == connector)
        and (tenant is None or call["tenant"] == tenant)
    ]
    return json_response(200, {"calls": calls})


async def _effects(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    connector = request.query.get("connector")
    merged: dict[str, int] = {}
    for name, per in state.effects.items():
        if connector is None or name == connector:
            for key, count in per.items():
                merged[key] = merged.get(key, 0) + count
    return json_response(200, {"effects": merged, "total": sum(merged.values())})


async def _faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if request.method == "GET":
        return json_response(200, {"faults": [fault.public() for fault in state.faults]})
    body = await _json_body(request)
    try:
        fault = state.add_fault(body if isinstance(body, dict) else {})
    except ValueError as exc:
        return json_response(400, {"error": str(exc)})
    return json_response(200, {"ok": True, "fault": fault.public()})


async def _reset(request: web.Request) -> web.Response:
    body = await _json_body(request)
    request.app[STATE_KEY].reset(tokens=bool(isinstance(body, dict) and body.get("tokens")))
    return json_response(200, {"ok": True})


async def _health(request: web.Request) -> web.Response:
    return json_response(200, {"ok": True, "calls": len(request.app[STATE_KEY].calls)})


def make_app(state: EmulatorState | None = None) -> web.Application:
    """The emulator app; pass a state to pre-register tokens or inspect it in tests."""
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[STATE_KEY] = state or EmulatorState()
    app.router.add_post("/api/chat.postMessage", _vendor_handler(VENDORS["slack"]))
    for read in ("conversations.history", "conversations.replies", "conversations.list"):
        app.router.add_get(f"/api/{read}", _vendor_handler(VENDORS["slack"]))
        app.router.add_post(f"/api/{read}", _vendor_handler(VENDORS["slack"]))
    app.router.add_post("/gmail/v1/users/me/messages/send", _vendor_handler(VENDORS["gmail"]))
    app.router.add_get("/gmail/v1/users/me/messages", _vendor_handler(VENDORS["gmail"]))
    app.router.add_get("/gmail/v1/users/me/messages/{id}", _vendor_handler(VENDORS["gmail"]))
    app.router.add_post("/v1/pages", _vendor_handler(VENDORS["notion"]))
    app.router.add_post("/v1/databases/{database_id}/query", _vendor_handler(VENDORS["notion"]))
    app.router.add_post("/v1/data_sources/{data_source_id}/query", _vendor_handler(VENDORS["notion"]))
    app.router.add_post("/rest/api/3/issue", _vendor_handler(VENDORS["jira"]))
    app.router.add_get("/rest/api/3/search/jql", _vendor_handler(VENDORS["jira"]))
    app.router.add_post("/rest/api/3/search/jql", _vendor_handler(VENDORS["jira"]))
    app.router.add_post("/repos/{owner}/{repo}/issues", _vendor_handler(VENDORS["github"]))
    app.router.add_get("/repos/{owner}/{repo}/issues", _vendor_handler(VENDORS["github"]))
    app.router.add_route("*", "/hooks/{tail:.*}", _vendor_handler(VENDORS["http"]))
    app.router.add_post("/oauth/token", _token)
    app.router.add_post("/_emulator/tokens", _add_tokens)
    app.router.add_get("/_emulator/calls", _calls)
    app.router.add_get("/_emulator/effects", _effects)
    app.router.add_route("*", "/_emulator/faults", _faults)
    app.router.add_post("/_emulator/reset", _reset)
    app.router.add_get("/_emulator/health", _health)
    return app
