"""Worker-only benchmarks: the noisy neighbour at the Slack pool, and worker CPU per command.

Both bypass the ingress and the router: RoutedCommands (as the router would publish
them) are produced straight onto the Slack connector topic, and the clock stops when a
command's final Result is on the results topic (``read_committed``), so only the worker
pool (and Kafka) sit on the measured path.

``noisy_worker``: a quiet tenant sends ``quiet_rate`` commands/s for ``duration`` seconds,
first alone, then while a noisy tenant floods ``factor`` × that rate against a slow API
(the emulator delays each of the noisy tenant's calls by ``noisy_latency_ms``). Both
tenants' records go to the same partition (the worst case: one consumer, one fetch
position). It reports the quiet tenant's p99 (command produced → Result seen) alone and
during the flood, and their ratio.

Stated bound: the quiet tenant's p99 during the flood stays within 1.5× its p99 alone
(issue #6's target for the noisy-neighbour benchmark), with exactly one Result per
command for both tenants. Measured, never asserted in tests.

``worker_cpu``: ``commands`` commands of 8 tenants are produced as fast as possible against
a fast emulator; it reports commands/s until the last Result and the worker process's
CPU time (user + system, from ``/proc``) per command.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from core.kafka import make_producer, start_client
from schemas import Headers, RoutedCommand
from switchyard.system import LocalSystem
from workers.emulators.testing import emulator_control

from ._load import ResultClock, percentiles
from ._tenants import slack_tenant

__all__ = ["noisy_worker", "routed_command", "routed_headers", "worker_cpu"]

_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def routed_command(tenant: str, n: int, deadline_s: float) -> RoutedCommand:
    """A command as the router publishes it for the bench tenants' ``daily_summary``."""
    command_id = f"w{uuid.uuid4().hex[:24]}"
    stamp = datetime.now(UTC)
    text = f"worker bench {n}"
    return RoutedCommand(
        command_id=command_id,
        tenant_id=tenant,
        space_id="main",
        user_id=f"demo@{tenant}",
        role="admin",
        action="daily_summary",
        arguments={"summary": text},
        idempotency_key=f"idem-{command_id}",
        submitted_at=stamp,
        deadline=stamp + timedelta(seconds=deadline_s),
        source="rest",
        connector="slack",
        operation="chat.postMessage",
        resolved_arguments={"channel": "#bench", "text": text},
        routed_at=stamp,
    )


def routed_headers(command: RoutedCommand) -> list[tuple[str, bytes]]:
    # What the router puts on a routed record (router._decide).
    return Headers.for_command(
        command.tenant_id, command.space_id, command.command_id, kind="routed", schema="1"
    )


async def _send_at_rate(
    producer: Any,
    topic: str,
    tenant: str,
    *,
    rate: float,
    duration: float,
    partition: int,
    sent: dict[str, float],
    deadline_s: float,
) -> list[str]:
    """Open loop: ``rate`` commands/s for ``duration`` s, in 10 ms ticks; notes each send time."""
    ids: list[str] = []
    tick = 0.01
    started = time.perf_counter()
    n = 0
    futures = []
    # Deliveries are awaited once at the end: waiting per tick would slow the loop down
    # to the broker's acknowledgement latency and turn the open loop into a closed one.
    total = int(rate * duration)
    while (elapsed := time.perf_counter() - started) < duration:
        # Catch up to the schedule: a late tick sends what it owes, so the rate holds.
        due = min(total, int(rate * elapsed) + 1)
        while n < due:
            command = routed_command(tenant, n, deadline_s)
            sent[command.command_id] = time.perf_counter()
            futures.append(
                await producer.send(
                    topic,
                    command.to_bytes(),
                    key=tenant.encode(),
                    headers=routed_headers(command),
                    partition=partition,
                )
            )
            ids.append(command.command_id)
            n += 1
        await asyncio.sleep(tick)
    await asyncio.gather(*futures)
    return ids


def _latency(ids: list[str], sent: dict[str, float], results: ResultClock) -> dict[str, Any]:
    return percentiles(results.arrived[i] - sent[i] for i in ids if i in results.arrived)


