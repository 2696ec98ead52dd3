"""The OpenAPI 3.1 document of the REST API, built from the pydantic request/response models."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from core.jsonutil import open_objects
from schemas import ResultStatus, WorkspaceConfig

from .models import (
    CLAIM_FIELDS,
    ApiKeyCreate,
    ApiKeyCreated,
    BatchRequest,
    BatchResponse,
    CancelBatchRequest,
    CancelBatchResponse,
    CancelResponse,
    CommandStatus,
    CredentialsStored,
    ErrorBody,
    SubmitRequest,
    SubmitResponse,
)

__all__ = ["openapi_document"]

_MODELS = (
    SubmitRequest, SubmitResponse, BatchRequest, BatchResponse, CommandStatus, CancelResponse, ErrorBody,
    CancelBatchRequest, CancelBatchResponse,
    ApiKeyCreate, ApiKeyCreated, CredentialsStored, WorkspaceConfig,
)
_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


# Response headers the server sets (OpenAPI's ``headers`` object of a response).
_LOCATION = {"Location": {"description": "The command's status URL (as status_url)",
                          "schema": {"type": "string"}}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again",
                                "schema": {"type": "integer", "minimum": 0}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed or invalid request", 401: "Missing or invalid credentials",
        403: "Forbidden (workspace not owned, tenant claim)", 404: "Not found",
        409: "Idempotency key reused for another command", 412: "The workspace changed (If-Match) or exists (If-None-Match)",
        413: "Body too large",
        415: "Body not declared as application/json",
        429: "Rate limited (see Retry-After)", 503: "Kafka or Vault unavailable",
    }
    out = {str(code): _json("ErrorBody", text[code]) for code in codes}
    for code in ("429", "503"):
        if code in out:
            out[code]["headers"] = dict(_RETRY_AFTER)
    return out


def _batch_errors(*codes: int, body: str = "BatchResponse") -> dict[str, Any]:
    """A batch with no item accepted answers its first item's status with the per-item
    body; a batch refused as a whole answers that status with an error body."""
    whole = _errors(*codes)
    return {
        code: {"description": f"{answer['description']}: the whole batch (ErrorBody), or no item "
                              f"accepted, the first item's status ({body})",
               "content": {"application/json": {"schema": {"anyOf": [_ref("ErrorBody"), _ref(body)]}}},
               **({"headers": answer["headers"]} if "headers" in answer else {})}
        for code, answer in whole.items()
    }


def _space_variant(paths: dict[str, Any]) -> dict[str, Any]:
    space = {"name": "space_id", "in": "path", "required": True, "schema": {"type": "string"}}
    out = dict(paths)
    for path, item in paths.items():
        if path.startswith("/v1/commands"):
            variant = {
                method: {**op, "operationId": op["operationId"] + "InSpace",
                         "parameters": [space, *op.get("parameters", [])]}
                for method, op in item.items()
            }
            out["/v1/spaces/{space_id}" + path[3:]] = variant
    return out


def _observe_paths(admin: list[dict[str, list[str]]]) -> dict[str, Any]:
    """Per-tenant observability: an API key reads its own tenant, the admin token any."""
    tenant = {"name": "tenant_id", "in": "path", "required": True, "schema": {"type": "string"}}
    command = {"name": "command_id", "in": "path", "required": True, "schema": {"type": "string"}}
    either = [{"apiKey": []}, *admin]
    anything = {"type": "object", "additionalProperties": True}

    def get(operation: str, summary: str, params: list[dict[str, Any]], *codes: int,
            security: list[dict[str, list[str]]] = either) -> dict[str, Any]:
        return {"get": {
            "operationId": operation, "summary": summary, "security": security, "parameters": params,
            "responses": {"200": {"description": summary, "content": {"application/json": {"schema": anything}}},
                          **_errors(*codes)},
        }}

    filters = [
        {"name": "status", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "connector", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
    ]
    stream_params = [
        {"name": "view", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["tenant", "admin"], "default": "tenant"}},
        {"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "The tenant to watch (the admin token only)."},
    ]
    return {
        "/v1/observe/me": get("observeMe", "Who the credential is (tenant, workspace, admin)", [], 401),
        "/v1/tenants/{tenant_id}/metrics": get(
            "tenantMetrics", "The tenant's rates, errors and latency per connector", [tenant], 401, 403),
        "/v1/tenants/{tenant_id}/errors": get(
            "tenantErrors", "The tenant's recent error reports", [tenant], 401, 403),
        "/v1/tenants/{tenant_id}/commands": get(
            "tenantCommands", "The tenant's recent commands", [tenant, *filters], 400, 401, 403),
        "/v1/tenants/{tenant_id}/commands/{command_id}/trace": get(
            "commandTrace", "One recent command's trace (every hop's spans)",
            [tenant, command], 400, 401, 403, 404),
        "/v1/admin/overview": get(
            "adminOverview", "Every tenant and worker pool (lag) at a glance", [], 401, 403,
            security=admin),
        "/v1/stream": {"get": {
            "operationId": "stream", "summary": "Live snapshots (server-sent events)",
            "security": either, "parameters": stream_params,
            "responses": {"200": {"description": "snapshot events, then reconnect",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 403, 503)},
        }},
    }


def _declare_claims(schemas: dict[str, Any]) -> None:
    """The claim fields a submission may carry (``models.CLAIM_FIELDS``), which the
    request models leave to the handlers."""
    for name in ("SubmitRequest", "BatchRequest", "CancelBatchRequest"):
        properties = schemas[name]["properties"]
        for claim in CLAIM_FIELDS:
            if claim == "_meta":
                properties[claim] = {"type": "object", "description": "Ignored, but a tenant or "
                                     "workspace claim in it is checked as one at the top level."}
            else:
                properties[claim] = {"description": "Optional claim: must name the API key's own "
                                     "tenant (workspace for space_id/spaceId), else 403; then ignored."}


# What clients only read (answers, Results) is open, as the exported result schema is: a
# field a later release adds must not fail a client generated from this document.
# What clients send stays closed: the server refuses fields it does not know.
_READ_ONLY = ("SubmitResponse", "BatchResponse", "CommandStatus", "CancelResponse", "CancelBatchResponse", "ErrorBody", "ApiKeyCreated", "CredentialsStored")
_SENT = ("SubmitRequest", "BatchRequest", "CancelBatchRequest", "ApiKeyCreate", "WorkspaceConfig")


def _referenced(defs: dict[str, Any], roots: tuple[str, ...]) -> set[str]:
    """The names of ``roots`` and of every definition they reach through ``$ref``."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        todo += [ref.rsplit("/", 1)[-1] for ref in _refs(defs[name])]
    return seen


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _open_for_readers(defs: dict[str, Any]) -> None:
    for name in _referenced(defs, _READ_ONLY) - _referenced(defs, _SENT):
        defs[name] = open_objects(defs[name])
    # One flat enum, not anyOf[const "pending", $ref ResultStatus]: client generators
    # (openapi-python-client) mishandle that union and fail on every finished command.
    defs["CommandStatus"]["properties"]["status"] = {
        "type": "string", "enum": ["pending", *(status.value for status in ResultStatus)],
        "description": "pending until the command's final Result, then that Result's status.",
    }


