"""Helpers for router tests: a router subprocess, command publishing, output collection."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from core.kafka import ensure_topics, make_admin, make_consumer, make_producer, start_client
from core.settings import Settings
from router._config_view import ConfigView
from router._route import Router
from router._state import PartitionedState
from router.app import router_topics
from schemas import (
    CONNECTORS,
    ActionConfig,
    Command,
    CommandSource,
    ConnectorOptions,
    Limits,
    Result,
    RoutedCommand,
    WorkspaceConfig,
    command_id_for,
)
from switchyard.tenants import publish_workspaces

REPO = Path(__file__).resolve().parents[2]


@dataclass
class StreamMessage:
    """What the router reads of a faust event's message (an in-process batch needs no faust)."""

    topic: str
    partition: int
    offset: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    acked: bool = False

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass
class StreamEvent:
    value: bytes
    message: StreamMessage


def stream_events(
    settings: Settings, commands: list[Command], first_offset: int = 0
) -> list[StreamEvent]:
    """``commands`` as consecutive events of partition 0 of the commands topic."""
    return [
        StreamEvent(c.to_bytes(), StreamMessage(settings.topics.commands, 0, first_offset + i))
        for i, c in enumerate(commands)
    ]


def changelog_topics(settings: Settings) -> tuple[str, str]:
    """The dedup and usage changelog topics of an in-process router."""
    return f"{settings.topic_prefix}dedup-changelog", f"{settings.topic_prefix}usage-changelog"


@asynccontextmanager
async def in_process_router(settings: Settings) -> AsyncIterator[Router]:
    """A Router on real Kafka (config view, producer, changelogs), without faust around it."""
    changelogs = changelog_topics(settings)
    await ensure_topics(settings, changelogs)
    config = ConfigView(settings)
    producer = make_producer(settings, linger_ms=1)
    await start_client(producer, what="test producer")
    await config.start()
    try:
        router = Router(
            settings,
            config,
            PartitionedState(SimpleNamespace(data={}), changelogs[0]),
            PartitionedState(SimpleNamespace(data={}), changelogs[1]),
            producer,
        )
        names, _ = router_topics(settings)
        for name in names:
            if name not in (settings.topics.commands, settings.topics.config):
                router.partitions[name] = sorted(await producer.partitions_for(name))
        yield router
    finally:
        await config.stop()
        await producer.stop()


def summary_action(
    connector: str, operation: str, arguments: dict[str, Any], **extra: Any
) -> ActionConfig:
    return ActionConfig(
        name="daily_summary",
        input_schema={
            "type": "object",
            "properties": {
                "summary": {"type": "string", "minLength": 1},
                "count": {"type": "integer"},
            },
            "required": ["summary"],
            "additionalProperties": False,
        },
        connector=connector,
        operation=operation,
        arguments=arguments,
        **extra,
    )


def workspace(
    tenant: str, actions: list[ActionConfig], *, version: int = 1, space: str = "main", **extra: Any
) -> WorkspaceConfig:
    connectors = extra.pop("connectors", None)
    if connectors is None:
        connectors = {a.connector: ConnectorOptions() for a in actions}
    return WorkspaceConfig(
        tenant_id=tenant,
        space_id=space,
        version=version,
        actions=actions,
        connectors=connectors,
        limits=extra.pop("limits", Limits(rate_per_second=10_000, burst=10_000)),
        **extra,
    )


def command(
    tenant: str,
    arguments: dict[str, Any] | None = None,
    *,
    action: str = "daily_summary",
    role: str = "member",
    key: str | None = None,
    deadline: timedelta = timedelta(minutes=5),
    space: str = "main",
    tenant_wide_key: bool = False,
) -> Command:
    """A command as the ingress publishes it; ``tenant_wide_key``: as it published them
    before idempotency keys were per workspace (an id from tenant and key)."""
    now = datetime.now(UTC)
    key = key or uuid.uuid4().hex
    return Command(
        command_id=tenant_wide_id(tenant, key) if tenant_wide_key else command_id_for(tenant, space, key),
        tenant_id=tenant,
        space_id=space,
        user_id="agent@example.com",
        role=role,
        action=action,
        arguments={"summary": "all green"} if arguments is None else arguments,
        idempotency_key=key,
        submitted_at=now,
        deadline=now + deadline,
        source=CommandSource.REST,
    )


def tenant_wide_id(tenant: str, key: str) -> str:
    """The id an ingress gave a command before keys were per workspace (2026-11-29)."""
    digest = hashlib.sha256(f"switchyard\0{tenant}\0{key}".encode()).digest()
    return base64.b32encode(digest[:20])[:26].lower().decode()


async def prepare_topics(settings: Settings) -> None:
    names, configs = router_topics(settings)
    await ensure_topics(settings, names, configs=configs)


