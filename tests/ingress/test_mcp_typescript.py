"""The official MCP TypeScript SDKs against the real ingress on the real broker.

``mcp_ts/client.mjs`` drives ``@modelcontextprotocol/sdk`` 1.x (what most TypeScript
hosts embed today) and ``@modelcontextprotocol/client`` 2.x, on the handshake and on the
stateless 2026-07-28 revision. The packages are pinned in ``mcp_ts/package-lock.json``
and installed by ``scripts/test.sh`` (``npm ci``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ingress.testing import IngressHarness, echo_action, read_topic, unique_id

pytestmark = pytest.mark.integration

CLIENT_DIR = Path(__file__).resolve().parent / "mcp_ts"


async def _run_client(
    sdk: str, url: str, api_key: str, tool: str, arguments: dict[str, Any], *extra: str
) -> Any:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed: the README's test command installs the SDKs with npm"
    assert (CLIENT_DIR / "node_modules").is_dir(), f"run `npm ci --prefix {CLIENT_DIR}` (scripts/test.sh does)"
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT_DIR / "client.mjs"),
        sdk,
        url,
        api_key,
        tool,
        json.dumps(arguments),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("sdk", "protocol"),
    [("v1", "2025-11-25"), ("v2-legacy", "2025-11-25"), ("v2-modern", "2026-07-28")],
)
async def test_typescript_sdk_lists_and_calls_only_its_tenants_tools(
    harness: IngressHarness, sdk: str, protocol: str
) -> None:
    acme = await harness.add_tenant(
        unique_id("acme"), "sales", actions=[echo_action(), echo_action("acme_report")]
    )
    await harness.add_tenant(unique_id("beta"), "sales", actions=[echo_action("beta_ticket")])
    async with harness.responder() as responder:
        got = await _run_client(
            sdk, f"{harness.url}/mcp/{acme.space_id}", acme.api_key, "echo", {"text": f"hi {sdk}"}
        )
        foreign = await _run_client(
            sdk, f"{harness.url}/mcp/{acme.space_id}", acme.api_key, "beta_ticket", {}
        )
    assert got["protocol"] == protocol
    assert sorted(got["tools"]) == ["acme_report", "echo"]
    result = got["call"]["result"]
    assert result.get("isError") in (None, False)
    assert result["structuredContent"] == {"echo": {"text": f"hi {sdk}"}}
    (command,) = [c for c in responder.seen if c.tenant_id == acme.tenant_id]
    assert result["_meta"]["switchyard/command_id"] == command.command_id
    assert command.space_id == "sales" and command.arguments == {"text": f"hi {sdk}"}
    # Another tenant's tool is as unknown as a made-up one: a clear refusal, nothing run.
    refused = foreign["call"]["error"]
    assert refused["code"] == -32602 and refused["message"].endswith("Unknown tool: beta_ticket")
    assert got["unknown"]["error"]["code"] == -32602
    # A refusal before the call runs reaches the client as the JSON-RPC error it is (a
    # 403 answer was a transport error to the 2.x client on 2026-07-28, code and data lost).
    assert got["claimed"]["error"]["code"] == -32011, got["claimed"]
    assert [c.tenant_id for c in responder.seen] == [acme.tenant_id]


@pytest.mark.parametrize("sdk", ["v1", "v2-legacy", "v2-modern"])
async def test_a_call_a_typescript_client_gives_up_on_cancels_its_command(harness: IngressHarness, sdk: str) -> None:
    # No responder: the call waits until the client's own request timeout gives up on
    # it (notifications/cancelled on the handshake, a closed stream on 2026-07-28).
    tenant = await harness.add_tenant(unique_id("quit"), "sales", actions=[echo_action()])
    got = await _run_client(sdk, f"{harness.url}/mcp/{tenant.space_id}", tenant.api_key, "echo", {"text": "x"}, "1000")
    assert "error" in got["call"], got
    topics = harness.settings.topics
    async with asyncio.timeout(10):
        while not (cancels := await read_topic(harness.settings, topics.cancels)):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    commands = [dict(r.headers) for r in await read_topic(harness.settings, topics.commands)]
    (command_id,) = {h["sy-command-id"] for h in commands if h["sy-kind"] == b"command"}
    assert [dict(r.headers)["sy-command-id"] for r in cancels] == [command_id]
