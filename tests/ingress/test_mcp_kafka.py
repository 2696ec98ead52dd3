"""The MCP endpoint on the real ingress app and the real Kafka broker.

A fake responder (``ingress.testing.FakeResponder``) stands in for router and workers:
it reads the commands topic and writes Results to the real results topic.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from ingress.testing import (
    IngressHarness,
    TenantHandle,
    echo_action,
    echo_result,
    read_topic,
    unique_id,
)
from schemas import Command, CommandSource

pytestmark = pytest.mark.integration

MODERN = "2026-07-28"
CLIENT_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


def _client(harness: IngressHarness, tenant: TenantHandle, mode: str) -> Client:
    http = httpx2.AsyncClient(headers=tenant.headers, timeout=30)
    return Client(
        streamable_http_client(f"{harness.url}/mcp/{tenant.space_id}", http_client=http), mode=mode
    )


async def _post(
    url: str, body: Any, headers: dict[str, str], *, raw: bytes | None = None, wait_for: float = 30
) -> tuple[int, dict[str, str], Any]:
    sent = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        **headers,
    }
    # A stream, not bytes: aiohttp warns about sending a large bytes body in one piece.
    kwargs: dict[str, Any] = {"data": io.BytesIO(raw)} if raw is not None else {"json": body}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait_for)) as http,
        http.post(url, headers=sent, **kwargs) as response,
    ):
        data = (
            await response.json()
            if response.content_type == "application/json"
            else await response.text()
        )
        return response.status, dict(response.headers), data


async def _session(url: str, tenant: TenantHandle) -> dict[str, str]:
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }
    status, headers, body = await _post(
        url, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}, tenant.headers
    )
    assert status == 200, body
    return {
        **tenant.headers,
        "Mcp-Session-Id": headers["Mcp-Session-Id"],
        "MCP-Protocol-Version": "2025-11-25",
    }


async def _commands(harness: IngressHarness) -> list[Command]:
    return [
        Command.from_bytes(record.value)
        for record in await read_topic(harness.settings, harness.settings.topics.commands)
    ]


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_sdk_client_lists_and_calls_only_its_own_tools_for_two_tenants(
    harness: IngressHarness, mode: str
) -> None:
    acme = await harness.add_tenant(
        unique_id("acme"), "sales", actions=[echo_action(), echo_action("acme_report")]
    )
    beta = await harness.add_tenant(
        unique_id("beta"), "sales", actions=[echo_action(), echo_action("beta_ticket")]
    )
    async with harness.responder() as responder:
        answers = {}
        for tenant in (acme, beta):
            async with _client(harness, tenant, mode) as client:
                listed = await client.list_tools()
                answers[tenant.tenant_id] = (
                    sorted(tool.name for tool in listed.tools),
                    await client.call_tool("echo", {"text": f"hi {tenant.tenant_id}"}),
                )
    assert answers[acme.tenant_id][0] == ["acme_report", "echo"]
    assert answers[beta.tenant_id][0] == ["beta_ticket", "echo"]
    for tenant in (acme, beta):
        result = answers[tenant.tenant_id][1]
        assert result.is_error is False
        assert result.structured_content == {"echo": {"text": f"hi {tenant.tenant_id}"}}
        assert result.meta is not None
        (command,) = [c for c in responder.seen if c.tenant_id == tenant.tenant_id]
        assert result.meta["switchyard/command_id"] == command.command_id
        assert (
            result.meta["switchyard/connector"] == "http"
            and result.meta["switchyard/operation"] == "echo"
        )
        assert result.meta["switchyard/status"] == "succeeded"
        assert command.spans and result.meta["switchyard/trace_id"] == command.spans[0].trace_id
        assert command.source == CommandSource.MCP and command.space_id == "sales"
    published = await _commands(harness)
    assert sorted(c.tenant_id for c in published) == sorted([acme.tenant_id, beta.tenant_id])


async def test_spoofed_tenant_claim_is_refused_and_nothing_reaches_kafka(
    harness: IngressHarness, acme: TenantHandle, beta: TenantHandle
) -> None:
    url = f"{harness.url}/mcp/{acme.space_id}"
    headers = {
        **acme.headers,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    }
    for params in (
        {
            "name": "echo",
            "arguments": {},
            "_meta": {**CLIENT_META, "switchyard/tenant_id": beta.tenant_id},
        },
        {"name": "echo", "arguments": {"tenant_id": beta.tenant_id}, "_meta": CLIENT_META},
    ):
        status, _, body = await _post(
            url, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}, headers
        )
        # A method's refusal, with 200 (a client reads no JSON-RPC error from a 403).
        assert status == 200 and body["id"] == 3 and body["error"]["code"] == -32011
    status, _, _ = await _post(url, {}, {**acme.headers, "X-Switchyard-Tenant": beta.tenant_id})
    assert status == 403
    assert await _commands(harness) == []


async def test_a_session_of_one_tenant_is_unknown_to_another(
    harness: IngressHarness, acme: TenantHandle, beta: TenantHandle
) -> None:
    acme_session = await _session(f"{harness.url}/mcp/{acme.space_id}", acme)
    stolen = {**beta.headers, "Mcp-Session-Id": acme_session["Mcp-Session-Id"]}
    status, _, _ = await _post(
        f"{harness.url}/mcp/{beta.space_id}",
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        stolen,
    )
    assert status == 404


async def test_task_augmented_call_is_answered_from_the_results_topic(
    harness: IngressHarness, acme: TenantHandle, beta: TenantHandle
) -> None:
    url = f"{harness.url}/mcp/{acme.space_id}"
    headers = await _session(url, acme)
    release = asyncio.Event()

    async def respond(command: Command) -> Any:
        await release.wait()
        return echo_result(command)

    async with harness.responder(respond):
        call = {"name": "echo", "arguments": {"text": "later"}, "task": {"ttl": 60_000}}
        _, _, created = await _post(
            url, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}, headers
        )
        task_id = created["result"]["task"]["taskId"]
        _, _, got = await _post(
            url,
            {"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"taskId": task_id}},
            headers,
        )
        assert got["result"]["status"] == "working"
        beta_headers = await _session(f"{harness.url}/mcp/{beta.space_id}", beta)
        _, _, foreign = await _post(
            f"{harness.url}/mcp/{beta.space_id}",
            {"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"taskId": task_id}},
            beta_headers,
        )
        assert foreign["error"]["code"] == -32602
        release.set()
        _, _, final = await _post(
            url,
            {"jsonrpc": "2.0", "id": 4, "method": "tasks/result", "params": {"taskId": task_id}},
            headers,
        )
    assert final["result"]["structuredContent"] == {"echo": {"text": "later"}}
    assert final["result"]["_meta"]["switchyard/command_id"] == task_id


async def _rpc(url: str, headers: dict[str, str], method: str, params: dict[str, Any]) -> Any:
    _, _, body = await _post(url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, headers)
    return body


async def test_tasks_are_listed_and_cancelled_alike_on_every_replica(
    settings, harness: IngressHarness, acme: TenantHandle, beta: TenantHandle
) -> None:
    # No responder: the task stays working. A load balancer sends each request anywhere.
    first_url = f"{harness.url}/mcp/{acme.space_id}"
    first = await _session(first_url, acme)
    call = {"name": "echo", "arguments": {"text": "x"}, "task": {"ttl": 60_000}}
    task_id = (await _rpc(first_url, first, "tools/call", call))["result"]["task"]["taskId"]
    async with IngressHarness(settings) as other:
        other_url = f"{other.url}/mcp/{acme.space_id}"
        second = await _session(other_url, acme)
        async with asyncio.timeout(20):
            while True:  # until its commands follower has read the call
                listed = (await _rpc(other_url, second, "tasks/list", {}))["result"]["tasks"]
                if listed:
                    break
                await asyncio.sleep(0.1)
        assert [(t["taskId"], t["status"], t["ttl"]) for t in listed] == [(task_id, "working", 60_000)]
        strangers = await _session(f"{other.url}/mcp/{beta.space_id}", beta)
        assert (await _rpc(f"{other.url}/mcp/{beta.space_id}", strangers, "tasks/list", {}))["result"]["tasks"] == []

        cancelled = await _rpc(other_url, second, "tasks/cancel", {"taskId": task_id})
        assert cancelled["result"]["status"] == "cancelled"
        async with asyncio.timeout(20):
            while (got := await _rpc(first_url, first, "tasks/get", {"taskId": task_id}))["result"]["status"] != "cancelled":
                assert got["result"]["status"] == "working"
                await asyncio.sleep(0.1)
        again = await _rpc(first_url, first, "tasks/cancel", {"taskId": task_id})
        assert again["error"]["code"] == -32602  # already cancelled, on this replica too

    # The cancellation is one record after the command, on the same partition.
    records = await read_topic(settings, settings.topics.commands)
    kinds = [dict(r.headers).get("sy-kind") for r in records if dict(r.headers).get("sy-command-id") == task_id.encode()]
    assert kinds == [b"command", b"task-cancel"]


async def test_a_call_whose_client_disconnects_still_completes_and_can_be_fetched(
    harness: IngressHarness, acme: TenantHandle
) -> None:
    url = f"{harness.url}/mcp/{acme.space_id}"
    headers = await _session(url, acme)
    release = asyncio.Event()
    arrived: asyncio.Queue[Command] = asyncio.Queue()

    async def respond(command: Command) -> Any:
        arrived.put_nowait(command)
        await release.wait()
        return echo_result(command)

    async with harness.responder(respond):
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "bye"}},
        }
        with pytest.raises(TimeoutError):
            await _post(url, call, headers, wait_for=1.0)
        # The caller is gone; the command is in Kafka and reaches the responder anyway.
        async with asyncio.timeout(20):
            command_id = (await arrived.get()).command_id
        release.set()
        _, _, final = await _post(
            url,
            {"jsonrpc": "2.0", "id": 2, "method": "tasks/result", "params": {"taskId": command_id}},
            headers,
        )
    assert final["result"]["isError"] is False
    assert final["result"]["structuredContent"] == {"echo": {"text": "bye"}}


async def test_idempotency_key_in_meta_publishes_once(
    harness: IngressHarness, acme: TenantHandle
) -> None:
    async with harness.responder(), _client(harness, acme, MODERN) as client:
        meta = {"switchyard/idempotency_key": "invoice-42"}
        first = await client.call_tool("echo", {"text": "x"}, meta=meta)
        second = await client.call_tool("echo", {"text": "x"}, meta=meta)
    assert first.meta is not None and second.meta is not None
    assert first.meta["switchyard/command_id"] == second.meta["switchyard/command_id"]
    assert len(await _commands(harness)) == 1


async def test_malformed_requests_on_the_real_app_get_4xx_never_5xx(
    harness: IngressHarness, acme: TenantHandle
) -> None:
    url = f"{harness.url}/mcp/{acme.space_id}"
    session = await _session(url, acme)
    cases: list[tuple[dict[str, str], bytes]] = [
        (acme.headers, b"{nope"),
        (acme.headers, b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]'),
        (acme.headers, b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'),  # no session
        (
            {**session, "MCP-Protocol-Version": "2020-01-01"},
            b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
        ),
        ({**session}, b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"nope"}}'),
        (
            {**session},
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":[]}}',
        ),
        (
            {**acme.headers, "MCP-Protocol-Version": MODERN},
            b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
        ),
        ({}, b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'),
        ({**acme.headers, "Origin": "http://evil.example"}, b"{}"),
        (acme.headers, b"x" * (3 * 1024 * 1024)),
    ]
    statuses = []
    for headers, raw in cases:
        status, _, body = await _post(url, None, headers, raw=raw)
        statuses.append(status)
        if status == 200:
            assert "error" in body
    assert all(400 <= s < 500 or s == 200 for s in statuses), statuses
    async with aiohttp.ClientSession() as http, http.get(url, headers=acme.headers) as response:
        assert response.status == 405


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_a_call_the_official_client_gives_up_on_cancels_its_command(harness, mode: str) -> None:
    # No responder: the command waits. The client's own timeout gives up on the call: on
    # the handshake revision it sends notifications/cancelled, on 2026-07-28 it closes
    # the call's stream; either way the command's cancellation is published for the
    # workers (which end it without running it, tests/workers/test_pool_cancel.py).
    tenant = await harness.add_tenant(unique_id("quit"), "sales", actions=[echo_action()])
    async with _client(harness, tenant, mode) as client:
        with pytest.raises(Exception):  # noqa: B017,PT011 - the SDK's timeout error differs per transport
            await client.call_tool("echo", {"text": "x"}, read_timeout_seconds=1.0)
    async with asyncio.timeout(10):
        while not (cancels := await read_topic(harness.settings, harness.settings.topics.cancels)):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    records = await read_topic(harness.settings, harness.settings.topics.commands)
    kinds = [(dict(r.headers)["sy-kind"], dict(r.headers)["sy-command-id"]) for r in records]
    (command_id,) = {command_id for kind, command_id in kinds if kind == b"command"}
    assert [dict(r.headers)["sy-command-id"] for r in cancels] == [command_id]
