"""The admin API (admin token only): workspaces, API keys, connector credentials.

    PUT/GET/DELETE /v1/admin/workspaces/{tenant_id}/{space_id}   config topic
    GET            /v1/admin/workspaces?tenant_id=T              a tenant's workspaces in brief
    POST           /v1/admin/api-keys                            → plaintext key, once
    GET            /v1/admin/api-keys?tenant_id=T                a tenant's keys (no hashes)
    GET/DELETE     /v1/admin/api-keys/{key_id}                   record (no hash) / revoke
    PUT/DELETE     /v1/admin/credentials/{tenant_id}/{connector} Vault only

Writes to the config topic are acknowledged by the broker and then read back by this
replica's directory (bounded wait) before the answer, so a key just created works on
this replica at once; other replicas apply it as soon as they read it (normally < 1 s).
Credential values go to Vault only: never to Kafka, a log line or a response.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from core.vault import VaultAdmin
from router import workspace_problem
from schemas import CONNECTORS, WorkspaceConfig, api_key_key, workspace_key
from schemas.identifiers import SAFE_ID_PATTERN
from workers.connectors import credentials_problem

from ._http import json_response, read_json
from ._state import STATE, IngressState
from .admin import delete_config, new_api_key, publish_config
from .auth import bearer_token, refuse_repeated_headers
from .errors import (
    BadRequest,
    Conflict,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    Unauthorized,
    from_validation,
)
from .models import ApiKeyCreate

__all__ = ["add_admin_routes"]

_SAFE_ID = re.compile(SAFE_ID_PATTERN)
_CONNECTOR = re.compile(r"^[a-z0-9_]{1,32}$")
_READ_BACK_TIMEOUT = 10.0
_MAX_CREDENTIAL_FIELDS = 64
_MAX_LISTED = 1_000  # workspaces or API keys of a tenant in one listing


def _state(request: web.Request) -> IngressState:
    state = request.app[STATE]
    expected = state.settings.admin_token
    refuse_repeated_headers(request.headers)  # which copy would count is a guess
    presented = bearer_token(request.headers)
    if expected is None or presented is None or not hmac.compare_digest(
        presented.encode(), expected.get_secret_value().encode()
    ):
        raise Unauthorized("the admin token is required")
    return state


def _ids(request: web.Request, *names: str) -> list[str]:
    values = [request.match_info[name] for name in names]
    for name, value in zip(names, values, strict=True):
        pattern = _CONNECTOR if name == "connector" else _SAFE_ID
        if not pattern.fullmatch(value):
            raise BadRequest(f"{name} must match {pattern.pattern}")
    return values


async def _read_back(state: IngressState, metadata: list[Any]) -> None:
    for meta in metadata:
        if not await state.directory.follower.wait_for(meta.partition, meta.offset, _READ_BACK_TIMEOUT):
            raise ServiceUnavailable("the change is stored but not yet visible; retry the read")


async def put_workspace(request: web.Request) -> web.Response:
    state = _state(request)
    tenant_id, space_id = _ids(request, "tenant_id", "space_id")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("a workspace is a JSON object")
    for field, value in (("tenant_id", tenant_id), ("space_id", space_id)):
        if body.setdefault(field, value) != value:
            raise BadRequest(f"{field} in the body differs from the URL")
    try:
        workspace = WorkspaceConfig.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None
    problem = workspace_problem(workspace)
    if problem is not None:
        raise BadRequest(problem)  # the router would refuse every call of it
    stated_version = "version" in body
    async with state.config_writes.hold((tenant_id, space_id)):
        current = state.directory.workspace(tenant_id, space_id)
        _check_preconditions(request, state.directory.workspace_record(tenant_id, space_id))
        if stated_version and current is not None and workspace.version < current.version:
            raise Conflict(
                f"the workspace is at version {current.version} and this write says "
                f"{workspace.version}: a stale copy? Write it with a version of at least "
                f"{current.version}"
            )
        metadata = await publish_config(state.settings, [workspace], producer=state.pipeline.producer)
        await _read_back(state, metadata)
    return json_response(workspace.model_dump(mode="json"), headers={"ETag": _etag(workspace.to_bytes())})


async def get_workspace(request: web.Request) -> web.Response:
    state = _state(request)
    tenant_id, space_id = _ids(request, "tenant_id", "space_id")
    workspace = state.directory.workspace(tenant_id, space_id)
    record = state.directory.workspace_record(tenant_id, space_id)
    if workspace is None or record is None:
        raise NotFound("no such workspace")
    return json_response(workspace.model_dump(mode="json"), headers={"ETag": _etag(record)})


async def list_workspaces(request: web.Request) -> web.Response:
    """A tenant's workspaces in brief (the version, connectors and action names of each)."""
    state = _state(request)
    tenant_id = _tenant_query(request)
    spaces = state.directory.spaces_of(tenant_id)
    shown = []
    for space_id in spaces[:_MAX_LISTED]:
        workspace = state.directory.workspace(tenant_id, space_id)
        record = state.directory.workspace_record(tenant_id, space_id)
        if workspace is not None and record is not None:
            shown.append({"space_id": space_id, "version": workspace.version, "connectors": sorted(workspace.connectors),
                          "actions": [action.name for action in workspace.actions], "etag": _etag(record)})
    return json_response({"tenant_id": tenant_id, "workspaces": shown, "truncated": len(spaces) > len(shown)})


