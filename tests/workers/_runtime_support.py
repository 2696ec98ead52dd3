"""Helpers for the worker runtime tests: a small upstream API, a connector for it, Kafka I/O.

The upstream server is real HTTP (aiohttp on 127.0.0.1) so the pool's session, timeouts
and headers are exercised; it checks each tenant's bearer token, records every call,
injects faults per idempotency key, blocks a tenant's calls behind a gate on request,
and serves an OAuth token endpoint that counts refreshes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.errors import PermanentError
from core.kafka import ensure_topics, make_consumer, make_producer, start_client
from core.metrics import Metrics
from core.settings import Settings
from core.telemetry import capture_spans, inject, span
from core.vault import PoolVault, VaultAdmin
from schemas import ErrorCode, Result, RoutedCommand
from workers._fencing import consumer_membership
from workers._pool import PoolOptions, WorkerPool
from workers.connectors._base import Connector, ConnectorCall, Operation, classify_http

CONNECTOR = "echo"


@dataclass
class Call:
    tenant: str
    token: str
    idempotency_key: str
    command_id: str
    traceparent: str | None


@dataclass
class Upstream:
    """A fake SaaS API. ``tokens[tenant]`` are the access tokens it accepts."""

    tokens: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    calls: list[Call] = field(default_factory=list)
    refreshes: Counter[str] = field(default_factory=Counter)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    waiting: Counter[str] = field(default_factory=Counter)
    max_waiting: Counter[str] = field(default_factory=Counter)
    refuse_refreshed: bool = False
    token_gate: asyncio.Event | None = None  # while clear, the token endpoint holds its answer
    token_waiting: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: Counter[str] = field(default_factory=Counter)
    base_url: str = ""

    async def _api(self, request: web.Request) -> web.Response:
        body = await request.json()
        tenant = request.headers.get("X-Tenant", "")
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        key = request.headers.get("Idempotency-Key", "")
        args = body.get("arguments", {})
        self.calls.append(
            Call(tenant, token, key, args.get("command_id", ""), request.headers.get("traceparent"))
        )
        if token not in self.tokens[tenant]:
            return web.json_response({"ok": False, "error": "invalid_auth"}, status=401)
        gate = self.gates.get(tenant)
        if gate is not None and not gate.is_set():
            self.waiting[tenant] += 1
            self.max_waiting[tenant] = max(self.max_waiting[tenant], self.waiting[tenant])
            try:
                await gate.wait()
            finally:
                self.waiting[tenant] -= 1
        if args.get("delay"):
            await asyncio.sleep(float(args["delay"]))  # a latency fault
        faults = args.get("faults", [])
        seen = self._seen[key]
        self._seen[key] += 1
        if seen < len(faults):
            headers = {"Retry-After": str(args["retry_after"])} if "retry_after" in args else {}
            return web.json_response({"ok": False}, status=int(faults[seen]), headers=headers)
        if args.get("reject"):
            return web.json_response({"ok": False, "error": "bad_request"}, status=400)
        body = {"ok": True, "echo": args.get("text", ""), "tenant": tenant}
        if args.get("echo_auth"):  # an endpoint that returns the request's headers
            body["request_headers"] = {"Authorization": request.headers.get("Authorization", "")}
        return web.json_response(body)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.json()
        tenant = form.get("tenant", "")
        self.refreshes[tenant] += 1
        if self.token_gate is not None:
            self.token_waiting.set()
            await self.token_gate.wait()
        # Make concurrent refreshes overlap, so coalescing is what keeps the count at one.
        await asyncio.sleep(0.05)
        fresh = f"fresh-{tenant}-{uuid.uuid4().hex[:8]}"
        if not self.refuse_refreshed:
            self.tokens[tenant].add(fresh)
        expires = (datetime.now(UTC) + timedelta(hours=1)).timestamp()
        return web.json_response({"access_token": fresh, "expires_at": expires})

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Upstream]:
        app = web.Application()
        app.router.add_post("/api/{operation}", self._api)
        app.router.add_post("/oauth/token", self._token)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            for gate in self.gates.values():
                gate.set()
            if self.token_gate is not None:
                self.token_gate.set()
            await runner.cleanup()

    def calls_for(self, command_id: str) -> list[Call]:
        return [c for c in self.calls if c.command_id == command_id]


class EchoConnector(Connector):
    """A connector of the real shape (contract of ``workers.connectors._base``) for the upstream above."""

    name = CONNECTOR
    oauth = True
    operations = {"send": Operation("send a message", {"type": "object"})}

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        token = str(call.credentials.get("access_token", ""))
        if call.arguments.get("crash"):
            raise RuntimeError("a bug in the connector")
        if call.arguments.get("leak"):
            # A careless connector: the runtime must scrub this before it goes anywhere.
            raise PermanentError(
                ErrorCode.UPSTREAM_REJECTED,
                f"rejected with token {token} and {dict(call.credentials)}",
            )
        headers = {
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": call.idempotency_key,
            "X-Tenant": call.tenant_id,
            **call.trace_headers,
        }
        async with call.session.post(
            f"{call.base_url}/api/{call.operation}",
            json={"arguments": dict(call.arguments)},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=call.timeout),
        ) as response:
            if response.status >= 400:
                raise classify_http(
                    response.status,
                    retry_after=response.headers.get("Retry-After"),
                    what=f"echo.{call.operation}",
                )
            data: dict[str, Any] = await response.json()
            return data


async def refresh_at(
    upstream: Upstream, session: aiohttp.ClientSession, creds: Mapping[str, Any]
) -> Mapping[str, Any]:
    async with session.post(
        f"{upstream.base_url}/oauth/token",
        json={"tenant": creds.get("tenant"), "refresh_token": creds.get("refresh_token")},
    ) as response:
        response.raise_for_status()
        return dict(await response.json())


def command(
    tenant: str,
    *,
    text: str = "hi",
    deadline_in: float = 120.0,
    **arguments: Any,
) -> RoutedCommand:
    command_id = f"c{uuid.uuid4().hex[:20]}"
    stamp = datetime.now(UTC)
    return RoutedCommand(
        command_id=command_id,
        tenant_id=tenant,
        space_id="space1",
        user_id="user1",
        role="member",
        action="send_message",
        arguments={"text": text},
        idempotency_key=f"idem-{command_id}",
        submitted_at=stamp,
        deadline=stamp + timedelta(seconds=deadline_in),
        source="rest",
        connector=CONNECTOR,
        operation="send",
        resolved_arguments={"text": text, "command_id": command_id, **arguments},
        routed_at=stamp,
    )


async def ensure_pool_topics(settings: Settings) -> None:
    t = settings.topics
    await ensure_topics(
        settings,
        [*t.pool_sources(CONNECTOR, 2), t.results, t.dead_letters],
    )


async def produce(
    settings: Settings,
    commands: Iterable[RoutedCommand],
    *,
    partition: int | None = None,
    traced: bool = True,
    extra_headers: Iterable[tuple[str, bytes]] = (),
) -> None:
    """Publish like the router does: keyed by tenant, a ``router.route`` span as trace parent."""
    topic = settings.topics.connector(CONNECTOR)
    await ensure_pool_topics(settings)
    producer = make_producer(settings)
    await start_client(producer, what="test producer")
    try:
        futures = []
        for cmd in commands:
            headers: list[tuple[str, bytes]] = list(extra_headers)
            if traced:
                with capture_spans() as spans, span("router.route"):
                    inject(headers)
                cmd = cmd.model_copy(update={"spans": spans})
            futures.append(
                await producer.send(
                    topic,
                    cmd.to_bytes(),
                    key=cmd.tenant_id.encode(),
                    headers=headers,
                    partition=partition,
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every committed record of ``topic``, read from the start to its current end."""
    consumer = make_consumer(settings, group_id=None)
    await start_client(consumer, what="test reader")
    try:
        # Every topic of a test prefix is created with the settings' partition count.
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[Any] = []
        async with asyncio.timeout(30):
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    out.extend(records)
        return out
    finally:
        await consumer.stop()


