"""``switchyard bench --only scale_out``: the scaling story on one machine.

Starts its own private stack — a 3-broker Kafka cluster (replication factor 3,
``min.insync.replicas`` 2) and OpenBao, in ``<state dir>/scale_out`` — and on it a system
with two router processes and one Slack worker process, then walks the Slack pool
1 → 2 → 4 → 2 workers and the routers 2 → 1 → 2. It measures, all in the same run:

- ``phases``: commands/s from the first submit to the last final Result, per phase
  (1, 2, 4 workers on 2 routers; 2 workers on 1 router; 2 workers on 2 routers again);
- ``transitions``: per process joining or leaving, the seconds from the start (or SIGTERM)
  of the process until its consumer group is ``Stable`` with the new member count
  (``to_stable_s``; a join includes the process start-up), and the latency a steady
  trickle of commands saw meanwhile (``trickle``: its p50 and max against the same
  trickle with no change, ``steady_trickle``);
- ``lost`` and ``duplicates``: every submitted command with no Result, or more than one,
  counted per command id after a quiet drain.

It is not in the default ``--only`` list: it needs a cluster of its own (three more
JVMs on the machine), takes about five minutes, and leaves the shared stack alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2

from core.kafka import make_admin, make_consumer, start_client, topic_partitions
from core.settings import Settings, load_settings
from schemas import Headers
from switchyard.stack import LocalStack
from switchyard.system import LocalSystem, ensure_pool_roles

from ._load import ResultClock, percentiles, submit_batches
from ._tenants import slack_tenant

__all__ = [
    "copies_by_command",
    "group_members",
    "measure_scale_out",
    "spread_tenants",
    "wait_group",
]

PARTITIONS = 6
CONNECTOR = "slack"


def spread_tenants(prefix: str, partitions: int, per_partition: int) -> list[str]:
    """Tenant ids putting ``per_partition`` tenants on each partition of a tenant-keyed topic.

    Commands and connector topics are keyed by tenant id; with a handful of random tenants
    some partitions get nothing, and a process owning only those would look idle.
    """
    slots = dict.fromkeys(range(partitions), 0)
    chosen: list[str] = []
    for n in range(100_000):
        tenant = f"{prefix}{n}"
        p = (murmur2(tenant.encode()) & 0x7FFFFFFF) % partitions
        if slots[p] < per_partition:
            slots[p] += 1
            chosen.append(tenant)
            if len(chosen) == partitions * per_partition:
                return chosen
    raise ValueError("no spread found")  # not reached for sane inputs


async def group_members(settings: Settings, group: str) -> tuple[str, int]:
    """The consumer group's state (``Stable``, ``PreparingRebalance``, ...) and member count."""
    admin = make_admin(settings)
    await start_client(admin, what="group watch")
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.to_object()["groups"]
    return str(described["state"]), len(described["members"])


async def wait_group(settings: Settings, group: str, members: int, within: float) -> float:
    """Poll (bounded) until ``group`` is ``Stable`` with ``members`` members.

    Returns:
        The ``time.perf_counter()`` at which that was first seen.

    Raises:
        TimeoutError: not within ``within`` seconds.
    """
    async with asyncio.timeout(within):
        while True:
            with contextlib.suppress(Exception):  # a coordinator moving: ask again
                if await group_members(settings, group) == ("Stable", members):
                    return time.perf_counter()
            await asyncio.sleep(0.1)


def _command_header(record: Any) -> tuple[str, dict[str, Any]] | None:
    raw = dict(record.headers or ()).get(Headers.COMMAND_ID)
    return None if raw is None else (bytes(raw).decode(), {})