def _tenant_query(request: web.Request) -> str:
    tenant_id = request.query.get("tenant_id", "")
    if not _SAFE_ID.fullmatch(tenant_id):
        raise BadRequest("name the tenant: ?tenant_id=<tenant>")
    return tenant_id


async def delete_workspace(request: web.Request) -> web.Response:
    state = _state(request)
    tenant_id, space_id = _ids(request, "tenant_id", "space_id")
    async with state.config_writes.hold((tenant_id, space_id)):
        _check_preconditions(request, state.directory.workspace_record(tenant_id, space_id))
        metadata = await delete_config(
            state.settings, [workspace_key(tenant_id, space_id)], producer=state.pipeline.producer
        )
        await _read_back(state, metadata)
    return web.Response(status=204)


def _etag(record: bytes) -> str:
    """A workspace's entity tag: of its record as stored on the config topic, so every
    replica, of any release, gives the same one."""
    return f'"{hashlib.sha256(record).hexdigest()[:32]}"'


def _tags(request: web.Request, header: str) -> set[str] | None:
    """The entity tags of every ``header`` line, ``W/`` dropped (a proxy that compresses
    answers may weaken ours); None when the request has no such header."""
    lines = request.headers.getall(header, [])
    if not lines:
        return None
    return {tag.strip().removeprefix("W/") for line in lines for tag in line.split(",") if tag.strip()}


def _check_preconditions(request: web.Request, stored: bytes | None) -> None:
    """``If-Match`` (the ETag of the copy the caller changed, or ``*``: it exists) and
    ``If-None-Match`` (``*``: create only; tags: only if it is none of them), against
    this replica's copy.

    Raises:
        PreconditionFailed: the workspace changed (or exists, or does not) meanwhile.
    """
    current = None if stored is None else _etag(stored)
    if_match = _tags(request, "If-Match")
    if if_match is not None and (current is None or ("*" not in if_match and current not in if_match)):
        raise PreconditionFailed(
            "the workspace changed since the copy this write started from (If-Match); "
            "read it again (GET gives its ETag) and redo the change"
        )
    if_none_match = _tags(request, "If-None-Match")
    if if_none_match is not None and current is not None and ("*" in if_none_match or current in if_none_match):
        raise PreconditionFailed("the workspace exists already, as that copy (If-None-Match)")


