"""MCP methods: which exist at which revision, their params, their results on the wire.

Requests are validated against the ``mcp-types`` surface of the negotiated revision and
results are serialized through it, so each client sees exactly its revision's shapes
(e.g. no ``ttlMs`` for a 2025-06-18 client, ``resultType`` for a 2026-07-28 one).
"""

from __future__ import annotations

from typing import Any

from mcp_types import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    SERVER_INFO_META_KEY,
    CallToolRequestParams,
    CancelTaskRequestParams,
    DiscoverResult,
    GetTaskPayloadRequestParams,
    GetTaskRequestParams,
    Implementation,
    InitializeRequestParams,
    InitializeResult,
    PaginatedRequestParams,
    ServerCapabilities,
    ServerTasksCapability,
    ServerTasksRequestsCapability,
    TasksCallCapability,
    TasksCancelCapability,
    TasksListCapability,
    TasksToolsCapability,
    ToolsCapability,
)
from mcp_types import methods as surface
from pydantic import BaseModel, ValidationError

from core.logs import bind
from core.telemetry import span
from ingress.contracts import Identity
from ingress.errors import IngressError

from ._jsonrpc import RpcError
from ._tasks import TaskBook
from ._tools import InvalidArguments, ToolRunner, check_claims, rpc_from_ingress_error

__all__ = [
    "HANDSHAKE_VERSIONS",
    "MODERN_VERSIONS",
    "TASKS_VERSION",
    "Dispatcher",
    "negotiate",
]