async def noisy_worker(
    system: LocalSystem,
    *,
    duration: float = 15.0,
    quiet_rate: float = 20.0,
    factor: int = 20,
    noisy_latency_ms: int = 300,
    partition: int = 0,
) -> dict[str, Any]:
    """The quiet tenant's p99 alone and during the noisy tenant's flood (see module docstring)."""
    run = uuid.uuid4().hex[:6]
    quiet, noisy = slack_tenant(f"wq{run}"), slack_tenant(f"wn{run}")
    await system.provision([quiet, noisy])
    settings = system.settings
    topic = settings.topics.connector("slack")
    results = ResultClock(settings)
    await results.start()
    producer = make_producer(settings, linger_ms=2)
    await start_client(producer, what="bench producer")
    sent: dict[str, float] = {}
    deadline_s = 600.0
    try:
        async with aiohttp.ClientSession() as session:
            # Warm-up: group assignment, each tenant's Vault token, upstream connections.
            warm = [routed_command(t.tenant_id, 0, deadline_s) for t in (quiet, noisy) for _ in range(20)]
            for command in warm:
                await producer.send(
                    topic, command.to_bytes(), key=command.tenant_id.encode(), partition=partition
                )
            await producer.flush()
            await results.all_arrived({c.command_id for c in warm}, within=60)

            # One tenant's commands at ``rate``/s for ``duration`` s onto the shared partition.
            send = functools.partial(
                _send_at_rate,
                producer,
                topic,
                duration=duration,
                partition=partition,
                sent=sent,
                deadline_s=deadline_s,
            )
            alone = await send(quiet.tenant_id, rate=quiet_rate)
            await results.all_arrived(set(alone), within=60)

            noisy_rate = quiet_rate * factor
            await emulator_control(
                session,
                system.emulator_url,
                "faults",
                {
                    "connector": "slack",
                    "tenant": noisy.tenant_id,
                    "kind": "latency",
                    "latency_ms": noisy_latency_ms,
                    "count": int(noisy_rate * duration * 3),
                },
            )
            flood_started = time.perf_counter()
            flood = asyncio.create_task(send(noisy.tenant_id, rate=noisy_rate))
            # Let the flood build a backlog first, then measure the quiet tenant during it.
            await asyncio.sleep(min(2.0, duration / 5))
            together = await send(quiet.tenant_id, rate=quiet_rate)
            flooded = await flood
            quiet_done = await results.all_arrived(set(together), within=120)
            noisy_in_window = sum(1 for i in flooded if i in results.arrived)
            # The slow API heals: the rest of the flood drains fast (and is counted).
            await emulator_control(session, system.emulator_url, "reset", {})
            noisy_done = await results.all_arrived(set(flooded), within=300)
            flood_seconds = time.perf_counter() - flood_started
    finally:
        await producer.stop()
        await results.stop()
    p_alone, p_flood = _latency(alone, sent, results), _latency(together, sent, results)
    ratio = None
    if p_alone.get("p99_ms") and p_flood.get("p99_ms"):
        ratio = round(p_flood["p99_ms"] / p_alone["p99_ms"], 2)
    return {
        "parameters": {
            "quiet_rate_per_s": quiet_rate,
            "noisy_rate_per_s": quiet_rate * factor,
            "factor": factor,
            "duration_s": duration,
            "noisy_api_latency_ms": noisy_latency_ms,
            "same_partition": partition,
            "path": "RoutedCommand on the slack topic -> worker pool -> Result on the results topic",
        },
        "bound": "quiet p99 during the flood <= 1.5 x quiet p99 alone",
        "quiet_alone": {**p_alone, **results.summary(alone)},
        "quiet_during_flood": {
            **p_flood,
            **results.summary(together),
            "all_within_120s": quiet_done,
        },
        "noisy": {
            **results.summary(flooded),
            "finished_during_slow_window": noisy_in_window,
            "all_within_300s_after_heal": noisy_done,
            "seconds_until_drained": round(flood_seconds, 1),
        },
        "p99_ratio": ratio,
        "within_bound": ratio is not None and ratio <= 1.5,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


def _worker_pids(system: LocalSystem) -> list[int]:
    assert system.supervisor is not None
    return [c.proc.pid for c in system.supervisor.children if c.name.startswith("worker-slack")]


async def worker_cpu(
    system: LocalSystem, *, commands: int = 5_000, tenants: int = 8
) -> dict[str, Any]:
    """Worker commands/s and CPU ms per command against the fast emulator (see module docstring)."""
    run = uuid.uuid4().hex[:6]
    bench = [slack_tenant(f"wc{i}{run}") for i in range(tenants)]
    await system.provision(bench)
    settings = system.settings
    topic = settings.topics.connector("slack")
    results = ResultClock(settings)
    await results.start()
    producer = make_producer(settings, linger_ms=5)
    await start_client(producer, what="bench producer")
    pids = _worker_pids(system)
    try:
        warm = [routed_command(t.tenant_id, 0, 600) for t in bench for _ in range(10)]
        for command in warm:
            await producer.send(
                topic, command.to_bytes(), key=command.tenant_id.encode(), headers=routed_headers(command)
            )
        await producer.flush()
        await results.all_arrived({c.command_id for c in warm}, within=60)
        batch = [routed_command(bench[i % tenants].tenant_id, i, 600) for i in range(commands)]
        payloads = [(c.command_id, c.tenant_id.encode(), c.to_bytes(), routed_headers(c)) for c in batch]
        cpu_before = sum(_cpu_seconds(p) for p in pids)
        started = time.perf_counter()
        for _, key, value, headers in payloads:
            await producer.send(topic, value, key=key, headers=headers)
        await producer.flush()
        produced = time.perf_counter()
        done = await results.all_arrived(
            {c.command_id for c in batch}, within=max(120.0, commands / 50)
        )
        last = max(
            (results.arrived[c.command_id] for c in batch if c.command_id in results.arrived),
            default=started,
        )
        cpu_after = sum(_cpu_seconds(p) for p in pids)
    finally:
        await producer.stop()
        await results.stop()
    ids = [c.command_id for c in batch]
    elapsed = last - started
    return {
        "parameters": {"commands": commands, "tenants": tenants, "worker_processes": len(pids)},
        **results.summary(ids),
        "all_within_bound": done,
        "produce_seconds": round(produced - started, 2),
        "seconds": round(elapsed, 2),
        "commands_per_s": round(len(ids) / elapsed, 1) if elapsed > 0 else None,
        "worker_cpu_ms_per_command": round((cpu_after - cpu_before) * 1000 / len(ids), 3),
    }
