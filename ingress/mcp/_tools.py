"""tools/list and tools/call: a workspace's enabled actions as MCP tools, run through Kafka."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import orjson
from mcp_types import (
    INVALID_PARAMS,
    CallToolResult,
    ListToolsResult,
    TextContent,
    Tool,
    ToolAnnotations,
    ToolExecution,
)
from pydantic import ValidationError

from core.errors import KafkaUnavailable
from core.telemetry import current_trace_id
from ingress._http import ANSWER_MARGIN, time_left
from ingress.actions import ArgumentsInvalid, UnknownAction, tool_schema
from ingress.contracts import Identity, Services
from ingress.errors import Forbidden, IngressError
from schemas import ActionConfig, Command, CommandSource, Result, command_id_for
from workers.connectors import CONNECTORS, Operation

from ._in_flight import CLIENT_GONE, CallsInFlight
from ._jsonrpc import FORBIDDEN, RATE_LIMITED, UNAUTHORIZED, UNAVAILABLE, RpcError

__all__ = [
    "ANSWER_MARGIN",
    "IDEMPOTENCY_META_KEY",
    "ToolRunner",
    "check_claims",
    "pending_result",
    "result_to_call_result",
    "rpc_from_ingress_error",
    "unavailable_error",
]

logger = logging.getLogger(__name__)

IDEMPOTENCY_META_KEY = "switchyard/idempotency_key"
_TENANT_CLAIMS = ("tenant_id", "tenantId", "tenant", "switchyard/tenant_id", "switchyard/tenant")
_SPACE_CLAIMS = ("space_id", "spaceId", "switchyard/space_id", "switchyard/space")


def check_claims(identity: Identity, *scopes: dict[str, Any] | None) -> None:
    """Refuse a request whose ``_meta`` or arguments claim another tenant or workspace.

    The tenant comes from the API key only; a body naming another one is an attempt to
    act for someone else, so it is refused before anything is published.

    Raises:
        ingress.errors.Forbidden: a claim disagrees with the authenticated identity.
    """
    for scope in scopes:
        if not isinstance(scope, dict):
            continue
        for key in _TENANT_CLAIMS:
            if key in scope and scope[key] != identity.tenant_id:
                raise Forbidden(f"'{key}' names another tenant than the API key's")
        for key in _SPACE_CLAIMS:
            if key in scope and scope[key] != identity.space_id:
                raise Forbidden(f"'{key}' names another workspace than the request's")


class InvalidArguments(RpcError):
    """Tool arguments that break the tool's input schema.

    A protocol error (-32602) on 2025-03-26 and 2025-06-18; from 2025-11-25 on (SEP-1303) a tool
    execution error, so that the model reads the message and corrects its call.
    """

    def __init__(self, message: str) -> None:
        super().__init__(INVALID_PARAMS, message)

    def as_tool_result(self) -> CallToolResult:
        return CallToolResult(content=[TextContent(text=self.message)], is_error=True)


def unavailable_error(why: str) -> RpcError:
    """The JSON-RPC error (503, retry after 1 s) for a broker that did not answer."""
    return RpcError(
        UNAVAILABLE, f"Service unavailable: {why}", status=503, headers={"Retry-After": "1"}
    )


def rpc_from_ingress_error(
    exc: IngressError | KafkaUnavailable, *, submitted: tuple[Identity, str] | None = None
) -> RpcError:
    """The JSON-RPC error (and HTTP status) for an edge error.

    ``submitted``: the caller and idempotency key of a command whose publish failed. The
    broker may still have taken it (a timeout is no refusal), so the error names the key
    to retry with (in ``data`` and, for a model reading only the text, the message): a
    retry without it would get a new key and could run the action twice.
    """
    if isinstance(exc, KafkaUnavailable):
        if submitted is None:
            return unavailable_error("the message broker did not answer; retry")
        identity, key = submitted
        error = unavailable_error(
            "the message broker did not confirm the command, which may still run; retry "
            f"with _meta[\"{IDEMPOTENCY_META_KEY}\"] = \"{key}\" and it runs at most once"
        )
        error.data = {
            "idempotency_key": key,
            "command_id": command_id_for(identity.tenant_id, identity.space_id, key),
        }
        return error
    # Other refusals (400 bad request, 409 idempotency conflict, 413) concern the params.
    code = {401: UNAUTHORIZED, 403: FORBIDDEN, 429: RATE_LIMITED, 503: UNAVAILABLE}.get(
        exc.status, INVALID_PARAMS
    )
    # The REST API's error details (a conflict's command_id), for programs.
    data = dict(exc.details) if exc.details else None
    return RpcError(code, exc.message, data=data, status=exc.status, headers=exc.headers())


def _tool_meta(
    command_id: str,
    status: str,
    *,
    connector: str | None = None,
    operation: str | None = None,
    trace_id: str | None = None,
) -> dict[str, Any]:
    meta = {
        "switchyard/command_id": command_id,
        "switchyard/status": status,
        "switchyard/connector": connector,
        "switchyard/operation": operation,
        "switchyard/trace_id": trace_id,
    }
    return {key: value for key, value in meta.items() if value is not None}


def result_to_call_result(result: Result) -> CallToolResult:
    """A final Result as the tool's answer: output on success, ``isError`` otherwise."""
    meta = _tool_meta(
        result.command_id,
        result.status.value,
        connector=result.connector,
        operation=result.operation,
        trace_id=result.trace_id,
    )
    if result.ok:
        output = result.output if result.output is not None else {}
        return CallToolResult(
            content=[TextContent(text=orjson.dumps(output).decode())],
            structured_content=output,
            is_error=False,
            _meta=meta,
        )
    if result.error is not None:
        detail = f"{result.error.code.value}: {result.error.message}"
        if result.error.retryable:
            detail += " (retryable)"
    else:
        detail = "no error detail"
    text = f"Command {result.command_id} ended {result.status.value}. {detail}"
    return CallToolResult(content=[TextContent(text=text)], is_error=True, _meta=meta)