# The initialize-handshake revisions this server speaks, oldest first.
# 2025-03-26 for the clients whose newest it is (the Python SDK before 1.10, older
# TypeScript SDKs and mcp-remote): one message per POST, no batches (see _jsonrpc).
HANDSHAKE_VERSIONS: tuple[str, ...] = ("2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: tuple[str, ...] = ("2026-07-28",)
# Tasks exist only in 2025-11-25 (2026-07-28 moved them to an extension).
TASKS_VERSION = "2025-11-25"
# Invalid tool arguments are a protocol error here (a tool error from 2025-11-25 on).
ARGUMENTS_AS_PROTOCOL_ERROR = frozenset({"2025-03-26", "2025-06-18"})
# Tools declare an outputSchema from 2025-06-18 on (structured output).
_BEFORE_OUTPUT_SCHEMAS = frozenset({"2025-03-26"})

# What initialize and server/discover tell a client's model about the server.
_INSTRUCTIONS = (
    "Each tool is an action of your Switchyard workspace; calls run asynchronously "
    "through Kafka and return the connector's output."
)
# The methods answered below (tasks/* and ping aside); the spec's others are not offered.
_OFFERED = frozenset({"server/discover", "tools/list", "tools/call"})
_TASK_METHODS = {
    "tasks/get": GetTaskRequestParams,
    "tasks/result": GetTaskPayloadRequestParams,
    "tasks/cancel": CancelTaskRequestParams,
    "tasks/list": PaginatedRequestParams,
}


def negotiate(requested: str) -> str:
    """The handshake version to answer ``initialize`` with (the spec's counter-offer rule)."""
    return requested if requested in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def _params(model: type[BaseModel], params: dict[str, Any] | None) -> Any:
    try:
        return model.model_validate(params or {}, by_name=False)
    except ValidationError as exc:
        raise RpcError(INVALID_PARAMS, _first_error(exc)) from exc


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "params"
    return f"Invalid params: {where}: {error['msg']}"


class Dispatcher:
    """Answers one authenticated JSON-RPC request at a known protocol revision."""

    def __init__(
        self, tools: ToolRunner, tasks: TaskBook, *, server_info: Implementation, page_size: int
    ) -> None:
        self._tools = tools
        self._tasks = tasks
        self._server_info = server_info
        self._page_size = page_size

    def capabilities(self, version: str) -> ServerCapabilities:
        caps = ServerCapabilities(tools=ToolsCapability(list_changed=False))
        if version == TASKS_VERSION:
            caps.tasks = ServerTasksCapability(
                list=TasksListCapability(),
                cancel=TasksCancelCapability(),
                requests=ServerTasksRequestsCapability(
                    tools=TasksToolsCapability(call=TasksCallCapability())
                ),
            )
        return caps

    async def notified(self, identity: Identity, session_id: str, message: dict[str, Any]) -> None:
        """A notification in a session: ``notifications/cancelled`` of a tools/call still
        waiting on this replica cancels its command (``_in_flight``); others need nothing."""
        params = message.get("params")
        if message.get("method") != "notifications/cancelled" or not isinstance(params, dict):
            return
        command_id = self._tools.in_flight.command_of(identity, session_id, params.get("requestId"))
        if command_id is not None:
            with bind(tenant_id=identity.tenant_id, command_id=command_id):
                await self._tools.cancel(identity, "tools/call", command_id)

    def initialize(self, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """Validate ``initialize`` and build its result; returns (negotiated version, wire result).

        Raises:
            RpcError: -32602 for malformed params.
        """
        init: InitializeRequestParams = _params(InitializeRequestParams, params)
        version = negotiate(init.protocol_version)
        result = InitializeResult(
            protocol_version=version,
            capabilities=self.capabilities(version),
            server_info=self._server_info,
            instructions=_INSTRUCTIONS,
        )
        return version, surface.serialize_server_result("initialize", version, _dump(result))

    async def handle(
        self, identity: Identity, version: str, method: str, params: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The wire result of ``method`` for ``identity`` at ``version``.

        Raises:
            RpcError: the JSON-RPC error to answer with (unknown method, bad params,
                refused by the edge).
        """
        meta = params.get("_meta") if isinstance(params, dict) else None
        try:
            # The params envelope itself and its _meta may not claim another tenant (a
            # tenant_id next to name/arguments is a claim too); tool arguments are checked
            # against what the tool declares (ToolRunner.resolve).
            check_claims(identity, params if isinstance(params, dict) else None, meta)
        except IngressError as exc:
            raise rpc_from_ingress_error(exc) from exc
        if method in _TASK_METHODS:
            if version != TASKS_VERSION:
                raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
            answer = await self._task_method(identity, method, _params(_TASK_METHODS[method], params))
            if method == "tasks/result":
                # Exactly what the tools/call would have answered, in this revision's shape.
                return surface.serialize_server_result("tools/call", version, _dump(answer))
            return _dump(answer)
        if method == "ping" and version not in MODERN_VERSIONS:
            return {}
        if method not in _OFFERED:
            # Spec methods of features this server does not offer (prompts, resources,
            # completion...): unknown whatever their params, so checked before them.
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        try:
            request = surface.parse_client_request(method, version, params)
        except KeyError as exc:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}") from exc
        except ValidationError as exc:
            raise RpcError(INVALID_PARAMS, _first_error(exc)) from exc
        if method == "server/discover":
            result: Any = DiscoverResult(
                supported_versions=list(MODERN_VERSIONS),
                capabilities=self.capabilities(version),
                instructions=_INSTRUCTIONS,
            )
        elif method == "tools/list":
            cursor = request.params.cursor if request.params is not None else None
            result = self._tools.list_tools(
                identity,
                cursor,
                tasks=version == TASKS_VERSION,
                output_schemas=version not in _BEFORE_OUTPUT_SCHEMAS,
            )
        elif method == "tools/call":
            with bind(tenant_id=identity.tenant_id, space_id=identity.space_id):
                return await self._call_tool(identity, version, request.params)
        else:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return self._serialize(method, version, result)

    def _serialize(self, method: str, version: str, result: BaseModel) -> dict[str, Any]:
        wire = surface.serialize_server_result(method, version, _dump(result))
        if version in MODERN_VERSIONS:
            # 2026-07-28: servers SHOULD stamp their identity on every result.
            wire["_meta"] = {
                **wire.get("_meta", {}),
                SERVER_INFO_META_KEY: _dump(self._server_info),
            }
        return wire

    async def _call_tool(
        self, identity: Identity, version: str, params: CallToolRequestParams
    ) -> dict[str, Any]:
        arguments = params.arguments or {}
        try:
            action = self._tools.resolve(identity, params.name, arguments)
        except InvalidArguments as exc:
            # A call that asks for a task is answered with a task or an error: with no task
            # to create, the JSON-RPC error (its message says what to correct).
            if version in ARGUMENTS_AS_PROTOCOL_ERROR or (
                version == TASKS_VERSION and params.task is not None
            ):
                raise
            return self._serialize("tools/call", version, exc.as_tool_result())
        meta = dict(params.meta) if params.meta is not None else None
        with span(
            "mcp tools/call",
            attributes={"mcp.tool": params.name, "switchyard.tenant": identity.tenant_id},
        ):
            task = params.task if version == TASKS_VERSION else None
            ttl = None if task is None else self._tasks.ttl_for(task.ttl)
            command, created = await self._tools.submit(identity, action, arguments, meta, task_ttl=ttl)
            with bind(command_id=command.command_id):
                if ttl is not None:
                    return _dump(self._tasks.create(identity, command, ttl))
                call_result = await self._tools.wait(identity, command, own=created)
        return self._serialize("tools/call", version, call_result)

    async def _task_method(self, identity: Identity, method: str, params: Any) -> BaseModel:
        if method == "tasks/get":
            return self._tasks.get(identity, params.task_id)
        if method == "tasks/result":
            return await self._tasks.result(identity, params.task_id)
        if method == "tasks/cancel":
            return await self._tasks.cancel(identity, params.task_id)
        return self._tasks.list(identity, params.cursor, self._page_size)
