"""Test support: a real ingress on a free port, tenants with keys, and a fake responder.

Used by the ingress tests, the MCP tests and end-to-end tests (the way
``temporalio.testing`` ships a test environment with the SDK). Everything runs against
the real broker named by the settings; nothing here is a mock of Kafka.

Typical use (inside an async test, ``settings`` with a unique topic prefix)::

    async with IngressHarness(settings, admin_token="adm") as h:
        acme = await h.add_tenant("acme", "sales", actions=[echo_action()])
        async with h.responder():            # answers every command with a Result
            r = await h.client.post("/v1/commands", json={...}, headers=acme.headers)

``h.client`` is an ``aiohttp.test_utils.TestClient``; ``h.url`` is the server's
``http://127.0.0.1:<port>`` for other clients (the MCP SDK, httpx).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition
from pydantic import SecretStr

from core.follow import TopicFollower
from core.kafka import make_consumer, make_producer, start_client, topic_partitions
from core.settings import Settings
from core.tasks import cancel_and_wait
from schemas import (
    TASK_CANCEL_KIND,
    ActionConfig,
    Command,
    Headers,
    Result,
    ResultStatus,
    StageTimes,
    WorkspaceConfig,
    fields_from_command,
)

from .admin import ensure_ingress_topics, new_api_key, publish_config
from .app import STATE, IngressOptions, create_app

__all__ = [
    "FakeResponder",
    "IngressHarness",
    "TenantHandle",
    "echo_action",
    "echo_result",
    "read_topic",
    "unique_id",
]

Respond = Callable[[Command], "Result | None | Awaitable[Result | None]"]


def unique_id(prefix: str = "t") -> str:
    """A fresh id in the safe character set (tenants, workspaces)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def echo_action(name: str = "echo", connector: str = "http", operation: str = "echo") -> ActionConfig:
    """An action whose fake result echoes the arguments."""
    return ActionConfig(
        name=name,
        description=f"Echo the arguments ({name})",
        input_schema={"type": "object", "properties": {"text": {"type": "string"}}},
        connector=connector,
        operation=operation,
        arguments={"text": "{{ args.text }}"},
    )


def echo_result(command: Command, *, status: ResultStatus = ResultStatus.SUCCEEDED) -> Result:
    """The Result a worker would write for ``command``, echoing its arguments."""
    now = datetime.now(UTC)
    trace_id = command.spans[0].trace_id if command.spans else None
    return Result(
        **fields_from_command(command),
        status=status,
        connector="http",
        operation="echo",
        output={"echo": command.arguments} if status is ResultStatus.SUCCEEDED else None,
        attempts=1,
        times=StageTimes(submitted_at=command.submitted_at, finished_at=now),
        trace_id=trace_id,
        spans=list(command.spans),
    )


class FakeResponder:
    """Stands in for router + workers: reads the commands topic, writes Results.

    ``respond(command)`` returns the Result to write (default :func:`echo_result`), or
    None to leave the command unanswered. Results go to the real results topic, keyed
    by tenant, so every ingress replica sees them as it would a worker's.
    """

    def __init__(self, settings: Settings, respond: Respond | None = None) -> None:
        self.settings = settings
        self._respond = respond or echo_result
        self._queue: asyncio.Queue[Command] = asyncio.Queue()
        self._follower = TopicFollower(
            settings, settings.topics.commands, self._on_record, name="fake-responder"
        )
        self._producer = make_producer(settings)
        self._task: asyncio.Task[None] | None = None
        self.seen: list[Command] = []

    def _on_record(self, record: Any) -> None:
        if (Headers.KIND, TASK_CANCEL_KIND.encode()) in (record.headers or ()):
            return  # an MCP task's cancellation, not a command
        self._queue.put_nowait(Command.from_bytes(record.value))

    async def __aenter__(self) -> FakeResponder:
        await start_client(self._producer, what="fake responder producer")
        await self._follower.start()
        self._task = asyncio.create_task(self._run(), name="fake-responder")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        await self._follower.stop()
        await self._producer.stop()

    async def _run(self) -> None:
        while True:
            command = await self._queue.get()
            self.seen.append(command)
            answer = self._respond(command)
            if isinstance(answer, Awaitable):
                answer = await answer
            if answer is not None:
                await self._producer.send_and_wait(
                    self.settings.topics.results,
                    value=answer.to_bytes(),
                    key=answer.tenant_id.encode(),
                    headers=[(Headers.TENANT, answer.tenant_id.encode()),
                             (Headers.COMMAND_ID, answer.command_id.encode())],
                )


@dataclass(frozen=True, slots=True)
class TenantHandle:
    """A provisioned tenant workspace and its API key (plaintext: tests only)."""

    tenant_id: str
    space_id: str
    api_key: str
    key_id: str
    workspace: WorkspaceConfig
    headers: dict[str, str] = field(default_factory=dict)


async def read_topic(settings: Settings, topic: str, *, timeout: float = 20.0) -> list[Any]:  # noqa: ASYNC109
    """Every record currently in ``topic`` (all partitions, up to the end offsets now)."""
    partitions = await topic_partitions(settings, topic)
    consumer = make_consumer(settings, group_id=None)
    await start_client(consumer, what="topic reader")
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        # Offsets first: once assigned, long-poll fetches slow every offset request.
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        async with asyncio.timeout(timeout):
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


class IngressHarness:
    """The real ingress app on 127.0.0.1:<free port>, with its Kafka clients started."""

    def __init__(
        self,
        settings: Settings,
        *,
        admin_token: str = "test-admin-token",
        options: IngressOptions | None = None,
    ) -> None:
        self.settings = settings.model_copy(update={"admin_token": SecretStr(admin_token)})
        self.admin_token = admin_token
        self.options = options or IngressOptions()
        self.client: TestClient[Any, Any]
        self._stack = contextlib.AsyncExitStack()

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def __aenter__(self) -> IngressHarness:
        await ensure_ingress_topics(self.settings)
        app = await create_app(self.settings, self.options)
        # As `switchyard ingress` runs it: a client's disconnect cancels its handler.
        server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
        self.client = TestClient(server)
        await self._stack.enter_async_context(self.client)
        async with asyncio.timeout(30):
            await app[STATE].directory.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def responder(self, respond: Respond | None = None) -> FakeResponder:
        """A :class:`FakeResponder` on this harness's topics (use ``async with``)."""
        return FakeResponder(self.settings, respond)

    async def add_tenant(
        self,
        tenant_id: str,
        space_id: str = "main",
        *,
        actions: list[ActionConfig] | None = None,
        user_id: str = "user1",
        role: str = "member",
        spaces: list[str] | None = None,
    ) -> TenantHandle:
        """Publish a workspace and an API key for it, and wait until the app has read both."""
        workspace = WorkspaceConfig(
            tenant_id=tenant_id,
            space_id=space_id,
            actions=actions if actions is not None else [echo_action()],
            connectors={"http": {}},
        )
        api_key, record = new_api_key(
            tenant_id=tenant_id, spaces=spaces or [space_id], user_id=user_id, role=role
        )
        metadata = await publish_config(self.settings, [workspace, record])
        follower = self.client.app[STATE].directory.follower
        for meta in metadata:
            if not await follower.wait_for(meta.partition, meta.offset, 20.0):
                raise TimeoutError("the ingress did not read the new tenant in time")
        headers = {"Authorization": f"Bearer {api_key}"}
        return TenantHandle(tenant_id, space_id, api_key, record.key_id, workspace, headers)