def pending_result(command: Command, waited: float, trace_id: str | None) -> CallToolResult:
    """The answer when the Result did not arrive in time: the command still runs."""
    key = command.idempotency_key
    text = (
        f"Command {command.command_id} is still running after {waited:g}s. It is accepted "
        "(durable in Kafka) and will finish without this call. Do not call the tool again "
        "as a new call: that would run it twice. Calling it again with the same arguments and "
        f"_meta {orjson.dumps({IDEMPOTENCY_META_KEY: key}).decode()} answers with this command's result "
        f"(or this note while it runs). Or fetch it with tasks/get and tasks/result (taskId "
        f"{command.command_id}, protocol 2025-11-25) or GET /v1/commands/{command.command_id}."
    )
    meta = {**_tool_meta(command.command_id, "pending", trace_id=trace_id), IDEMPOTENCY_META_KEY: key}
    return CallToolResult(content=[TextContent(text=text)], is_error=True, _meta=meta)


def _command_trace_id(command: Command) -> str | None:
    if command.spans:
        return command.spans[0].trace_id
    return current_trace_id()


def _operation(action: ActionConfig) -> Operation | None:
    kind = CONNECTORS.get(action.connector)
    return kind.operations.get(action.operation) if kind is not None else None


def _output_schema(action: ActionConfig) -> dict[str, Any] | None:
    """The shape of the tool's ``structuredContent``: its connector operation's output
    (the workspace maps arguments only), for clients that check it and models that read it."""
    operation = _operation(action)
    if operation is None or operation.output_schema is None:
        return None
    return dict(operation.output_schema)


def _annotations(action: ActionConfig) -> ToolAnnotations | None:
    """What calling the tool does, from its connector operation: clients assume a tool
    without annotations may destroy data and reach outside, and ask before each call."""
    operation = _operation(action)
    if operation is None:
        return None
    return ToolAnnotations(
        read_only_hint=operation.read_only,
        destructive_hint=operation.destructive,
        # A new call is a new command (a second message); a retry with the same
        # idempotency key is not, but clients cannot know to send one.
        idempotent_hint=False,
        open_world_hint=True,  # every call acts on the tenant's app, outside Switchyard
    )


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset})).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = data["o"]
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise RpcError(INVALID_PARAMS, "Invalid cursor") from exc
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise RpcError(INVALID_PARAMS, "Invalid cursor")
    return offset