async def wait_results(
    settings: Settings, command_ids: set[str], *, within: float = 60.0
) -> dict[str, list[Result]]:
    """Poll the results topic (read_committed) until every id has a Result; bounded."""
    consumer = make_consumer(settings, settings.topics.results, group_id=None)
    await start_client(consumer, what="test results reader")
    results: dict[str, list[Result]] = defaultdict(list)
    try:
        async with asyncio.timeout(within):
            while not command_ids <= results.keys():
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        result = Result.from_bytes(record.value)
                        results[result.command_id].append(result)
    finally:
        await consumer.stop()
    return results


async def all_results(settings: Settings) -> dict[str, list[Result]]:
    out: dict[str, list[Result]] = defaultdict(list)
    for record in await read_topic(settings, settings.topics.results):
        result = Result.from_bytes(record.value)
        out[result.command_id].append(result)
    return out


@asynccontextmanager
async def pool_running(
    settings: Settings,
    vault_admin: VaultAdmin,
    upstream: Upstream,
    *,
    options: PoolOptions | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[WorkerPool]:
    """A started echo pool on the test's prefix, talking to ``upstream``."""

    async def refresher(
        session: aiohttp.ClientSession, creds: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        return await refresh_at(upstream, session, creds)

    async with connector_pool_running(
        settings, vault_admin, EchoConnector(), upstream.base_url, refresher, options=options, metrics=metrics
    ) as pool:
        yield pool


@asynccontextmanager
async def connector_pool_running(
    settings: Settings,
    vault_admin: VaultAdmin,
    connector: Connector,
    base_url: str,
    refresher: Any,
    *,
    options: PoolOptions | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[WorkerPool]:
    """A started pool of ``connector`` with its own AppRole (and ``metrics``, if given),
    stopped gracefully after."""
    approle = await vault_admin.bootstrap_pool(connector.name)
    vault = PoolVault(vault_admin._client.url, connector.name, approle)  # noqa: SLF001
    pool = WorkerPool(
        settings,
        connector,
        vault,
        options=options or PoolOptions(tier_delays=(0.2, 0.5), breaker_threshold=1_000),
        refresher=refresher,
        base_url=base_url,
    )
    pool.metrics = metrics
    await pool.start()
    task = asyncio.create_task(pool.run())
    try:
        yield pool
    finally:
        pool.request_stop()
        async with asyncio.timeout(60):
            await task
        vault.close()


async def put_tenant(
    vault_admin: VaultAdmin, upstream: Upstream, tenant: str, *, valid: bool = True, **extra: Any
) -> str:
    """Store credentials for ``tenant``; returns its access token (accepted by upstream if ``valid``)."""
    token = f"tok-{tenant}-{uuid.uuid4().hex[:8]}"
    if valid:
        upstream.tokens[tenant].add(token)
    await vault_admin.put_credentials(
        tenant,
        CONNECTOR,
        {"access_token": token, "refresh_token": f"r-{tenant}", "tenant": tenant, **extra},
    )
    return token


@asynccontextmanager
async def group_member(settings: Settings, topic: str, group: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of ``group`` that has joined it and owns ``topic``'s partitions."""
    consumer = make_consumer(settings, topic, group_id=group)
    await start_client(consumer, what="test member")
    try:
        async with asyncio.timeout(30):
            while consumer_membership(consumer) is None or not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
        yield consumer
    finally:
        await consumer.stop()


async def eventually(predicate: Any, *, within: float = 30.0, every: float = 0.02) -> None:
    """Poll ``predicate()`` until true, bounded by ``within`` (state owned by another task)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - nothing to await: the state has no event
            await asyncio.sleep(every)