@lru_cache(maxsize=4)
def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document (cached per server URL)."""
    _, defs = models_json_schema([(m, "validation") for m in _MODELS], ref_template=_REF)
    _declare_claims(defs["$defs"])
    _open_for_readers(defs["$defs"])
    space_header = {"name": "X-Switchyard-Space", "in": "header", "required": False,
                    "schema": {"type": "string"},
                    "description": "The workspace (when the key owns several)."}
    idem_header = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "maxLength": 255}}
    command_id = {"name": "command_id", "in": "path", "required": True, "schema": {"type": "string"}}
    wait = {"name": "wait", "in": "query", "required": False,
            "schema": {"type": "number", "minimum": 0, "maximum": 30},
            "description": "Seconds to wait for the final result (at most 30)."}
    admin = [{"adminToken": []}]
    paths: dict[str, Any] = {
        "/v1/commands": {"post": {
            "operationId": "submitCommand", "summary": "Submit a command (async)",
            "parameters": [space_header, idem_header],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SubmitRequest")}}},
            "responses": {"202": {**_json("SubmitResponse", "Accepted: durable in Kafka"), "headers": _LOCATION},
                          "200": {**_json("SubmitResponse", "Replay of a known idempotency key"),
                                  "headers": _LOCATION},
                          **_errors(400, 401, 403, 409, 413, 415, 429, 503)},
        }},
        "/v1/commands:batch": {"post": {
            "operationId": "submitBatch", "summary": "Submit up to 500 commands",
            "parameters": [space_header, {
                **idem_header, "schema": {"type": "string", "maxLength": 251},
                "description": "Keys the items without an idempotency_key of their own, as <key>:<index>.",
            }],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BatchRequest")}}},
            "responses": {"200": _json("BatchResponse", "Per-item outcomes (some item accepted)"),
                          **_errors(401, 413, 415), **_batch_errors(400, 403, 409, 429, 503)},
        }},
        "/v1/commands/{command_id}": {"get": {
            "operationId": "getCommand", "summary": "Status and result of a command",
            "parameters": [command_id, wait, space_header],
            "responses": {"200": _json("CommandStatus", "Pending or final"),
                          **_errors(400, 401, 403, 404, 429, 503)},
        }},
        "/v1/commands:cancel": {"post": {
            "operationId": "cancelCommands", "summary": "Cancel up to 500 commands that have not started",
            "parameters": [space_header],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("CancelBatchRequest")}}},
            "responses": {"200": _json("CancelBatchResponse", "Per-command outcomes (some cancelled)"),
                          **_errors(401, 413, 415),
                          **_batch_errors(400, 403, 404, 409, 429, 503, body="CancelBatchResponse")},
        }},
        "/v1/commands/{command_id}:cancel": {"post": {
            "operationId": "cancelCommand",
            "summary": "Cancel a command that has not started (its Result says what came of it)",
            "parameters": [command_id, space_header],
            "responses": {"202": _json("CancelResponse", "The cancellation is durable in Kafka"),
                          **_errors(400, 401, 403, 404, 429, 503),
                          "409": _json("ErrorBody", "The command has finished (error.status says how)")},
        }},
    }
    paths = _space_variant(paths)
    ws_params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                 for n in ("tenant_id", "space_id")]
    if_match = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
                "description": "The ETag of the copy this write changes (or *): 412 if it changed since."}
    if_none_match = {"name": "If-None-Match", "in": "header", "required": False,
                     "schema": {"type": "string", "enum": ["*"]}, "description": "*: create only (412 if it exists)."}
    etag = {"ETag": {"schema": {"type": "string"}, "description": "The workspace as stored, for If-Match."}}
    cred_params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                   for n in ("tenant_id", "connector")]
    key_param = [{"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    paths.update({
        "/v1/admin/workspaces": {"get": {
            "operationId": "listWorkspaces", "security": admin, "summary": "A tenant's workspaces in brief",
            "parameters": [{"name": "tenant_id", "in": "query", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "{tenant_id, workspaces: [{space_id, version, connectors, "
                                                 "actions, etag}], truncated} (at most 1,000)",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          **_errors(400, 401)},
        }},
        "/v1/admin/workspaces/{tenant_id}/{space_id}": {
            "put": {"operationId": "putWorkspace", "security": admin,
                    "parameters": [*ws_params, if_match, if_none_match],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("WorkspaceConfig")}}},
                    "responses": {"200": {**_json("WorkspaceConfig", "Stored"), "headers": etag},
                                  "409": _json("ErrorBody", "A version lower than the stored one (a stale copy)"),
                                  **_errors(400, 401, 412, 413, 415, 503)}},
            "get": {"operationId": "getWorkspace", "security": admin, "parameters": ws_params,
                    "responses": {"200": {**_json("WorkspaceConfig", "The workspace"), "headers": etag},
                                  **_errors(401, 404)}},
            "delete": {"operationId": "deleteWorkspace", "security": admin, "parameters": [*ws_params, if_match],
                       "responses": {"204": {"description": "Deleted"}, **_errors(401, 412, 503)}},
        },
        "/v1/admin/api-keys": {
            "post": {
                "operationId": "createApiKey", "security": admin,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ApiKeyCreate")}}},
                "responses": {"201": _json("ApiKeyCreated", "The plaintext key, shown once"),
                              **_errors(400, 401, 413, 415, 503)},
            },
            "get": {
                "operationId": "listApiKeys", "security": admin, "summary": "A tenant's keys, without their hashes",
                "parameters": [{"name": "tenant_id", "in": "query", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "{tenant_id, keys: [...], truncated} (at most 1,000 keys)",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              **_errors(400, 401)},
            },
        },
        "/v1/admin/api-keys/{key_id}": {
            "get": {"operationId": "getApiKey", "security": admin, "parameters": key_param,
                    "responses": {"200": {"description": "The key's record without its hash"},
                                  **_errors(401, 404)}},
            "delete": {"operationId": "revokeApiKey", "security": admin, "parameters": key_param,
                       "responses": {"204": {"description": "Revoked"}, **_errors(401, 503)}},
        },
        "/v1/admin/credentials/{tenant_id}/{connector}": {
            "put": {"operationId": "putCredentials", "security": admin, "parameters": cred_params,
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"type": "object", "additionalProperties": True}}}},
                    "responses": {"200": _json("CredentialsStored", "Stored in Vault (values not echoed)"),
                                  **_errors(400, 401, 413, 415, 503)}},
            "delete": {"operationId": "deleteCredentials", "security": admin, "parameters": cred_params,
                       "responses": {"204": {"description": "Deleted"}, **_errors(401, 503)}},
        },
        **_observe_paths(admin),
        "/healthz": {"get": {"operationId": "healthz", "security": [],
                             "responses": {"200": {"description": "Alive"}}}},
        "/readyz": {"get": {"operationId": "readyz", "security": [],
                            "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}}}},
    })
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Switchyard ingress", "version": "1",
                 "description": "Async command API for AI agents. The tenant comes from the API key."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "sy_<key_id>_<secret>"},
                "adminToken": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apiKey": []}],
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
