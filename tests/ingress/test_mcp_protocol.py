"""MCP endpoint protocol tests against in-memory fakes of Authenticator, Catalog, Pipeline.

The transport, the three protocol revisions, sessions, tasks and every edge case run on
a real aiohttp server on 127.0.0.1, driven by the official MCP Python SDK client and by
hand-made requests. The Kafka-backed pipeline is covered in test_mcp_kafka.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx2
import pytest
from _cycles import CyclicGarbage
from aiohttp import web
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from multidict import CIMultiDict

from core.errors import KafkaUnavailable
from ingress._http import LIMITS, Limits, error_middleware
from ingress.contracts import Identity, Services
from ingress.errors import Conflict, Forbidden, RateLimited, Unauthorized
from ingress.mcp import McpOptions, setup
from schemas import (
    ActionConfig,
    Command,
    CommandSource,
    ErrorCode,
    ErrorInfo,
    Result,
    ResultStatus,
    StageTimes,
    WorkspaceConfig,
    command_id_for,
)

MODERN = "2026-07-28"
# "auto" probes server/discover, which this server answers, so it lands on the stateless one.
EXPECTED_VERSION = {"legacy": "2025-11-25", MODERN: MODERN, "auto": MODERN}
CLIENT_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
}


# -- fakes -----------------------------------------------------------------------------


@dataclass
class FakeAuth:
    keys: dict[str, tuple[str, list[str]]]

    def authenticate(self, bearer: str | None, space_id: str | None) -> Identity:
        if bearer is None or bearer not in self.keys:
            raise Unauthorized("missing or invalid API key")
        tenant, spaces = self.keys[bearer]
        if space_id is None:
            if len(spaces) != 1:
                raise Forbidden("choose a workspace")
            space_id = spaces[0]
        if space_id not in spaces:
            raise Forbidden("this key does not own that workspace")
        return Identity(tenant, space_id, f"user_{tenant}", "member", f"kid{tenant}")


@dataclass
class FakeCatalog:
    spaces: dict[tuple[str, str], WorkspaceConfig]

    def workspace(self, tenant_id: str, space_id: str) -> WorkspaceConfig | None:
        return self.spaces.get((tenant_id, space_id))


def slack_output(command: Command) -> dict[str, Any]:
    """What chat.postMessage gives (the tools' operation): the shape of their outputSchema."""
    return {"channel": "C0123ABCD", "ts": f"{len(command.arguments.get('text', ''))}.000001"}


def make_result(
    command: Command, *, ok: bool = True, output: dict[str, Any] | None = None
) -> Result:
    now = datetime.now(UTC)
    return Result(
        command_id=command.command_id,
        tenant_id=command.tenant_id,
        space_id=command.space_id,
        user_id=command.user_id,
        action=command.action,
        idempotency_key=command.idempotency_key,
        status=ResultStatus.SUCCEEDED if ok else ResultStatus.FAILED,
        connector="slack",
        operation="chat.postMessage",
        output=(output if output is not None else slack_output(command)) if ok else None,
        error=None
        if ok
        else ErrorInfo(code=ErrorCode.UPSTREAM_REJECTED, message="channel_not_found"),
        attempts=1,
        times=StageTimes(submitted_at=command.submitted_at, finished_at=now),
        trace_id="ab" * 16,
    )


@dataclass
class FakePipeline:
    """Publishes to a list; ``responder`` decides each command's Result (None: pending)."""

    responder: Callable[[Command], Result | None] = make_result
    published: list[Command] = field(default_factory=list)
    results: dict[tuple[str, str], Result] = field(default_factory=dict)
    pending: dict[tuple[str, str], Command] = field(default_factory=dict)
    cancels: list[tuple[str, str]] = field(default_factory=list)
    uncharged_cancels: int = 0  # cancellations the edge rate did not count (a call's own)
    forgotten_ids: set[tuple[str, str]] = field(default_factory=set)  # finished, Result let go of
    cancel_error: Exception | None = None
    submit_error: Exception | None = None  # raised by every submit
    _seen_keys: dict[tuple[str, str], Command] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def submit(
        self,
        identity: Identity,
        action: str,
        arguments: dict[str, Any],
        *,
        source: CommandSource,
        idempotency_key: str | None = None,
        deadline: datetime | None = None,
        task_ttl: int | None = None,
    ) -> tuple[Command, bool]:
        if self.submit_error is not None:
            raise self.submit_error
        key = idempotency_key or uuid.uuid4().hex
        if (identity.tenant_id, key) in self._seen_keys:
            return self._seen_keys[(identity.tenant_id, key)], False
        now = datetime.now(UTC)
        command = Command(
            command_id=uuid.uuid4().hex,
            tenant_id=identity.tenant_id,
            space_id=identity.space_id,
            user_id=identity.user_id,
            role=identity.role,
            action=action,
            arguments=arguments,
            idempotency_key=key,
            submitted_at=now,
            deadline=deadline or now + timedelta(minutes=5),
            source=source,
        )
        self._seen_keys[(identity.tenant_id, key)] = command
        self.published.append(command)
        result = self.responder(command)
        if result is None:
            self.pending[(identity.tenant_id, command.command_id)] = command
        else:
            self.results[(identity.tenant_id, command.command_id)] = result
        return command, True

    def finish(self, result: Result) -> None:
        self.pending.pop((result.tenant_id, result.command_id), None)
        self.results[(result.tenant_id, result.command_id)] = result
        self._arrived.set()
        self._arrived = asyncio.Event()

    # The Pipeline protocol's signature takes a timeout.
    async def wait(
        self,
        identity: Identity,
        command_id: str,
        timeout: float,  # noqa: ASYNC109
    ) -> Result | None:
        try:
            async with asyncio.timeout(timeout):
                for _ in range(10_000):
                    if (found := self.peek(identity, command_id)) is not None:
                        return found
                    await self._arrived.wait()
        except TimeoutError:
            return None
        return None

    # Visible to its tenant and workspace only, as KafkaPipeline's are.
    def peek(self, identity: Identity, command_id: str) -> Result | None:
        found = self.results.get((identity.tenant_id, command_id))
        return found if found is not None and found.space_id == identity.space_id else None

    def known(self, identity: Identity, command_id: str) -> Command | None:
        found = self.pending.get((identity.tenant_id, command_id))
        return found if found is not None and found.space_id == identity.space_id else None

    def forgotten(self, identity: Identity, command_id: str) -> bool:
        return (identity.tenant_id, command_id) in self.forgotten_ids

    async def cancel(self, identity: Identity, command_id: str, at: datetime, *, charged: bool = True) -> None:
        if self.cancel_error is not None:
            raise self.cancel_error
        self.cancels.append((identity.tenant_id, command_id))
        self.uncharged_cancels += not charged


def _action(name: str, **schema: Any) -> ActionConfig:
    return ActionConfig(
        name=name,
        description=f"{name} for tests",
        input_schema={"type": "object", **schema},
        connector="slack",
        operation="chat.postMessage",
    )


SLACK: dict[str, Any] = {"slack": {}}


def _catalog() -> FakeCatalog:
    text_schema = {"properties": {"text": {"type": "string"}}, "required": ["text"]}
    acme = WorkspaceConfig(
        tenant_id="acme",
        space_id="main",
        connectors=SLACK,
        actions=[
            _action("daily_summary", **text_schema),
            _action("create_task"),
            ActionConfig(name="disabled_one", connector="slack", operation="x", enabled=False),
        ],
    )
    beta = WorkspaceConfig(
        tenant_id="beta", space_id="ops", connectors=SLACK, actions=[_action("open_ticket")]
    )
    many = WorkspaceConfig(
        tenant_id="acme", space_id="big", connectors=SLACK, actions=[_action(f"tool_{i:03d}") for i in range(7)]
    )
    # The target app's own "tenant" (an Atlassian site) and "space_id" (Confluence).
    declared = {"tenant": {"type": "string"}, "space_id": {"type": "string"}}
    admin_only = _action("rotate_keys").model_copy(update={"roles": ["admin"]})
    on_gmail = _action("send_mail").model_copy(update={"connector": "gmail"})  # not enabled here
    jira = WorkspaceConfig(
        tenant_id="acme",
        space_id="jira",
        connectors=SLACK,
        actions=[_action("file_issue", properties=declared), _action("create_task"), admin_only, on_gmail],
    )
    # Configured past the admin API's checks (straight onto the config topic).
    broken = _action("broken").model_copy(update={"input_schema": {"type": "object", "required": "text"}})
    odd = WorkspaceConfig(tenant_id="acme", space_id="odd", connectors=SLACK, actions=[broken, _action("fine")])
    return FakeCatalog(
        {("acme", "main"): acme, ("beta", "ops"): beta, ("acme", "big"): many, ("acme", "jira"): jira,
         ("acme", "odd"): odd}
    )  # fmt: skip


@dataclass
class Server:
    url: str
    pipeline: FakePipeline
    base: str
    runner: web.AppRunner


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for item in _serve(
        McpOptions(session_secret="test-secret", call_timeout=2.0, page_size=3)
    ):
        yield item


async def _serve(
    options: McpOptions, allowed: tuple[str, ...] = (), *, limits: Limits | None = None
) -> AsyncIterator[Server]:
    pipeline = FakePipeline()
    auth = FakeAuth({"key-acme": ("acme", ["main", "big", "jira", "odd"]), "key-beta": ("beta", ["ops"])})
    # With limits, the ingress's edge (its error middleware and request timeout) in front.
    app = web.Application(middlewares=[error_middleware] if limits is not None else [])
    if limits is not None:
        app[LIMITS] = limits
    setup(app, Services(auth, _catalog(), pipeline, allowed_origins=allowed), options=options)
    # As `switchyard ingress` runs it (but a short shutdown: nothing waits for the calls).
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        yield Server(f"{base}/mcp", pipeline, base, runner)
    finally:
        await runner.cleanup()


def _client(url: str, key: str, mode: str, space: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {key}"}
    if space is not None:
        headers["X-Switchyard-Space"] = space
    http = httpx2.AsyncClient(headers=headers, timeout=20)
    return Client(streamable_http_client(url, http_client=http), mode=mode)


async def _post(
    url: str,
    body: Any,
    *,
    key: str | None = "key-acme",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    sent.update(headers or {})
    async with aiohttp.ClientSession() as http:
        data = raw if raw is not None else None
        kwargs: dict[str, Any] = {"data": data} if raw is not None else {"json": body}
        async with http.post(url, headers=sent, **kwargs) as response:
            text = await response.read()
            parsed = None
            if response.content_type == "application/json" and text:
                parsed = await response.json()
            elif text:
                parsed = text.decode()
            return response.status, dict(response.headers), parsed


def _rpc(method: str, params: dict[str, Any] | None = None, rid: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        body["params"] = params
    return body


async def _initialize(
    url: str, version: str = "2025-11-25", key: str = "key-acme"
) -> tuple[str, dict[str, Any]]:
    params = {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }
    status, headers, body = await _post(url, _rpc("initialize", params), key=key)
    assert status == 200, body
    return headers["Mcp-Session-Id"], body["result"]


def _legacy(session: str, version: str = "2025-11-25") -> dict[str, str]:
    return {"Mcp-Session-Id": session, "MCP-Protocol-Version": version}


def _modern(method: str, name: str | None = None) -> dict[str, str]:
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


# -- the official SDK client -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", MODERN, "auto"])
async def test_sdk_client_lists_only_its_own_workspace_tools(server: Server, mode: str) -> None:
    async with _client(server.url, "key-acme", mode, space="main") as acme:
        acme_tools = await acme.list_tools()
        assert acme.protocol_version == EXPECTED_VERSION[mode]
    async with _client(f"{server.url}/ops", "key-beta", mode) as beta:
        beta_tools = await beta.list_tools()
    assert [tool.name for tool in acme_tools.tools] == ["daily_summary", "create_task"]
    assert acme_tools.tools[0].description == "daily_summary for tests"
    assert acme_tools.tools[0].input_schema["required"] == ["text"]
    assert [tool.name for tool in beta_tools.tools] == ["open_ticket"]


@pytest.mark.parametrize("mode", ["legacy", MODERN, "auto"])
async def test_sdk_client_calls_a_tool_and_gets_output_and_command_meta(
    server: Server, mode: str
) -> None:
    async with _client(f"{server.url}/main", "key-acme", mode) as client:
        result = await client.call_tool("daily_summary", {"text": "hello"})
    assert result.is_error is False
    assert result.structured_content == {"channel": "C0123ABCD", "ts": "5.000001"}
    assert result.content[0].text == '{"channel":"C0123ABCD","ts":"5.000001"}'
    (command,) = server.pipeline.published
    assert command.source == CommandSource.MCP and command.tenant_id == "acme"
    assert result.meta is not None
    assert result.meta["switchyard/command_id"] == command.command_id
    assert result.meta["switchyard/connector"] == "slack"
    assert result.meta["switchyard/operation"] == "chat.postMessage"
    assert result.meta["switchyard/trace_id"] == "ab" * 16
    assert result.meta["switchyard/status"] == "succeeded"


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_failed_command_is_an_is_error_result_with_code_and_message(
    server: Server, mode: str
) -> None:
    server.pipeline.responder = lambda command: make_result(command, ok=False)
    async with _client(f"{server.url}/main", "key-acme", mode) as client:
        result = await client.call_tool("create_task", {})
    assert result.is_error is True
    assert "upstream_rejected: channel_not_found" in result.content[0].text
    assert result.meta is not None and result.meta["switchyard/status"] == "failed"


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_unknown_or_disabled_tool_is_invalid_params_and_publishes_nothing(
    server: Server, mode: str
) -> None:
    async with _client(f"{server.url}/main", "key-acme", mode) as client:
        for name in ("no_such_tool", "disabled_one", "open_ticket"):
            with pytest.raises(MCPError) as caught:
                await client.call_tool(name, {})
            assert caught.value.code == -32602
    assert server.pipeline.published == []


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_arguments_violating_the_schema_are_a_tool_error_the_model_can_read(
    server: Server, mode: str
) -> None:
    # SEP-1303 (2025-11-25 on): the message reaches the model, which can correct its call.
    async with _client(f"{server.url}/main", "key-acme", mode) as client:
        result = await client.call_tool("daily_summary", {"text": 42})
    assert result.is_error and "text" in result.content[0].text
    assert result.content[0].text.endswith('at text: expected type "string"')
    assert server.pipeline.published == []


async def test_on_2025_06_18_arguments_violating_the_schema_are_invalid_params(server: Server) -> None:
    session, _ = await _initialize(f"{server.url}/main", version="2025-06-18")
    params = {"name": "daily_summary", "arguments": {"text": 42}}
    status, _, body = await _post(
        f"{server.url}/main", _rpc("tools/call", params), headers=_legacy(session, "2025-06-18")
    )
    assert status == 200 and body["error"]["code"] == -32602 and "text" in body["error"]["message"]
    assert server.pipeline.published == []


async def _listed_tool(server: Server, version: str, name: str) -> dict[str, Any]:
    """Tool ``name`` as tools/list shows it to a client of ``version`` (workspace main)."""
    if version == MODERN:
        _, _, listed = await _post(f"{server.url}/main", _rpc("tools/list", {"_meta": CLIENT_META}),
                                   headers=_modern("tools/list"))
    else:
        session, _ = await _initialize(f"{server.url}/main", version=version)
        _, _, listed = await _post(f"{server.url}/main", _rpc("tools/list"), headers=_legacy(session, version))
    (tool,) = [t for t in listed["result"]["tools"] if t["name"] == name]
    return tool


@pytest.mark.parametrize("version", ["2025-03-26", "2025-11-25", MODERN])
async def test_tools_say_what_a_call_does_so_clients_need_not_assume_the_worst(server: Server, version: str) -> None:
    # Without annotations a client assumes a tool may destroy data and asks before every
    # call; a Slack post creates and overwrites nothing, and acts outside Switchyard.
    tool = await _listed_tool(server, version, "daily_summary")
    assert tool["annotations"] == {
        "readOnlyHint": False, "destructiveHint": False, "idempotentHint": False, "openWorldHint": True
    }


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25", MODERN])
async def test_tools_declare_the_shape_of_their_structured_output_from_2025_06_18(
    server: Server, version: str
) -> None:
    # Structured output came with 2025-06-18; a model reads the shape, a client checks
    # each successful call's structuredContent against it.
    tool = await _listed_tool(server, version, "daily_summary")
    if version == "2025-03-26":
        assert "outputSchema" not in tool
        return
    schema = tool["outputSchema"]
    assert schema["type"] == "object" and schema["required"] == ["channel", "ts"]
    assert set(schema["properties"]) == {"channel", "ts", "thread_ts"}


async def test_a_2025_03_26_client_is_served_in_its_own_revision(server: Server) -> None:
    # The newest revision of the Python SDK before 1.10 and of older TypeScript SDKs: they
    # refuse a counter-offer of a newer one, and send no MCP-Protocol-Version header.
    session, result = await _initialize(f"{server.url}/main", version="2025-03-26")
    assert result["protocolVersion"] == "2025-03-26" and "tasks" not in result["capabilities"]
    headers = {"Mcp-Session-Id": session}
    status, _, listed = await _post(f"{server.url}/main", _rpc("tools/list"), headers=headers)
    assert status == 200 and any(t["name"] == "daily_summary" for t in listed["result"]["tools"])
    bad = {"name": "daily_summary", "arguments": {"text": 42}}
    status, _, body = await _post(f"{server.url}/main", _rpc("tools/call", bad), headers=headers)
    assert status == 200 and body["error"]["code"] == -32602  # as 2025-06-18, not a tool result
    status, _, body = await _post(f"{server.url}/main", _rpc("tasks/list"), headers=headers)
    assert body["error"]["code"] == -32601
    status, _, body = await _post(
        f"{server.url}/main", _rpc("tools/list"), headers={**headers, "MCP-Protocol-Version": "2025-03-26"}
    )
    assert status == 200 and "tools" in body["result"]


async def test_a_call_asking_for_a_task_with_bad_arguments_is_an_error_not_a_tool_result(
    server: Server,
) -> None:
    # A receiver that accepts a task-augmented request answers with a CreateTaskResult;
    # with nothing to run, the answer is the JSON-RPC error, never a CallToolResult.
    session, _ = await _initialize(f"{server.url}/main")
    params = {"name": "daily_summary", "arguments": {"text": 42}, "task": {"ttl": 60_000}}
    status, _, body = await _post(f"{server.url}/main", _rpc("tools/call", params), headers=_legacy(session))
    assert status == 200 and "result" not in body
    assert body["error"]["code"] == -32602 and "text" in body["error"]["message"]
    assert server.pipeline.published == []


async def test_an_empty_space_header_counts_as_not_given(server: Server) -> None:
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    status, _, body = await _post(
        server.url, _rpc("initialize", params), key="key-beta", headers={"X-Switchyard-Space": ""}
    )
    assert status == 200 and body["result"]["protocolVersion"] == "2025-11-25", body


async def test_a_rejected_argument_value_is_not_echoed_back(server: Server) -> None:
    pasted = {"text": ["xoxb-pasted-secret-value"]}
    async with _client(f"{server.url}/main", "key-acme", "legacy") as client:
        result = await client.call_tool("daily_summary", pasted)
    assert result.is_error and "pasted-secret" not in result.content[0].text


async def test_a_call_past_the_deadline_says_the_command_still_runs() -> None:
    async for srv in _serve(McpOptions(session_secret="s", call_timeout=0.2)):
        srv.pipeline.responder = lambda command: None
        async with _client(f"{srv.url}/main", "key-acme", MODERN) as client:
            result = await client.call_tool("create_task", {})
        (command,) = srv.pipeline.published
        assert result.is_error is True
        assert (
            command.command_id in result.content[0].text
            and "still running" in result.content[0].text
        )
        assert result.meta is not None and result.meta["switchyard/status"] == "pending"
        # The key to call again with, so that a retry (an agent's, on isError) waits for
        # this command instead of running the action a second time.
        key = command.idempotency_key
        assert result.meta["switchyard/idempotency_key"] == key and f'"{key}"' in result.content[0].text
        async with _client(f"{srv.url}/main", "key-acme", MODERN) as client:
            again = await client.call_tool("create_task", {}, meta={"switchyard/idempotency_key": key})
        assert again.meta is not None and again.meta["switchyard/command_id"] == command.command_id
        assert len(srv.pipeline.published) == 1


async def test_a_slow_publish_shortens_the_wait_so_the_call_is_answered_before_the_edge_cuts_it() -> None:
    class SlowBroker(FakePipeline):
        async def submit(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.6)
            return await super().submit(*args, **kwargs)

    limits = Limits(request_timeout=2.0)
    async for srv in _serve(McpOptions(session_secret="s", call_timeout=1.6), limits=limits):
        srv.pipeline.__class__ = SlowBroker
        srv.pipeline.responder = lambda command: None
        session, _ = await _initialize(f"{srv.url}/main")
        status, _, body = await _post(
            f"{srv.url}/main", _rpc("tools/call", {"name": "create_task", "arguments": {}}, rid=7),
            headers=_legacy(session),
        )  # fmt: skip
        (command,) = srv.pipeline.published
        assert status == 200 and body["id"] == 7, body  # not the edge's 503 without an id
        result = body["result"]
        assert result["isError"] is True and command.command_id in result["content"][0]["text"]


async def test_idempotency_key_in_meta_replays_the_same_command(server: Server) -> None:
    meta = {"switchyard/idempotency_key": "order-17"}
    async with _client(f"{server.url}/main", "key-acme", MODERN) as client:
        first = await client.call_tool("create_task", {}, meta=meta)
        second = await client.call_tool("create_task", {}, meta=meta)
    assert first.meta is not None and second.meta is not None
    assert first.meta["switchyard/command_id"] == second.meta["switchyard/command_id"]
    assert len(server.pipeline.published) == 1


async def test_a_call_the_broker_did_not_confirm_is_an_error_naming_the_key_to_retry_with(server: Server) -> None:
    # A timed-out publish may still land: a retry under a new key could run the action
    # twice, so the error says which key the command has (the REST API does the same).
    server.pipeline.submit_error = KafkaUnavailable("no answer in 30 s")
    for meta, given in (({}, None), ({"switchyard/idempotency_key": "order-18"}, "order-18")):
        status, headers, body = await _post(
            f"{server.url}/main",
            _rpc("tools/call", {"name": "create_task", "arguments": {}, "_meta": {**CLIENT_META, **meta}}, rid=3),
            headers=_modern("tools/call", "create_task"),
        )
        # 200, as a method's error: TypeScript clients read no JSON-RPC error from a 503.
        assert status == 200 and headers["Retry-After"] == "1" and body["id"] == 3, body
        assert body["error"]["code"] == -32013
        error = body["error"]
        key = error["data"]["idempotency_key"]
        assert key == given if given else key.startswith("mcp-")
        assert error["data"]["command_id"] == command_id_for("acme", "main", key)
        assert f'"{key}"' in error["message"] and "at most once" in error["message"]


async def test_a_reused_key_names_the_command_it_stands_for(server: Server) -> None:
    conflict = Conflict("this idempotency key was already used for a different command")
    conflict.details = {"command_id": "gbchcaw5ekbwmqzxsblqazfwzq"}
    server.pipeline.submit_error = conflict
    status, _, body = await _post(
        f"{server.url}/main",
        _rpc("tools/call", {"name": "create_task", "arguments": {}, "_meta": dict(CLIENT_META)}, rid=4),
        headers=_modern("tools/call", "create_task"),
    )
    assert status == 400 and body["error"]["code"] == -32602  # the stateless revision's status for it
    assert body["error"]["data"] == {"command_id": "gbchcaw5ekbwmqzxsblqazfwzq"}


# -- spoofing and authentication -------------------------------------------------------


@pytest.mark.parametrize("header", ["Authorization", "X-Switchyard-Tenant", "X-Switchyard-Space"])
async def test_a_repeated_credential_or_scope_header_is_400_and_publishes_nothing(server: Server, header: str) -> None:
    first, second = {
        "Authorization": ("Bearer key-acme", "Bearer key-beta"), "X-Switchyard-Space": ("main", "ops"),
    }.get(header, ("acme", "beta"))
    headers = CIMultiDict(
        {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "Authorization": "Bearer key-acme", **_modern("tools/call", "create_task")}
    )
    headers.popall(header, None)
    headers.add(header, first)
    headers.add(header, second)
    body = _rpc("tools/call", {"name": "create_task", "arguments": {}, "_meta": dict(CLIENT_META)}, rid=5)
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/main", json=body, headers=headers) as response:
        status, answer = response.status, await response.json()
    assert status == 400 and answer["id"] == 5
    assert answer["error"] == {"code": -32600, "message": f"the {header} header appears more than once"}
    assert server.pipeline.published == []


@pytest.mark.parametrize("where", ["meta", "arguments"])
async def test_a_claim_of_another_tenant_is_refused_and_publishes_nothing(
    server: Server, where: str
) -> None:
    params: dict[str, Any] = {"name": "create_task", "arguments": {}, "_meta": dict(CLIENT_META)}
    if where == "meta":
        params["_meta"]["switchyard/tenant_id"] = "beta"
    else:
        params["arguments"]["tenant_id"] = "beta"
    status, _, body = await _post(
        f"{server.url}/main",
        _rpc("tools/call", params, rid=7),
        headers=_modern("tools/call", "create_task"),
    )
    assert status == 200 and body["id"] == 7 and body["error"]["code"] == -32011
    assert server.pipeline.published == []


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_one_action_with_a_broken_schema_does_not_fail_the_whole_tools_list(server: Server, mode: str) -> None:
    async with _client(f"{server.url}/odd", "key-acme", mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"broken", "fine"}
    assert tools["broken"].input_schema == {"type": "object"}


async def test_tools_list_offers_only_what_the_callers_role_may_call(server: Server) -> None:
    # A member may not call the admin-only tool, and nobody the one on a disabled connector:
    # the router would refuse both, so they are not offered.
    async with _client(f"{server.url}/jira", "key-acme", "legacy") as client:
        tools = await client.list_tools()
        # Nor can they be called: an unknown tool, before anything is published.
        for hidden in ("rotate_keys", "send_mail"):
            with pytest.raises(MCPError) as caught:
                await client.call_tool(hidden, {})
            assert caught.value.code == -32602 and "Unknown tool" in str(caught.value), hidden
    assert [tool.name for tool in tools.tools] == ["file_issue", "create_task"]
    assert server.pipeline.published == []


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_arguments_the_tool_declares_are_its_data_not_a_tenant_claim(
    server: Server, mode: str
) -> None:
    async with _client(f"{server.url}/jira", "key-acme", mode) as client:
        result = await client.call_tool("file_issue", {"tenant": "acme-eu.atlassian.net", "space_id": "ENG"})
        assert not result.is_error
        # Not declared by create_task: a claim, refused as before.
        with pytest.raises(MCPError) as caught:
            await client.call_tool("create_task", {"tenant": "beta"})
    assert caught.value.code == -32011
    assert [c.action for c in server.pipeline.published] == ["file_issue"]


async def test_on_a_handshake_revision_a_refused_call_is_a_json_rpc_error_with_http_200(
    server: Server,
) -> None:
    # The Python SDK 1.x client raises on a non-2xx answer and never completes the call;
    # the same refusal on the stateless revision keeps its HTTP status (above).
    session, _ = await _initialize(f"{server.url}/main")
    params = {"name": "create_task", "arguments": {"tenant_id": "beta"}}
    status, _, body = await _post(
        f"{server.url}/main", _rpc("tools/call", params, rid=8), headers=_legacy(session)
    )
    assert status == 200 and body["id"] == 8 and body["error"]["code"] == -32011
    assert server.pipeline.published == []


async def test_sdk_client_with_spoofed_tenant_meta_gets_an_error(server: Server) -> None:
    async with _client(f"{server.url}/main", "key-acme", "legacy") as client:
        with pytest.raises(MCPError):
            await client.call_tool("create_task", {}, meta={"switchyard/tenant_id": "beta"})
    assert server.pipeline.published == []


async def test_tenant_header_claiming_another_tenant_is_403(server: Server) -> None:
    status, _, _ = await _post(
        f"{server.url}/main", _rpc("initialize", {}), headers={"X-Switchyard-Tenant": "beta"}
    )
    assert status == 403


async def test_missing_or_invalid_key_is_401_with_www_authenticate(server: Server) -> None:
    for key in (None, "wrong"):
        status, headers, body = await _post(f"{server.url}/main", _rpc("tools/list"), key=key)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert body["error"]["code"] == -32010 and body["id"] == 1  # the request's own id


async def test_in_a_session_a_refused_caller_is_answered_with_200_and_the_requests_id(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, _ = await _initialize(f"{server.url}/main")

    def busy(self: FakeAuth, bearer: str | None, space_id: str | None) -> Identity:
        raise RateLimited("too many checks of this API key at once; retry shortly", retry_after=1.0)

    monkeypatch.setattr(FakeAuth, "authenticate", busy)
    status, headers, body = await _post(f"{server.url}/main", _rpc("tools/list", rid=9), headers=_legacy(session))
    assert (status, body["id"]) == (200, 9) and body["error"]["message"].startswith("too many checks")
    assert headers["Retry-After"] == "1"
    monkeypatch.undo()
    status, _, body = await _post(f"{server.url}/main", _rpc("tools/list", rid=10), headers=_legacy(session), key=None)
    assert (status, body["id"]) == (401, 10)  # a missing key is still the challenge


async def test_workspace_the_key_does_not_own_is_403(server: Server) -> None:
    status, _, _ = await _post(f"{server.url}/ops", _rpc("tools/list"), key="key-acme")
    assert status == 403


async def test_session_of_another_tenant_is_not_found(server: Server) -> None:
    session, _ = await _initialize(f"{server.url}/main")
    status, _, _ = await _post(
        f"{server.url}/ops", _rpc("tools/list"), key="key-beta", headers=_legacy(session)
    )
    assert status == 404
    status, _, _ = await _post(f"{server.url}/big", _rpc("tools/list"), headers=_legacy(session))
    assert status == 404, "a session is bound to its workspace too"


async def test_forged_session_is_not_found_and_missing_session_is_400(server: Server) -> None:
    session, _ = await _initialize(f"{server.url}/main")
    prefix, payload, mac = session.split(".")
    forged = f"{prefix}.{payload}.{base64.urlsafe_b64encode(b'x' * 32).decode().rstrip('=')}"
    status, _, _ = await _post(f"{server.url}/main", _rpc("tools/list"), headers=_legacy(forged))
    assert status == 404
    status, _, _ = await _post(
        f"{server.url}/main", _rpc("tools/list"), headers={"MCP-Protocol-Version": "2025-11-25"}
    )
    assert status == 400


async def test_session_ids_validate_on_another_replica_with_the_same_key() -> None:
    options = McpOptions(session_secret="shared-secret")
    session = ""
    async for first in _serve(options):
        session, _ = await _initialize(f"{first.url}/main")
    async for second in _serve(options):
        status, _, body = await _post(
            f"{second.url}/main", _rpc("tools/list"), headers=_legacy(session)
        )
        assert status == 200 and len(body["result"]["tools"]) == 2


# -- transport edge cases --------------------------------------------------------------


async def test_parse_error_is_32700_and_never_a_5xx(server: Server) -> None:
    status, _, body = await _post(f"{server.url}/main", None, raw=b"{not json")
    assert status == 400 and body["error"]["code"] == -32700 and body["id"] is None


async def test_a_body_that_is_no_message_leaves_no_reference_cycle(server: Server) -> None:
    """The parse error, kept in a local of the handler's frame and raised from it, held
    that frame (and the request) in a cycle until a full GC collection (core.heap)."""
    await _post(f"{server.url}/main", None, raw=b"{not json")
    with CyclicGarbage() as left:
        for body in ({"jsonrpc": "1.0"}, 42):
            status, _, _ = await _post(f"{server.url}/main", body)
            assert status == 400
    assert "RpcError" not in left.exceptions and "post" not in left.frames


async def test_batch_is_an_invalid_request(server: Server) -> None:
    status, _, body = await _post(
        f"{server.url}/main", [_rpc("tools/list"), _rpc("tools/list", rid=2)]
    )
    assert status == 400 and body["error"]["code"] == -32600 and "Batch" in body["error"]["message"]


@pytest.mark.parametrize(
    "body", [{"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}, {"jsonrpc": "1.0"}, 42]
)
async def test_malformed_envelopes_are_invalid_requests(server: Server, body: Any) -> None:
    status, _, answer = await _post(f"{server.url}/main", body)
    assert status == 400 and answer["error"]["code"] == -32600


async def test_deeply_nested_arguments_are_refused_as_that_requests_error(server: Server) -> None:
    # A model writes the arguments: the refusal answers the call (its id, HTTP 200), so an
    # SDK client's session goes on (the Python SDK 1.x ends it on a non-2xx status).
    nested: Any = 1
    for _ in range(200):
        nested = [nested]
    status, _, body = await _post(
        f"{server.url}/main", _rpc("tools/call", {"name": "x", "arguments": {"a": nested}})
    )
    assert status == 200 and body["error"]["code"] == -32602 and body["id"] == 1
    assert server.pipeline.published == []


async def test_an_integer_past_64_bits_is_refused_not_rounded(server: Server) -> None:
    raw = b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "x", "arguments": {"n": 18446744073709551617}}}'
    status, _, body = await _post(f"{server.url}/main", None, raw=raw)
    assert status == 200 and body["error"]["code"] == -32602 and "64 bits" in body["error"]["message"]
    assert body["id"] == 9
    assert server.pipeline.published == []
    notification = b'{"jsonrpc": "2.0", "method": "notifications/x", "params": {"n": 18446744073709551617}}'
    status, _, body = await _post(f"{server.url}/main", None, raw=notification)
    assert status == 400 and body["error"]["code"] == -32600 and body["id"] is None


async def test_body_over_the_cap_is_413() -> None:
    async for srv in _serve(McpOptions(session_secret="s", max_body_bytes=1000)):
        status, _, _ = await _post(
            f"{srv.url}/main", _rpc("tools/call", {"name": "x", "arguments": {"a": "y" * 5000}})
        )
        assert status == 413


async def test_get_and_delete_are_405(server: Server) -> None:
    # A signed session cannot be ended early: DELETE says so (405) rather than 204.
    session, _ = await _initialize(f"{server.url}/main")
    headers = {"Authorization": "Bearer key-acme"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/main", headers=headers) as response:
            assert response.status == 405 and response.headers["Allow"] == "POST, OPTIONS"
        async with http.delete(
            f"{server.url}/main", headers={**headers, **_legacy(session)}
        ) as response:
            assert response.status == 405 and response.headers["Allow"] == "POST, OPTIONS"
    # The session still works: the client may keep using it.
    status, _, body = await _post(f"{server.url}/main", _rpc("tools/list"), headers=_legacy(session))
    assert status == 200 and "tools" in body["result"]


async def test_notifications_and_responses_are_accepted_with_202(server: Server) -> None:
    session, _ = await _initialize(f"{server.url}/main")
    for message in (
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 5, "result": {}},
    ):
        status, _, body = await _post(f"{server.url}/main", message, headers=_legacy(session))
        assert status == 202 and body is None
    status, _, _ = await _post(
        f"{server.url}/main",
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
        headers={"MCP-Protocol-Version": MODERN},
    )
    assert status == 202


async def test_foreign_origin_is_403_and_same_host_or_allowed_origin_pass(server: Server) -> None:
    status, _, _ = await _post(
        f"{server.url}/main", _rpc("tools/list"), headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    # DNS rebinding: a page of evil.example whose name now resolves to this server sends
    # Origin and Host that agree. Only a loopback host counts as our own.
    port = server.base.rsplit(":", 1)[1]
    rebound = f"evil.example:{port}"
    status, _, _ = await _post(
        f"{server.url}/main", _rpc("tools/list"),
        headers={"Origin": f"http://{rebound}", "Host": rebound},
    )
    assert status == 403
    status, _, _ = await _post(
        f"{server.url}/main",
        _rpc(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        ),
        headers={"Origin": server.base},
    )
    assert status == 200
    async for srv in _serve(McpOptions(session_secret="s"), allowed=("https://app.example",)):
        status, headers, body = await _post(
            f"{srv.url}/main",
            _rpc("server/discover", {"_meta": CLIENT_META}),
            headers={"Origin": "https://app.example", **_modern("server/discover")},
        )
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
        # A browser client may read when to retry and a 401's challenge, not only the session.
        exposed = {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Mcp-Session-Id", "Retry-After", "WWW-Authenticate"} <= exposed
        # Stateless clients never initialize: discover carries the server's instructions.
        assert "Switchyard workspace" in body["result"]["instructions"]


async def test_unsupported_protocol_version_header_is_400(server: Server) -> None:
    session, _ = await _initialize(f"{server.url}/main")
    for version in ("2024-11-05", "1999-01-01"):
        status, _, body = await _post(
            f"{server.url}/main", _rpc("tools/list"), headers=_legacy(session, version)
        )
        assert status == 400 and body["error"]["code"] == -32022
        assert "2026-07-28" in body["error"]["data"]["supported"]


async def test_not_acceptable_and_unsupported_media_type(server: Server) -> None:
    status, _, _ = await _post(
        f"{server.url}/main", _rpc("tools/list"), headers={"Accept": "text/html"}
    )
    assert status == 406
    status, _, _ = await _post(
        f"{server.url}/main", None, raw=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert status == 415


async def test_a_type_the_client_refuses_with_q0_is_not_sent(server: Server) -> None:
    status, headers, _ = await _post(
        f"{server.url}/main",
        _rpc("server/discover", {"_meta": CLIENT_META}),
        headers={"Accept": "application/json;q=0, text/event-stream", **_modern("server/discover")},
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")


async def test_client_accepting_only_event_stream_gets_one_sse_event(server: Server) -> None:
    status, headers, body = await _post(
        f"{server.url}/main",
        _rpc("server/discover", {"_meta": CLIENT_META}),
        headers={"Accept": "text/event-stream", **_modern("server/discover")},
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert (
        body.startswith("event: message\ndata: {") and '"supportedVersions":["2026-07-28"]' in body
    )


# -- handshake revisions ---------------------------------------------------------------


async def test_initialize_negotiates_the_version_and_capabilities(server: Server) -> None:
    _, latest = await _initialize(f"{server.url}/main", "2025-11-25")
    assert latest["protocolVersion"] == "2025-11-25"
    assert latest["capabilities"]["tools"] == {"listChanged": False}
    assert latest["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
    assert latest["serverInfo"]["name"] == "switchyard"
    _, older = await _initialize(f"{server.url}/main", "2025-06-18")
    assert older["protocolVersion"] == "2025-06-18" and "tasks" not in older["capabilities"]
    _, unknown = await _initialize(f"{server.url}/main", "2023-01-01")
    assert unknown["protocolVersion"] == "2025-11-25"


async def test_initialize_with_bad_params_is_invalid_params(server: Server) -> None:
    status, _, body = await _post(f"{server.url}/main", _rpc("initialize", {"protocolVersion": 5}))
    assert status == 200 and body["error"]["code"] == -32602


async def test_unknown_method_is_method_not_found(server: Server) -> None:
    session, _ = await _initialize(f"{server.url}/main", "2025-06-18")
    for method in ("nope/nothing", "prompts/list", "server/discover", "tasks/list"):
        status, _, body = await _post(
            f"{server.url}/main", _rpc(method), headers=_legacy(session, "2025-06-18")
        )
        assert body["error"]["code"] == -32601, method
    # A method of a feature not offered is unknown whatever its params (not -32602).
    status, _, body = await _post(
        f"{server.url}/main", _rpc("completion/complete", {}), headers=_legacy(session, "2025-06-18")
    )
    assert body["error"]["code"] == -32601, body
    status, _, body = await _post(
        f"{server.url}/main", _rpc("ping"), headers=_legacy(session, "2025-06-18")
    )
    assert body["result"] == {}


async def test_tools_list_paginates_with_an_opaque_cursor(server: Server) -> None:
    session, _ = await _initialize(f"{server.url}/big")
    names: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"cursor": cursor} if cursor else {}
        _, _, body = await _post(
            f"{server.url}/big", _rpc("tools/list", params), headers=_legacy(session)
        )
        names += [tool["name"] for tool in body["result"]["tools"]]
        assert all(
            tool["execution"] == {"taskSupport": "optional"} for tool in body["result"]["tools"]
        )
        cursor = body["result"].get("nextCursor")
        if cursor is None:
            break
    assert names == [f"tool_{i:03d}" for i in range(7)]
    for bad in (
        "garbage",
        base64.urlsafe_b64encode(b'{"o":-1}').decode(),
        base64.urlsafe_b64encode(b'{"o":99}').decode(),
    ):
        _, _, body = await _post(
            f"{server.url}/big", _rpc("tools/list", {"cursor": bad}), headers=_legacy(session)
        )
        assert body["error"]["code"] == -32602


async def test_sdk_client_pages_through_all_tools(server: Server) -> None:
    async with _client(f"{server.url}/big", "key-acme", MODERN) as client:
        first = await client.list_tools()
        second = await client.list_tools(cursor=first.next_cursor)
    assert len(first.tools) == 3 and len(second.tools) == 3 and second.next_cursor is not None


# -- stateless revision ----------------------------------------------------------------


async def test_discover_advertises_the_stateless_revision(server: Server) -> None:
    status, _, body = await _post(
        f"{server.url}/main",
        _rpc("server/discover", {"_meta": CLIENT_META}),
        headers=_modern("server/discover"),
    )
    assert status == 200
    result = body["result"]
    assert result["supportedVersions"] == [MODERN] and result["capabilities"]["tools"] == {
        "listChanged": False
    }
    assert (
        result["resultType"] == "complete"
        and result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"]
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list", "Mcp-Name": "create_task"},
        {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "daily_summary"},
        {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call"},
        # No version header while _meta declares the stateless revision: not "send
        # initialize first" (a missing session), which sends the client to a handshake.
        {"Mcp-Method": "tools/call", "Mcp-Name": "create_task"},
    ],
)
async def test_stateless_headers_that_disagree_with_the_body_are_400(
    server: Server, headers: dict[str, str]
) -> None:
    params = {"name": "create_task", "arguments": {}, "_meta": CLIENT_META}
    status, _, body = await _post(f"{server.url}/main", _rpc("tools/call", params), headers=headers)
    assert status == 400 and body["error"]["code"] == -32020
    assert server.pipeline.published == []


async def test_stateless_name_header_may_be_base64_wrapped(server: Server) -> None:
    wrapped = "=?base64?" + base64.b64encode(b"create_task").decode() + "?="
    params = {"name": "create_task", "arguments": {}, "_meta": CLIENT_META}
    status, _, body = await _post(
        f"{server.url}/main", _rpc("tools/call", params), headers=_modern("tools/call", wrapped)
    )
    assert status == 200 and body["result"]["isError"] is False


async def test_stateless_request_without_meta_envelope_is_400(server: Server) -> None:
    status, _, body = await _post(
        f"{server.url}/main", _rpc("tools/list", {}), headers=_modern("tools/list")
    )
    assert status == 400 and body["error"]["code"] == -32602


async def test_stateless_unknown_method_is_404_method_not_found(server: Server) -> None:
    status, _, body = await _post(
        f"{server.url}/main",
        _rpc("initialize", {"_meta": CLIENT_META}),
        headers=_modern("initialize"),
    )
    assert status == 404 and body["error"]["code"] == -32601


@pytest.mark.parametrize("header", [True, False])
async def test_stateless_meta_version_not_supported_is_32022(server: Server, header: bool) -> None:
    # Without the header too: a client of a later revision is told which versions there
    # are, not to "send initialize first" (which would push it to a handshake).
    meta = {**CLIENT_META, "io.modelcontextprotocol/protocolVersion": "2027-01-01"}
    status, _, body = await _post(
        f"{server.url}/main",
        _rpc("tools/list", {"_meta": meta}),
        headers={"Mcp-Method": "tools/list", **({"MCP-Protocol-Version": "2027-01-01"} if header else {})},
    )
    assert status == 400 and body["error"]["code"] == -32022
    assert MODERN in body["error"]["data"]["supported"]


async def test_a_handshake_revision_declared_without_a_session_is_told_to_initialize(server: Server) -> None:
    meta = {**CLIENT_META, "io.modelcontextprotocol/protocolVersion": "2025-06-18"}
    status, _, body = await _post(
        f"{server.url}/main", _rpc("tools/list", {"_meta": meta}), headers={"Mcp-Method": "tools/list"}
    )
    assert status == 400 and body["error"]["code"] == -32600 and "initialize" in body["error"]["message"]


# -- tasks (2025-11-25) ----------------------------------------------------------------


async def _working_task(srv: Server) -> tuple[str, dict[str, str], str]:
    """A session's URL and headers, and the id of a task it started that never ends."""
    srv.pipeline.responder = lambda command: None
    session, _ = await _initialize(f"{srv.url}/main")
    url, headers = f"{srv.url}/main", _legacy(session)
    return url, headers, await _another_task(url, headers)


async def _another_task(url: str, headers: dict[str, str]) -> str:
    params = {"name": "create_task", "arguments": {}, "task": {"ttl": 60_000}}
    _, _, created = await _post(url, _rpc("tools/call", params), headers=headers)
    task_id: str = created["result"]["task"]["taskId"]
    return task_id


async def test_a_task_created_between_two_pages_of_tasks_list_repeats_none() -> None:
    # The cursor was an offset into a newest-first list: a new task pushed the last of
    # page 1 onto page 2.
    async for srv in _serve(McpOptions(session_secret="s", page_size=3)):
        url, headers, first_task = await _working_task(srv)
        for _ in range(3):
            await _another_task(url, headers)
        _, _, first = await _post(url, _rpc("tasks/list"), headers=headers)
        await _another_task(url, headers)
        _, _, second = await _post(url, _rpc("tasks/list", {"cursor": first["result"]["nextCursor"]}), headers=headers)
        page1 = [t["taskId"] for t in first["result"]["tasks"]]
        page2 = [t["taskId"] for t in second["result"]["tasks"]]
        assert len(page1) == 3 and page2 == [first_task]


async def test_tasks_result_waiting_for_a_task_cancelled_meanwhile_answers_its_end() -> None:
    async for srv in _serve(McpOptions(session_secret="s", task_result_timeout=3.0)):
        url, headers, task_id = await _working_task(srv)
        waiter = asyncio.create_task(_post(url, _rpc("tasks/result", {"taskId": task_id}, rid=5), headers=headers))
        await asyncio.sleep(0.3)
        _, _, cancelled = await _post(url, _rpc("tasks/cancel", {"taskId": task_id}), headers=headers)
        assert cancelled["result"]["status"] == "cancelled"
        _, _, body = await asyncio.wait_for(waiter, 2.0)  # not its whole 3 s wait, then -32014
        assert body["id"] == 5 and body["result"]["isError"] is True


async def test_tasks_result_of_a_task_still_working_after_the_bounded_wait_is_an_error() -> None:
    # Not an isError result: the client would take it for the task's final answer.
    async for srv in _serve(McpOptions(session_secret="s", task_result_timeout=0.2)):
        url, headers, task_id = await _working_task(srv)
        status, _, body = await _post(url, _rpc("tasks/result", {"taskId": task_id}), headers=headers)
        assert status == 200 and body["error"]["code"] == -32014 and "result" not in body
        assert body["error"]["data"] == {"taskId": task_id, "status": "working"}
        _, _, got = await _post(url, _rpc("tasks/get", {"taskId": task_id}), headers=headers)
        assert got["result"]["status"] == "working"


async def test_tasks_result_answers_before_the_edge_cuts_the_request() -> None:
    # The bounded wait (3 s) outlasts the edge's request timeout (1.5 s): the edge's cut
    # is a 503 with no JSON-RPC id, so the wait ends a margin before it instead.
    limits = Limits(request_timeout=1.5)
    async for srv in _serve(McpOptions(session_secret="s", task_result_timeout=3.0), limits=limits):
        url, headers, task_id = await _working_task(srv)
        status, _, body = await _post(url, _rpc("tasks/result", {"taskId": task_id}, rid=9), headers=headers)
        assert status == 200 and body["id"] == 9 and body["error"]["code"] == -32014


async def test_a_task_with_a_negative_ttl_is_refused_and_publishes_nothing(server: Server) -> None:
    session, _ = await _initialize(f"{server.url}/main")
    params = {"name": "create_task", "arguments": {"x": 1}, "task": {"ttl": -5}}
    status, _, body = await _post(f"{server.url}/main", _rpc("tools/call", params, rid=6), headers=_legacy(session))
    assert status == 200 and body["id"] == 6  # a method's error, as on every handshake revision
    assert body["error"] == {"code": -32602, "message": "task.ttl must be 0 or more milliseconds, not -5"}
    assert server.pipeline.published == []


async def test_task_augmented_call_returns_a_task_then_its_result(server: Server) -> None:
    server.pipeline.responder = lambda command: None
    session, _ = await _initialize(f"{server.url}/main")
    url, headers = f"{server.url}/main", _legacy(session)
    params = {"name": "create_task", "arguments": {"x": 1}, "task": {"ttl": 60_000}}
    _, _, created = await _post(url, _rpc("tools/call", params), headers=headers)
    task = created["result"]["task"]
    (command,) = server.pipeline.published
    assert (
        task["taskId"] == command.command_id
        and task["status"] == "working"
        and task["ttl"] == 60_000
    )
    _, _, got = await _post(url, _rpc("tasks/get", {"taskId": task["taskId"]}), headers=headers)
    assert got["result"]["status"] == "working"
    waiter = asyncio.create_task(
        _post(url, _rpc("tasks/result", {"taskId": task["taskId"]}), headers=headers)
    )
    server.pipeline.finish(make_result(command, output={"done": True}))
    _, _, final = await asyncio.wait_for(waiter, 10)
    assert final["result"]["structuredContent"] == {"done": True}
    assert "resultType" not in final["result"]  # exactly a 2025-11-25 tools/call result
    assert final["result"]["_meta"]["io.modelcontextprotocol/related-task"] == {
        "taskId": command.command_id
    }
    _, _, got = await _post(url, _rpc("tasks/get", {"taskId": task["taskId"]}), headers=headers)
    assert got["result"]["status"] == "completed"
    _, _, listed = await _post(url, _rpc("tasks/list"), headers=headers)
    assert [t["taskId"] for t in listed["result"]["tasks"]] == [command.command_id]
    _, _, cancel = await _post(
        url, _rpc("tasks/cancel", {"taskId": task["taskId"]}), headers=headers
    )
    assert cancel["error"]["code"] == -32602, "a completed task cannot be cancelled"


async def test_a_task_whose_result_was_forgotten_is_finished_not_working(server: Server) -> None:
    server.pipeline.responder = lambda command: None
    session, _ = await _initialize(f"{server.url}/main")
    url, headers = f"{server.url}/main", _legacy(session)
    params = {"name": "create_task", "arguments": {}, "task": {}}
    created = [(await _post(url, _rpc("tools/call", params), headers=headers))[2] for _ in range(2)]
    done, running = (c["result"]["task"]["taskId"] for c in created)
    command = server.pipeline.pending.pop(("acme", done))  # it finished; its Result was let go of
    server.pipeline.forgotten_ids.add((command.tenant_id, done))
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
        _, _, body = await _post(url, _rpc(method, {"taskId": done}), headers=headers)
        assert body["error"]["code"] == -32602 and "has finished" in body["error"]["message"]
    _, _, listed = await _post(url, _rpc("tasks/list"), headers=headers)
    assert [t["taskId"] for t in listed["result"]["tasks"]] == [running]


async def test_tasks_of_another_tenant_read_as_unknown(server: Server) -> None:
    server.pipeline.responder = lambda command: None
    session, _ = await _initialize(f"{server.url}/main")
    params = {"name": "create_task", "arguments": {}, "task": {}}
    _, _, created = await _post(
        f"{server.url}/main", _rpc("tools/call", params), headers=_legacy(session)
    )
    task_id = created["result"]["task"]["taskId"]
    beta_session, _ = await _initialize(f"{server.url}/ops", key="key-beta")
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
        _, _, body = await _post(
            f"{server.url}/ops",
            _rpc(method, {"taskId": task_id}),
            key="key-beta",
            headers=_legacy(beta_session),
        )
        assert body["error"]["code"] == -32602 and "Unknown task" in body["error"]["message"]
    _, _, listed = await _post(
        f"{server.url}/ops", _rpc("tasks/list"), key="key-beta", headers=_legacy(beta_session)
    )
    assert listed["result"]["tasks"] == []


async def test_tasks_of_another_workspace_of_the_same_tenant_read_as_unknown(
    server: Server,
) -> None:
    server.pipeline.responder = lambda command: None
    session, _ = await _initialize(f"{server.url}/main")
    _, _, created = await _post(
        f"{server.url}/main",
        _rpc("tools/call", {"name": "create_task", "arguments": {}, "task": {}}),
        headers=_legacy(session),
    )
    task_id = created["result"]["task"]["taskId"]
    # The same key, its other workspace: a task is its workspace's, like its command.
    other, _ = await _initialize(f"{server.url}/big")
    for method in ("tasks/get", "tasks/result", "tasks/cancel"):
        _, _, body = await _post(
            f"{server.url}/big", _rpc(method, {"taskId": task_id}), headers=_legacy(other)
        )
        assert body["error"]["code"] == -32602 and "Unknown task" in body["error"]["message"]
    _, _, listed = await _post(f"{server.url}/big", _rpc("tasks/list"), headers=_legacy(other))
    assert listed["result"]["tasks"] == []
    _, _, got = await _post(
        f"{server.url}/main", _rpc("tasks/get", {"taskId": task_id}), headers=_legacy(session)
    )
    assert got["result"]["status"] == "working", "the other workspace must not cancel it"


async def _working_task(server: Server) -> tuple[str, dict[str, str], str]:
    """``(url, headers, task id)`` of a task whose command stays pending."""
    server.pipeline.responder = lambda command: None
    session, _ = await _initialize(f"{server.url}/main")
    url, headers = f"{server.url}/main", _legacy(session)
    _, _, created = await _post(
        url, _rpc("tools/call", {"name": "create_task", "task": {}}), headers=headers
    )
    return url, headers, created["result"]["task"]["taskId"]


async def test_cancelling_a_working_task_marks_it_cancelled_and_says_a_running_one_may_finish(
    server: Server,
) -> None:
    url, headers, task_id = await _working_task(server)
    _, _, cancelled = await _post(url, _rpc("tasks/cancel", {"taskId": task_id}), headers=headers)
    assert (
        cancelled["result"]["status"] == "cancelled"
        and "does not run if it had not started" in cancelled["result"]["statusMessage"]
        and "may still finish" in cancelled["result"]["statusMessage"]
    )
    _, _, got = await _post(url, _rpc("tasks/get", {"taskId": task_id}), headers=headers)
    assert got["result"]["status"] == "cancelled"
    _, _, again = await _post(url, _rpc("tasks/cancel", {"taskId": task_id}), headers=headers)
    assert again["error"]["code"] == -32602
    assert server.pipeline.cancels == [("acme", task_id)]  # published once, for every replica


async def test_a_cancellation_counts_only_if_it_came_before_the_result(server: Server) -> None:
    # A replica whose results reader lags takes a cancel for a task that had finished:
    # the task must not leave its final status. One cancelled before it finished stays so.
    url, headers, late_id = await _working_task(server)
    _, _, early_id = await _working_task(server)
    (late,) = [c for c in server.pipeline.published if c.command_id == late_id]
    (early,) = [c for c in server.pipeline.published if c.command_id == early_id]
    finished_before_cancel = make_result(late)
    for task_id in (late_id, early_id):
        _, _, cancelled = await _post(url, _rpc("tasks/cancel", {"taskId": task_id}), headers=headers)
        assert cancelled["result"]["status"] == "cancelled"
    server.pipeline.finish(finished_before_cancel)
    server.pipeline.finish(make_result(early))  # finished after its cancel
    statuses = {}
    for task_id in (late_id, early_id):
        _, _, got = await _post(url, _rpc("tasks/get", {"taskId": task_id}), headers=headers)
        statuses[task_id] = got["result"]["status"]
    assert statuses == {late_id: "completed", early_id: "cancelled"}


async def test_a_cancellation_the_broker_refuses_leaves_the_task_working(server: Server) -> None:
    server.pipeline.cancel_error = KafkaUnavailable("broker down")
    url, headers, task_id = await _working_task(server)
    _, _, refused = await _post(url, _rpc("tasks/cancel", {"taskId": task_id}), headers=headers)
    assert refused["error"]["code"] == -32013  # unavailable: retry
    assert "not confirmed by the broker" in refused["error"]["message"]
    _, _, got = await _post(url, _rpc("tasks/get", {"taskId": task_id}), headers=headers)
    assert got["result"]["status"] == "working"


async def test_task_param_is_ignored_before_2025_11_25(server: Server) -> None:
    session, _ = await _initialize(f"{server.url}/main", "2025-06-18")
    params = {"name": "create_task", "arguments": {}, "task": {}}
    _, _, body = await _post(
        f"{server.url}/main", _rpc("tools/call", params), headers=_legacy(session, "2025-06-18")
    )
    assert body["result"]["isError"] is False and "task" not in body["result"]


async def test_cors_preflight_is_answered_only_for_allowed_origins() -> None:
    async for srv in _serve(McpOptions(session_secret="s"), allowed=("https://app.example",)):
        async with aiohttp.ClientSession() as http:
            async with http.options(
                f"{srv.url}/main", headers={"Origin": "https://app.example"}
            ) as ok:
                assert ok.status == 204
                assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
                assert "Mcp-Session-Id" in ok.headers["Access-Control-Allow-Headers"]
            async with http.options(
                f"{srv.url}/main", headers={"Origin": "https://evil.example"}
            ) as bad:
                assert bad.status == 403


async def test_a_cancelled_notification_cancels_the_command_of_a_call_waiting_in_its_session(
    server: Server,
) -> None:
    server.pipeline.responder = lambda command: None  # the call waits (call_timeout 2 s)
    url = f"{server.url}/main"
    session, _ = await _initialize(url)
    other_session, _ = await _initialize(url)
    call = asyncio.create_task(
        _post(url, _rpc("tools/call", {"name": "create_task", "arguments": {}}, rid=7),
              headers=_legacy(session))
    )
    async with asyncio.timeout(5):
        while not server.pipeline.pending:  # noqa: ASYNC110 - the fake pipeline has no event
            await asyncio.sleep(0.01)
    ((tenant, command_id),) = server.pipeline.pending

    def cancelled(rid: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid}}

    # Another request id, the id as a string, another session, another tenant: nothing.
    for body, headers, key in (
        (cancelled(8), _legacy(session), "key-acme"),
        (cancelled("7"), _legacy(session), "key-acme"),
        (cancelled(7), _legacy(other_session), "key-acme"),
    ):
        status, _, _ = await _post(url, body, headers=headers, key=key)
        assert status == 202
    assert server.pipeline.cancels == []
    status, _, _ = await _post(url, cancelled(7), headers=_legacy(session))
    assert status == 202
    assert server.pipeline.cancels == [(tenant, command_id)]
    status, _, reply = await call  # the call itself still answers (still running, here)
    assert status == 200 and reply["id"] == 7
    # Once the call has answered, its request id names nothing here any more.
    await _post(url, cancelled(7), headers=_legacy(session))
    assert len(server.pipeline.cancels) == 1


@pytest.mark.parametrize("modern", [True, False])
async def test_a_stateless_call_whose_client_disconnects_cancels_its_command(server: Server, modern: bool) -> None:
    # 2026-07-28: closing the call's stream is its cancellation (the server MUST treat it
    # so); on the handshake revisions a disconnect is no cancellation.
    server.pipeline.responder = lambda command: None  # the call waits (call_timeout 2 s)
    url = f"{server.url}/main"
    if modern:
        body = _rpc("tools/call", {"name": "create_task", "arguments": {}, "_meta": CLIENT_META}, rid=4)
        headers = _modern("tools/call", "create_task")
    else:
        session, _ = await _initialize(url)
        body, headers = _rpc("tools/call", {"name": "create_task", "arguments": {}}, rid=4), _legacy(session)
    call = asyncio.create_task(_post(url, body, headers=headers))
    async with asyncio.timeout(5):
        while not server.pipeline.pending:  # noqa: ASYNC110 - the fake pipeline has no event
            await asyncio.sleep(0.01)
    ((tenant, command_id),) = server.pipeline.pending
    call.cancel()  # the client gives up: its connection closes
    with contextlib.suppress(asyncio.CancelledError):
        await call
    if modern:
        async with asyncio.timeout(5):
            while not server.pipeline.cancels:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert server.pipeline.cancels == [(tenant, command_id)]
        assert server.pipeline.uncharged_cancels == 1  # paid by its submit: never refused for rate
    else:
        await asyncio.sleep(0.5)
        assert server.pipeline.cancels == []


async def test_a_server_shutting_down_cuts_a_waiting_stateless_call_without_cancelling_it(server: Server) -> None:
    # The server closes the connections of the calls it cuts: that is no client's
    # disconnect, and the command keeps running (its caller reads it with its key).
    server.pipeline.responder = lambda command: None
    body = _rpc("tools/call", {"name": "create_task", "arguments": {}, "_meta": CLIENT_META}, rid=4)
    call = asyncio.create_task(_post(f"{server.url}/main", body, headers=_modern("tools/call", "create_task")))
    async with asyncio.timeout(5):
        while not server.pipeline.pending:  # noqa: ASYNC110 - the fake pipeline has no event
            await asyncio.sleep(0.01)
    await server.runner.cleanup()
    with contextlib.suppress(aiohttp.ClientError):
        await call
    await asyncio.sleep(0.2)
    assert server.pipeline.cancels == []


@pytest.mark.parametrize("modern", [True, False])
async def test_a_replay_of_a_keyed_call_that_gives_up_cancels_nothing(server: Server, modern: bool) -> None:
    # A retry with the key of a call still waiting (after a dropped connection, or a
    # second waiter) replays its command: giving up on the replay must not cancel what
    # the first call, or the client retrying, still wants.
    server.pipeline.responder = lambda command: None
    url = f"{server.url}/main"
    meta = {"switchyard/idempotency_key": "order-7"}
    if modern:
        headers = _modern("tools/call", "create_task")
        meta = {**CLIENT_META, **meta}
    else:
        session, _ = await _initialize(url)
        headers = _legacy(session)
    body = _rpc("tools/call", {"name": "create_task", "arguments": {}, "_meta": meta}, rid=5)
    first = asyncio.create_task(_post(url, body, headers=headers))
    async with asyncio.timeout(5):
        while not server.pipeline.pending:  # noqa: ASYNC110 - the fake pipeline has no event
            await asyncio.sleep(0.01)
    replay = asyncio.create_task(_post(url, {**body, "id": 6}, headers=headers))
    await asyncio.sleep(0.3)  # the replay waits too
    if modern:
        replay.cancel()  # its client disconnects
        with contextlib.suppress(asyncio.CancelledError):
            await replay
    else:
        notice = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 6}}
        assert (await _post(url, notice, headers=headers))[0] == 202
    await asyncio.sleep(0.3)
    assert server.pipeline.cancels == []
    assert len(server.pipeline.published) == 1
    await first
    if not modern:
        await replay