async def delete_topics(settings: Settings) -> None:
    """Delete every topic of this test's prefix (router changelogs included).

    A shared development broker otherwise accumulates thousands of partitions over a
    day of test runs (its heap is small).
    """
    admin = make_admin(settings)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def publish(
    settings: Settings, commands: Iterable[Command], headers: list[tuple[str, bytes]] | None = None
) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.topics.commands,
                c.to_bytes(),
                key=c.tenant_id.encode(),
                headers=headers or [],
            )
            for c in commands
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def publish_raw(
    settings: Settings, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None
) -> None:
    producer: AIOKafkaProducer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.commands, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def apply(settings: Settings, *workspaces: WorkspaceConfig) -> None:
    await publish_workspaces(settings, list(workspaces))


@dataclass
class Output:
    topic: str
    partition: int
    headers: dict[str, str]
    routed: RoutedCommand | None = None
    result: Result | None = None

    @property
    def command_id(self) -> str:
        return (self.routed or self.result).command_id  # type: ignore[union-attr]


@dataclass
class Outputs:
    """Reads every connector topic and the results topic from the beginning."""

    settings: Settings
    consumer: AIOKafkaConsumer | None = None
    items: list[Output] = field(default_factory=list)

    async def start(self) -> Outputs:
        topics = [self.settings.topics.connector(n) for n in CONNECTORS] + [
            self.settings.topics.results
        ]
        admin = make_admin(self.settings)
        await admin.start()
        tps: list[TopicPartition] = []
        try:
            # Topics created a moment ago take a few metadata rounds to show all partitions.
            async with asyncio.timeout(30):
                while len(tps) != len(topics) * self.settings.topic_partitions:
                    described = await admin.describe_topics(topics)
                    tps = [
                        TopicPartition(d["topic"], p["partition"])
                        for d in described
                        for p in d["partitions"]
                    ]
        finally:
            await admin.close()
        self.consumer = make_consumer(
            self.settings, group_id=None, isolation_level="read_uncommitted"
        )
        await self.consumer.start()
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        return self

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def _poll(self) -> None:
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
        for tp, records in batches.items():
            for record in records:
                headers = {k: v.decode() for k, v in record.headers or ()}
                out = Output(tp.topic, tp.partition, headers)
                if tp.topic == self.settings.topics.results:
                    out.result = Result.from_bytes(record.value)
                else:
                    out.routed = RoutedCommand.from_bytes(record.value)
                self.items.append(out)

    async def wait_for(
        self, done: Callable[[list[Output]], bool], limit: float = 60.0
    ) -> list[Output]:
        async with asyncio.timeout(limit):
            while not done(self.items):
                await self._poll()
        return self.items

    async def wait_ids(self, ids: Iterable[str], limit: float = 60.0) -> dict[str, Output]:
        wanted = set(ids)
        await self.wait_for(lambda items: wanted <= {o.command_id for o in items}, limit)
        return {o.command_id: o for o in self.items if o.command_id in wanted}

    async def settle(self, rounds: int = 5) -> list[Output]:
        """Poll a few more rounds (a bounded quiet period) to catch late duplicates."""
        for _ in range(rounds):
            await self._poll()
        return self.items


class RouterProcess:
    """``python -m switchyard.cli router`` as a child process with its own env."""

    def __init__(self, settings: Settings, home: Path) -> None:
        self.settings = settings
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "router.log"
        self.starts = 0

    def start(self) -> RouterProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env.update(
            SWITCHYARD_KAFKA_BOOTSTRAP=self.settings.kafka_bootstrap,
            SWITCHYARD_TOPIC_PREFIX=self.settings.topic_prefix,
            SWITCHYARD_TOPIC_PARTITIONS=str(self.settings.topic_partitions),
            SWITCHYARD_REPLICATION_FACTOR=str(self.settings.replication_factor),
            SWITCHYARD_HOME=str(self.home),
            SWITCHYARD_LOG_LEVEL="INFO",
            PYTHONPATH=str(REPO),
        )
        self.starts += 1
        log = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "switchyard.cli", "router"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
        )
        log.close()
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def story(self, lines: int = 40) -> str:
        """The router's own log lines and every warning, one short line each.

        What a failure message needs: faust's start and stop chatter would fill a CI
        excerpt and push out the lines that say what went wrong.
        """
        kept = []
        for line in self.logs().splitlines():
            try:
                entry = json.loads(line[line.find("{") :])
            except ValueError:
                continue
            own = not str(entry.get("logger", "")).startswith(("faust.", "mode."))
            if own or entry.get("level") in ("warning", "error", "critical"):
                fields = {
                    k: v for k, v in entry.items() if k not in ("ts", "level", "service", "logger")
                }
                kept.append(f"{entry.get('ts', '')[11:23]} {entry.get('level')} {fields}"[:300])
        return "\n".join(kept[-lines:])
