"""The results ledger and the per-scenario counts every fault test prints and asserts.

Counts (one line per scenario, ``FAULT-COUNTS {...}``):

- ``accepted``: commands a client got a 2xx with a command id for;
- ``final``: accepted commands with a final Result on the results topic;
- ``duplicates``: commands (of any id this scenario submitted) with more than one Result;
- ``lost``: accepted commands with no final Result after a bounded drain;
- ``effects``: per connector, idempotency keys the emulator saw a side effect for and how
  many of them saw more than one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import TopicPartition

from core.kafka import make_admin, make_consumer, start_client, topic_partitions
from core.settings import Settings
from ingress.testing import read_topic
from schemas import Headers
from switchyard.system import LocalSystem

from ._load import Load

__all__ = ["Counts", "ResultLedger", "count", "effects", "repeated_effects"]


async def effects(system: LocalSystem, connector: str) -> dict[str, int]:
    """How many times each upstream idempotency key took effect at the emulator."""
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{system.emulator_url}/_emulator/effects", params={"connector": connector}
        ) as response:
            return dict((await response.json())["effects"])


async def repeated_effects(system: LocalSystem, connector: str) -> dict[str, list[dict[str, Any]]]:
    """The emulator's log of each call that took effect again under an idempotency key
    already seen, with the first one: ``{key: [{at, port, path, status}, ...]}`` (to tell
    which process repeated it, and when)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{system.emulator_url}/_emulator/calls", params={"connector": connector}
        ) as response:
            calls = (await response.json())["calls"]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        key = call.get("idempotency_key")
        if key and call["summary"].get("effect"):
            by_key.setdefault(key, []).append(
                {name: call.get(name) for name in ("at", "port", "path", "status")}
            )
    return {key: posts for key, posts in by_key.items() if len(posts) > 1}


class ResultLedger:
    """Every Result on the results topic (from where it stood at :meth:`start`), per command."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.results: dict[str, list[tuple[str, str | None]]] = {}  # id → [(status, connector)]
        self.errors: dict[str, str] = {}  # id → error code of its (first) failed Result
        self.last_arrival = time.monotonic()
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        topic = self.settings.topics.results
        partitions = await topic_partitions(self.settings, topic)
        # read_committed (the factory's default): what downstream consumers see.
        self._consumer = make_consumer(self.settings, group_id=None, max_poll_records=2000)
        await start_client(self._consumer, what="fault ledger")
        assigned = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for tp in assigned:  # resolve the positions now, before any Result of this scenario
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batch.values():
                for record in records:
                    body = orjson.loads(record.value)
                    self.results.setdefault(body["command_id"], []).append(
                        (body["status"], body.get("connector"))
                    )
                    if body.get("error"):
                        self.errors.setdefault(body["command_id"], body["error"].get("code", "?"))
                    self.last_arrival = time.monotonic()

    async def drain(self, ids: Iterable[str], within: float, quiet: float = 2.0) -> None:
        """Wait (bounded) until every id has a Result, then until no Result came for ``quiet`` s
        (a late duplicate would arrive in that window). Never raises: missing ids are the
        ``lost`` count."""
        wanted = set(ids)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not wanted <= self.results.keys():  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.1)
        while time.monotonic() < deadline and time.monotonic() - self.last_arrival < quiet:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


@dataclass
class Counts:
    scenario: str
    accepted: int
    final: int
    duplicates: int
    lost: int
    statuses: dict[str, int]
    effects: dict[str, dict[str, int]]
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra
        return "FAULT-COUNTS " + orjson.dumps(data).decode()


async def count(
    scenario: str,
    system: LocalSystem,
    ledger: ResultLedger,
    load: Load,
    *,
    connectors: Iterable[str],
    within: float = 120.0,
    extra: Mapping[str, Any] | None = None,
) -> Counts:
    """Drain, count, print the scenario's line and return the counts (asserted by the caller)."""
    await ledger.drain(load.accepted, within)
    results = ledger.results
    statuses: dict[str, int] = {}
    for command_id in load.accepted:
        for status, _ in results.get(command_id, [])[:1]:
            statuses[status] = statuses.get(status, 0) + 1
    per_connector: dict[str, dict[str, int]] = {}
    for connector in connectors:
        per_key = {k: v for k, v in (await effects(system, connector)).items() if k}
        succeeded = sum(
            1 for command_id in load.accepted
            if results.get(command_id) and results[command_id][0] == ("succeeded", connector)
        )
        per_connector[connector] = {
            "succeeded": succeeded,
            "keys": len(per_key),
            "keys_with_repeats": sum(1 for v in per_key.values() if v > 1),
            "total": sum(per_key.values()),
        }
    counts = Counts(
        scenario=scenario,
        accepted=len(load.accepted),
        final=sum(1 for command_id in load.accepted if command_id in results),
        duplicates=sum(1 for command_id in load.attempted if len(results.get(command_id, ())) > 1),
        lost=sum(1 for command_id in load.accepted if command_id not in results),
        statuses=statuses,
        effects=per_connector,
        extra={
            "failed_requests": load.failed_requests,
            "resent_items": load.resent_items,
            # Ids sent in a request that failed and never acknowledged later, yet run.
            "ran_unacknowledged": sum(1 for c in load.attempted if c in results and c not in load.accepted),
            "dead_processes": system.dead(),
            **(extra or {}),
        },
    )
    print(counts.line(), flush=True)
    lost = [command_id for command_id in load.accepted if command_id not in results]
    if lost:
        print("FAULT-LOST " + orjson.dumps(await _where_lost(system.settings, lost, connectors)).decode(), flush=True)
    return counts


async def _where_lost(settings: Settings, lost: list[str], connectors: Iterable[str]) -> dict[str, Any]:
    """Where the first lost commands got to: their commands record, the router group's
    committed offset of that partition, and the topics that carry their id since."""
    wanted = set(lost[:20])
    topics = settings.topics
    names = [topics.commands, topics.dead_letters]
    for connector in connectors:
        names += topics.pool_sources(connector)
    where: dict[str, Any] = {command_id: {"seen_on": []} for command_id in wanted}
    for name in names:
        for record in await read_topic(settings, name):
            command_id = dict(record.headers or ()).get(Headers.COMMAND_ID, b"").decode()
            if command_id in wanted:
                where[command_id]["seen_on"].append(f"{name}[{record.partition}]@{record.offset}")
    admin = make_admin(settings)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{settings.topic_prefix}router")
    finally:
        await admin.close()
    router_at = {str(tp.partition): meta.offset for tp, meta in committed.items() if tp.topic == topics.commands}
    return {"lost": len(lost), "router_committed": router_at, "first": where}