class ToolRunner:
    """Lists a caller's tools and runs tool calls as Kafka commands."""

    def __init__(self, services: Services, *, page_size: int, call_timeout: float) -> None:
        self._services = services
        self._page_size = page_size
        self._call_timeout = call_timeout
        # The same checks (and compiled validators) as the REST API's.
        self.actions = services.actions
        self.in_flight = CallsInFlight()
        # Cancellations of calls whose clients disconnected, published after the handler.
        self._cancelling: set[asyncio.Task[None]] = set()

    def _actions(self, identity: Identity) -> list[ActionConfig]:
        workspace = self._services.catalog.workspace(identity.tenant_id, identity.space_id)
        if workspace is None:
            return []
        # What the caller's role may call: the router would refuse the rest.
        return [
            action for action in workspace.actions
            if action.enabled and workspace.refusal(identity.role, action) is None
        ]

    def list_tools(
        self, identity: Identity, cursor: str | None, *, tasks: bool, output_schemas: bool
    ) -> ListToolsResult:
        """One page of the caller's tools.

        Raises:
            RpcError: -32602 for a cursor this server did not issue.
        """
        actions = self._actions(identity)
        offset = 0 if cursor is None else _decode_cursor(cursor)
        if offset > len(actions):
            raise RpcError(INVALID_PARAMS, "Invalid cursor")
        page = actions[offset : offset + self._page_size]
        tools = [
            Tool(
                name=action.name,
                description=action.description or None,
                input_schema=tool_schema(action),
                output_schema=_output_schema(action) if output_schemas else None,
                annotations=_annotations(action),
                # Every call becomes a Kafka command, so each tool can run as a task.
                execution=ToolExecution(task_support="optional") if tasks else None,
            )
            for action in page
        ]
        end = offset + len(page)
        return ListToolsResult(
            tools=tools, next_cursor=_encode_cursor(end) if end < len(actions) else None
        )

    def resolve(self, identity: Identity, name: str, arguments: dict[str, Any]) -> ActionConfig:
        """The enabled action called ``name``, with ``arguments`` checked against its schema.

        Raises:
            RpcError: -32602 for an unknown or disabled tool, or one the caller's role may
                not call (as tools/list shows); 403 for an argument the tool
                does not declare that claims another tenant or workspace.
            InvalidArguments: arguments that do not match the tool's input schema.
        """
        try:
            action, check = self.actions.action(identity, name)
        except UnknownAction:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name}") from None
        # An argument the tool declares is the target app's data (a Jira "tenant", a
        # Confluence "space_id"); any other tenant or workspace key is a claim.
        try:
            check_claims(identity, action.undeclared(arguments))
        except IngressError as exc:
            raise rpc_from_ingress_error(exc) from exc
        try:
            self.actions.validate(check, arguments)
        except ArgumentsInvalid as exc:
            raise InvalidArguments(f"Invalid arguments for tool {name} at {exc.where}: {exc.why}") from None
        return action

    async def submit(
        self,
        identity: Identity,
        action: ActionConfig,
        arguments: dict[str, Any],
        meta: dict[str, Any] | None,
        *,
        task_ttl: int | None = None,
    ) -> tuple[Command, bool]:
        """Publish the call as a command (durable in Kafka on return); ``task_ttl`` for a
        task. Returns the command and whether this call published it (not a replay).

        Raises:
            RpcError: bad idempotency key or arguments (-32602), rate limit (429),
                Kafka unavailable (503) or another edge refusal.
        """
        key = (meta or {}).get(IDEMPOTENCY_META_KEY)
        if key is not None and (
            not isinstance(key, str)
            or not 0 < len(key) <= 255
            or not key.isascii()
            or not key.isprintable()
            or " " in key
        ):
            raise RpcError(
                INVALID_PARAMS, f"'{IDEMPOTENCY_META_KEY}' must be 1-255 visible ASCII characters"
            )
        idempotency_key = key if key is not None else f"mcp-{secrets.token_hex(16)}"
        publish = self._services.pipeline.submit(
            identity,
            action.name,
            arguments,
            source=CommandSource.MCP,
            idempotency_key=idempotency_key,
            task_ttl=task_ttl,
        )
        try:
            # Shielded: once the caller is gone the publish still finishes, so the command
            # is either fully accepted or not at all, never abandoned half-way.
            command, created = await asyncio.shield(publish)
        except (IngressError, KafkaUnavailable) as exc:
            raise rpc_from_ingress_error(exc, submitted=(identity, idempotency_key)) from exc
        except (ValidationError, ValueError) as exc:
            raise RpcError(INVALID_PARAMS, f"Invalid tool call: {exc}".splitlines()[0]) from exc
        return command, created

    async def wait(self, identity: Identity, command: Command, *, own: bool = True) -> CallToolResult:
        """The tool's answer: the Result if it arrives in time, else "still running".

        The wait ends before the edge would cut the request (a slow publish took some of
        it): a cut request is answered with no JSON-RPC id, and the caller, with no
        command id either, would send the command again. A client giving up on the call
        cancels its command only when ``own``: this call published it, not a replay of
        its idempotency key (the key's first call, or another waiter, still wants it;
        and a retry after a dropped connection must not find its command cancelled).
        """
        left = time_left(margin=ANSWER_MARGIN)
        timeout = self._call_timeout if left is None else min(self._call_timeout, left)
        try:
            with self.in_flight.waiting(identity, command.command_id) if own else contextlib.nullcontext():
                result = await self._services.pipeline.wait(identity, command.command_id, timeout)
        except asyncio.CancelledError:
            gone = CLIENT_GONE.get()
            if own and gone is not None and gone():
                # 2026-07-28: the client closed the call's stream, its cancellation.
                cancelling = asyncio.create_task(self.cancel(identity, "tools/call", command.command_id))
                self._cancelling.add(cancelling)
                cancelling.add_done_callback(self._cancelling.discard)
            raise
        if result is None:
            return pending_result(command, round(timeout, 1), _command_trace_id(command))
        call_result = result_to_call_result(result)
        if result.trace_id is None and (trace_id := _command_trace_id(command)) is not None:
            assert call_result.meta is not None
            call_result.meta["switchyard/trace_id"] = trace_id
        return call_result

    async def cancel(self, identity: Identity, request: str, command_id: str) -> None:
        """Cancel the command of a call its client gave up on (``notifications/cancelled``).

        A notification has no answer: the broker's refusal is logged, not raised.
        """
        try:
            # Paid for by the call's own submit: a full bucket must not drop it.
            await self._services.pipeline.cancel(identity, command_id, datetime.now(UTC), charged=False)
        except (IngressError, KafkaUnavailable) as exc:
            logger.info("could not cancel the command of a cancelled %s (%s)", request, type(exc).__name__)