async def copies_by_command(
    settings: Settings,
    topic: str,
    *,
    within: float = 120.0,
    command_of: Callable[[Any], tuple[str, dict[str, Any]] | None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every record of ``topic`` (beginning to current end) per command id header
    (or per ``command_of(record)`` → ``(command id, extra fields)``, for records without
    headers such as changelogs).

    A diagnostic for duplicates: two records of one id on a connector topic mean the
    router sent it twice; one there but two Results mean a worker ran it twice.

    Raises:
        TimeoutError: the topic was not read to its end within ``within`` seconds.
    """
    consumer = make_consumer(settings, group_id=None, auto_offset_reset="earliest")
    await start_client(consumer, what="copies by command")
    copies: dict[str, list[dict[str, Any]]] = {}
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        async with asyncio.timeout(within):
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for record in records:
                        found = (command_of or _command_header)(record)
                        if found is None:
                            continue
                        copies.setdefault(found[0], []).append(
                            {
                                "partition": record.partition,
                                "offset": record.offset,
                                "ts": record.timestamp,
                                **found[1],
                            }
                        )
    finally:
        await consumer.stop()
    return copies


class _Run:
    """The running system, the tally and every command id this scenario submitted."""

    def __init__(self, system: LocalSystem, tally: ResultClock, keys: list[str]) -> None:
        self.system = system
        self.tally = tally
        self.keys = keys
        self.submitted: list[str] = []
        self.session: aiohttp.ClientSession | None = None

    async def throughput(self, count: int) -> dict[str, Any]:
        assert self.session is not None
        started = time.perf_counter()
        ids = await submit_batches(self.session, self.system.ingress_url, self.keys, count)
        self.submitted += ids
        last = await self.tally.wait_for(ids, within=max(180.0, count / 20))
        elapsed = last - started
        return {
            "commands": len(ids),
            "seconds": round(elapsed, 2),
            "commands_per_s": round(len(ids) / elapsed, 1),
            # Other loads on the same cores move these numbers: the 1-minute load average
            # at the end of the phase says how much.
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }

    async def trickle(
        self, stop: asyncio.Event, *, rate: float = 40.0, limit: float = 120.0
    ) -> dict[str, Any]:
        """Submit ``rate`` commands/s (batches of 4) until ``stop``; their submit→Result latency."""
        assert self.session is not None
        sent: dict[str, float] = {}
        deadline = time.perf_counter() + limit
        while not stop.is_set() and time.perf_counter() < deadline:
            at = time.perf_counter()
            ids = await submit_batches(
                self.session, self.system.ingress_url, self.keys, 4, batch=4, concurrency=1
            )
            sent.update(dict.fromkeys(ids, at))
            await asyncio.sleep(max(0.0, 4 / rate - (time.perf_counter() - at)))
        self.submitted += sent
        await self.tally.wait_for(sent, within=180)
        latencies = [self.tally.arrived[c] - at for c, at in sent.items()]
        return {"commands": len(sent), "latency": percentiles(latencies)}

    async def transition(self, change: str, group: str, members: int, act: Any) -> dict[str, Any]:
        """Run ``act()`` (start or stop processes) under a trickle; time until ``group`` settles."""
        stop = asyncio.Event()
        trickle = asyncio.create_task(self.trickle(stop))
        await asyncio.sleep(2.0)  # the trickle's steady state before the change
        started = time.perf_counter()
        await asyncio.to_thread(act)  # a graceful stop blocks until the process exited
        stable = await wait_group(self.system.settings, group, members, within=120)
        await asyncio.sleep(3.0)  # and its steady state after the group settled
        stop.set()
        seen = await trickle
        print(
            f"bench: scale_out {change}: stable after {stable - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        return {"change": change, "to_stable_s": round(stable - started, 2), "trickle": seen}


async def measure_scale_out(args: argparse.Namespace) -> dict[str, Any]:
    """Start a 3-broker stack and a 2-router system on it, walk the worker pool, report."""
    count = max(500, int(args.commands * (0.1 if args.quick else 1.0)) // 10)
    state = (args.state_dir or load_settings().home / "bench") / "scale_out"

    def say(line: str) -> None:
        print(f"bench: scale_out {line}", file=sys.stderr, flush=True)

    stack = LocalStack(state / "stack", brokers=3, progress=lambda line: say(f"  {line}"))
    system: LocalSystem | None = None
    report: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "parameters": {
            "brokers": 3,
            "replication_factor": 3,
            "routers": 2,
            "connector": CONNECTOR,
            "topic_partitions": PARTITIONS,
            "commands_per_phase": count,
            "quick": args.quick,
        },
    }
    try:
        say("starting a 3-broker Kafka cluster and OpenBao")
        env = await ensure_pool_roles(await asyncio.to_thread(stack.up), [CONNECTOR])
        system = LocalSystem(
            state / "system",
            connectors=(CONNECTOR,),
            workers={CONNECTOR: 1},
            routers=2,
            stack_env=env,
            env={
                "SWITCHYARD_TOPIC_PREFIX": f"so{uuid.uuid4().hex[:6]}.",
                # INFO (rebalances, fence, seeks) when chasing a duplicate; logs stay in
                # <state dir>/scale_out/system/logs.
                "SWITCHYARD_LOG_LEVEL": args.log_level,
                "SWITCHYARD_TOPIC_PARTITIONS": str(PARTITIONS),
                "SWITCHYARD_REPLICATION_FACTOR": "3",
            },
            progress=say,
            args={"ingress": ["--rate", "1000000", "--burst", "1000000"]},
        )
        await system.start()
        report.update(await _walk(system, count))
    finally:
        if system is not None:
            system.stop()
        await asyncio.to_thread(stack.down)
    return report


async def _walk(system: LocalSystem, count: int) -> dict[str, Any]:
    settings = system.settings
    routers, workers = (
        f"{settings.topic_prefix}router",
        f"{settings.topic_prefix}workers.{CONNECTOR}",
    )
    # Two tenants per partition: every router and worker owns partitions that carry load.
    tenants = [slack_tenant(t) for t in spread_tenants("so", PARTITIONS, 2)]
    keys = list((await system.provision(tenants)).values())
    await wait_group(settings, routers, 2, within=120)
    await wait_group(settings, workers, 1, within=120)
    tally = ResultClock(settings)
    await tally.start()
    run = _Run(system, tally, keys)
    phases: dict[str, Any] = {}
    transitions: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            run.session = session
            await run.throughput(300)  # warm every path (connections, Vault tokens, caches)
            stop = asyncio.Event()
            steady = asyncio.create_task(run.trickle(stop))
            await asyncio.sleep(8.0)
            stop.set()
            steady_trickle = await steady
            phases["workers_1"] = await run.throughput(count)

            def add(n: int) -> Any:
                return lambda: [system.add_worker(CONNECTOR) for _ in range(n)]

            def drop(n: int) -> Any:
                return lambda: [system.stop_worker(CONNECTOR) for _ in range(n)]

            transitions.append(await run.transition("worker joins (1 -> 2)", workers, 2, add(1)))
            phases["workers_2"] = await run.throughput(count)
            transitions.append(await run.transition("workers join (2 -> 4)", workers, 4, add(2)))
            phases["workers_4"] = await run.throughput(count)
            transitions.append(await run.transition("workers leave (4 -> 2)", workers, 2, drop(2)))
            phases["workers_2_after_leave"] = await run.throughput(count)
            transitions.append(
                await run.transition("router leaves (2 -> 1)", routers, 1, system.stop_router)
            )
            phases["routers_1_workers_2"] = await run.throughput(count)
            transitions.append(
                await run.transition("router joins (1 -> 2)", routers, 2, system.add_router)
            )
            phases["routers_2_workers_2"] = await run.throughput(count)
        await tally.quiet(3.0, within=30)
    finally:
        await tally.stop()
    lost = sum(1 for c in run.submitted if c not in tally.counts)
    duplicates = sum(1 for c in run.submitted if tally.counts.get(c, 0) > 1)
    # Where a duplicate came from: two RoutedCommands for one id (router) or one
    # RoutedCommand and two Results (worker).
    routed = await copies_by_command(settings, settings.topics.connector(CONNECTOR))
    routed_twice = [c for c in run.submitted if len(routed.get(c, ())) > 1]
    twice = [c for c in run.submitted if tally.counts.get(c, 0) > 1]
    return {
        "phases": phases,
        "steady_trickle": steady_trickle,
        "transitions": transitions,
        "submitted": len(run.submitted),
        "lost": lost,
        "duplicates": duplicates,
        "routed_more_than_once": len(routed_twice),
        "duplicates_routed_once": sum(1 for c in twice if len(routed.get(c, ())) == 1),
        "duplicate_ids": {
            c: {"results": tally.counts[c], "routed": routed.get(c, [])} for c in twice
        },
        "results_by_status": dict(tally.statuses),
        "dead_processes": system.dead(),
    }