async def create_api_key(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json(request)
    try:
        spec = ApiKeyCreate.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None
    plaintext, record = new_api_key(
        tenant_id=spec.tenant_id, spaces=list(spec.spaces), user_id=spec.user_id, role=spec.role
    )
    metadata = await publish_config(state.settings, [record], producer=state.pipeline.producer)
    await _read_back(state, metadata)
    return json_response(
        {"api_key": plaintext, "key_id": record.key_id, "tenant_id": record.tenant_id,
         "spaces": record.spaces, "user_id": record.user_id, "role": record.role},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def get_api_key(request: web.Request) -> web.Response:
    state = _state(request)
    record = state.directory.api_key(request.match_info["key_id"])
    if record is None:
        raise NotFound("no such API key")
    return json_response(record.model_dump(mode="json", exclude={"salt", "secret_hash"}))


async def list_api_keys(request: web.Request) -> web.Response:
    """A tenant's keys without their hashes (who may call, to revoke before offboarding)."""
    state = _state(request)
    tenant_id = _tenant_query(request)
    records = state.directory.api_keys_of(tenant_id)
    shown = [r.model_dump(mode="json", exclude={"salt", "secret_hash"}) for r in records[:_MAX_LISTED]]
    return json_response({"tenant_id": tenant_id, "keys": shown, "truncated": len(records) > len(shown)})


async def delete_api_key(request: web.Request) -> web.Response:
    state = _state(request)
    key_id = request.match_info["key_id"]
    if not re.fullmatch(r"[A-Za-z0-9]{8,32}", key_id):
        raise BadRequest("invalid key id")
    metadata = await delete_config(
        state.settings, [api_key_key(key_id)], producer=state.pipeline.producer
    )
    await _read_back(state, metadata)
    return web.Response(status=204)


def _vault(state: IngressState) -> VaultAdmin:
    if state.vault is None:
        token = state.settings.vault_token
        if token is None:
            raise ServiceUnavailable("the credential store is not configured", 60.0)
        state.vault = VaultAdmin(
            state.settings.vault_addr, token.get_secret_value(),
            mount=state.settings.vault_kv_mount, ca_file=state.settings.vault_ca_file,
        )  # fmt: skip
    return state.vault


async def put_credentials(request: web.Request) -> web.Response:
    state = _state(request)
    tenant_id, connector = _ids(request, "tenant_id", "connector")
    if connector not in CONNECTORS:  # no pool would ever read them
        raise BadRequest(f"connector must be one of {', '.join(CONNECTORS)}")
    body = await read_json(request)
    if not isinstance(body, dict) or not body or len(body) > _MAX_CREDENTIAL_FIELDS:
        raise BadRequest(f"credentials are a JSON object of 1 to {_MAX_CREDENTIAL_FIELDS} fields")
    problem = credentials_problem(connector, body, base_url_set=state.settings.connector_base_url is not None)
    if problem is not None:  # every command would fail credentials_missing
        raise BadRequest(problem)
    version = await _vault(state).put_credentials(tenant_id, connector, body)
    # Only where it went and the version: never the values.
    return json_response({"tenant_id": tenant_id, "connector": connector, "version": version})


async def delete_credentials(request: web.Request) -> web.Response:
    state = _state(request)
    tenant_id, connector = _ids(request, "tenant_id", "connector")
    if connector not in CONNECTORS:  # as on PUT: no such credentials can exist
        raise BadRequest(f"connector must be one of {', '.join(CONNECTORS)}")
    await _vault(state).delete_credentials(tenant_id, connector)
    return web.Response(status=204)


def add_admin_routes(app: web.Application) -> None:
    """Register the admin API on ``app`` (expects ``app[STATE]``)."""
    ws = "/v1/admin/workspaces/{tenant_id}/{space_id}"
    app.router.add_get("/v1/admin/workspaces", list_workspaces)
    app.router.add_put(ws, put_workspace)
    app.router.add_get(ws, get_workspace)
    app.router.add_delete(ws, delete_workspace)
    app.router.add_post("/v1/admin/api-keys", create_api_key)
    app.router.add_get("/v1/admin/api-keys", list_api_keys)
    app.router.add_get("/v1/admin/api-keys/{key_id}", get_api_key)
    app.router.add_delete("/v1/admin/api-keys/{key_id}", delete_api_key)
    creds = "/v1/admin/credentials/{tenant_id}/{connector}"
    app.router.add_put(creds, put_credentials)
    app.router.add_delete(creds, delete_credentials)
