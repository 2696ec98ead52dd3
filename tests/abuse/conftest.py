"""One running system (emulators, router, a Slack pool, ingress) for the abuse suite, on the
session's Kafka and OpenBao with a topic prefix of its own, plus raw-HTTP MCP helpers.

Tenants: ``acme`` and ``beta`` (the attacker and the victim, by turns) and ``canary``,
whose Slack token is a canary secret that must never show up outside OpenBao and the
emulator's token check.
"""

from __future__ import annotations

import io
import itertools
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ingress.testing import read_topic
from switchyard.demo import DemoTenant, demo_tenants
from switchyard.system import LocalSystem, ensure_pool_roles

CONNECTORS = ("slack",)
MODERN = "2026-07-28"
TASKS = "2025-11-25"
CANARY = f"xoxb-canary-{secrets.token_hex(16)}"


@dataclass
class Abuse:
    system: LocalSystem
    tenants: dict[str, DemoTenant]
    keys: dict[str, str]
    # Every response body and header block the suite received, for the canary scan.
    seen: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.system.ingress_url

    def auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    async def published(self) -> int:
        """Records on the commands topic right now."""
        settings = self.system.settings
        return len(await read_topic(settings, settings.topics.commands))

    async def request(
        self, method: str, path: str, *, body: Any = None, raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        """One HTTP request to the ingress: (status, decoded JSON or raw bytes, headers)."""
        data: Any = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        if data is not None and len(data) > 512 * 1024:
            data = io.BytesIO(data)  # aiohttp refuses to send large bytes objects in one write
        send_headers = {"Content-Type": "application/json", **(headers or {})}
        async with aiohttp.ClientSession() as session:
            async with session.request(method, f"{self.url}{path}", data=data, headers=send_headers,
                                       timeout=aiohttp.ClientTimeout(total=60)) as response:
                content = await response.read()
                self.seen.append(content + repr(dict(response.headers)).encode())
                try:
                    decoded: Any = orjson.loads(content) if content else None
                except orjson.JSONDecodeError:
                    decoded = content
                return response.status, decoded, response.headers


_ids = itertools.count(1)


def modern_meta() -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "switchyard-abuse", "version": "1"},
    }


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MODERN,
               "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


async def modern_call(abuse: Abuse, tenant: str, method: str, params: dict[str, Any],
                      headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """A stateless (2026-07-28) JSON-RPC request with a proper ``_meta`` envelope."""
    params = {**params, "_meta": {**modern_meta(), **params.get("_meta", {})}}
    body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}
    status, reply, _ = await abuse.request(
        "POST", "/mcp/main", body=body,
        headers={**abuse.auth(tenant), **modern_headers(method, params.get("name")), **(headers or {})},
    )
    return status, reply


@dataclass
class Session:
    """An initialize-handshake MCP session (2025-11-25 by default) over raw HTTP."""

    abuse: Abuse
    tenant: str
    version: str = TASKS
    session_id: str = ""

    def headers(self) -> dict[str, str]:
        headers = {**self.abuse.auth(self.tenant), "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": self.version}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    async def open(self) -> Session:
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": "initialize",
                "params": {"protocolVersion": self.version, "capabilities": {},
                           "clientInfo": {"name": "switchyard-abuse", "version": "1"}}}
        headers = {**self.abuse.auth(self.tenant), "Accept": "application/json, text/event-stream"}
        status, reply, response_headers = await self.abuse.request("POST", "/mcp/main", body=body,
                                                                    headers=headers)
        assert status == 200 and reply["result"]["protocolVersion"] == self.version, reply
        self.session_id = response_headers["Mcp-Session-Id"]
        status, _, _ = await self.abuse.request(
            "POST", "/mcp/main", body={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers=self.headers(),
        )
        assert status == 202
        return self

    async def call(self, method: str, params: dict[str, Any] | None = None, *,
                   raw: bytes | None = None) -> tuple[int, Any]:
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method}
        if params is not None:
            body["params"] = params
        status, reply, _ = await self.abuse.request("POST", "/mcp/main", body=body, raw=raw,
                                                    headers=self.headers())
        return status, reply


@pytest.fixture(scope="package")
async def abuse(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Abuse]:
    state: Path = tmp_path_factory.mktemp("abuse")
    env = await ensure_pool_roles(stack_env, CONNECTORS)
    system = LocalSystem(
        state, connectors=CONNECTORS, stack_env=env,
        env={"SWITCHYARD_TOPIC_PREFIX": f"abu{uuid.uuid4().hex[:8]}.", "SWITCHYARD_TOPIC_PARTITIONS": "3"},
        # Fuzzing sends hundreds of requests a second: the edge rate limit is not under test.
        args={"ingress": ["--rate", "100000", "--burst", "100000"],
              # Retry tiers of a fraction of a second: a dead-lettered command ends in seconds.
              "worker": ["--retry-tier-delays", "0.2,0.2,0.2", "--shutdown-grace", "2"]},
    )
    try:
        await system.start()
        slack = next(t for t in demo_tenants(system.emulator_url) if t.connector == "slack")
        tenants = []
        for tenant_id in ("acme", "beta", "canary"):
            token = CANARY if tenant_id == "canary" else f"xoxb-{secrets.token_urlsafe(18)}"
            tenants.append(DemoTenant(tenant_id, "main", "slack", slack.operation, slack.mapping,
                                      {"bot_token": token}, token))
        keys = await system.provision(tenants)
        yield Abuse(system, {t.tenant_id: t for t in tenants}, keys)
    finally:
        system.stop()
