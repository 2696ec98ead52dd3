"""Whole-pipeline noisy neighbour: a quiet tenant's MCP p99 alone, then beside a flood.

The noisy tenant's API answers every call 300 ms late, and it sends in two ways:

- ``flood_20x``: 20× the quiet tenant's rate, paced (batches every 50 ms) — the target's
  case: a tenant far over its share, within what the machine can carry;
- ``burst``: the same number of commands at once, as fast as the ingress takes them — more
  than the two cores can process in the window, so it measures how long the backlog delays
  everyone, not isolation alone. Reported, not held to the 1.5× bound.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from aiokafka.partitioner import DefaultPartitioner

from switchyard.system import LocalSystem
from workers.emulators.testing import emulator_control

from ._load import ResultClock, mcp_calls, submit_batches

__all__ = ["noisy_neighbour"]

QUIET_RATE = 20.0
FLOOD_FACTOR = 20
SLOW_API_MS = 300
# Each quiet phase lasts at least this long: 1,000 calls, so its p99 is not its 3rd-slowest call.
MIN_PHASE_SECONDS = 50.0
# The flood runs this long before the quiet tenant is measured beside it (its backlog builds).
BUILD_UP_SECONDS = 2.0
_TICK = 0.05


async def noisy_neighbour(
    system: LocalSystem, clock: ResultClock, quiet: tuple[str, str], noisy: tuple[str, str], duration: float,
    *, min_phase: float = MIN_PHASE_SECONDS,
) -> dict[str, Any]:
    """``quiet`` and ``noisy``: (tenant id, API key). Each phase lasts ``duration``, at
    least ``min_phase`` seconds."""
    (quiet_tenant, quiet_key), (noisy_tenant, noisy_key) = quiet, noisy
    duration = max(duration, min_phase)
    url = f"{system.ingress_url}/mcp/main"
    flood_count = int(QUIET_RATE * FLOOD_FACTOR * duration)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        # Unmeasured: the quiet tenant's first calls fill its caches (workspace, credentials).
        await mcp_calls(session, url, quiet_key, duration=2.0, concurrency=0, rate=QUIET_RATE)
        alone = await mcp_calls(
            session, url, quiet_key, duration=duration, concurrency=0, rate=QUIET_RATE
        )
        try:
            await _slow_api(session, system.emulator_url, noisy_tenant, calls=flood_count * 3)
            paced = asyncio.create_task(
                _paced(session, system.ingress_url, noisy_key, QUIET_RATE * FLOOD_FACTOR, duration + BUILD_UP_SECONDS)
            )
            await asyncio.sleep(BUILD_UP_SECONDS)
            during_flood = await mcp_calls(
                session, url, quiet_key, duration=duration, concurrency=0, rate=QUIET_RATE
            )
            flood_ids = await paced
            flood_drained = await _drain(session, system.emulator_url, clock, flood_ids)
            await _slow_api(session, system.emulator_url, noisy_tenant, calls=flood_count * 3)
            burst = asyncio.create_task(
                submit_batches(
                    session, system.ingress_url, [noisy_key], flood_count, batch=100, concurrency=1
                )
            )
            during_burst = await mcp_calls(
                session, url, quiet_key, duration=duration, concurrency=0, rate=QUIET_RATE
            )
            burst_ids = await burst
            burst_drained = await _drain(session, system.emulator_url, clock, burst_ids)
        finally:
            await _heal(session, system.emulator_url)
    flood_ratio = _p99_ratio(during_flood, alone)
    partitions = list(range(system.settings.topic_partitions))
    partition_of = DefaultPartitioner()
    return {
        "phase_seconds": duration,
        "flood_build_up_seconds": BUILD_UP_SECONDS,
        "quiet_rate_per_s": QUIET_RATE,
        "noisy_api_latency_ms": SLOW_API_MS,
        # Commands are keyed by tenant: which partition (of every topic) each one's are on.
        "partitions": {
            "quiet": partition_of(quiet_tenant.encode(), partitions, partitions),
            "noisy": partition_of(noisy_tenant.encode(), partitions, partitions),
        },
        "quiet_alone": alone,
        "flood_20x": {
            "noisy_rate_per_s": QUIET_RATE * FLOOD_FACTOR,
            "noisy_rate_achieved_per_s": round(len(flood_ids) / (duration + BUILD_UP_SECONDS), 1),
            "noisy_commands": len(flood_ids),
            "noisy_all_finished": flood_drained,
            "quiet": during_flood,
            "p99_ratio": flood_ratio,
        },
        "burst": {
            "noisy_commands": len(burst_ids),
            "noisy_all_finished": burst_drained,
            "quiet": during_burst,
            "p99_ratio": _p99_ratio(during_burst, alone),
        },
        # The target's measure: the paced 20x flood.
        "p99_ratio": flood_ratio,
    }


async def _slow_api(session: aiohttp.ClientSession, emulator_url: str, tenant: str, *, calls: int) -> None:
    await emulator_control(
        session,
        emulator_url,
        "faults",
        {
            "connector": "slack",
            "tenant": tenant,
            "kind": "latency",
            "latency_ms": SLOW_API_MS,
            "count": calls,
        },
    )


async def _drain(
    session: aiohttp.ClientSession, emulator_url: str, clock: ResultClock, ids: list[str]
) -> bool:
    """Heal the API and wait (bounded) for every flood command's Result, so the flood's
    backlog does not run into the next measurement."""
    await _heal(session, emulator_url)
    return await clock.all_arrived(ids, within=120)


async def _heal(session: aiohttp.ClientSession, emulator_url: str) -> None:
    await emulator_control(session, emulator_url, "reset", {})


async def _paced(
    session: aiohttp.ClientSession, ingress_url: str, key: str, rate: float, duration: float
) -> list[str]:
    """Submit ``rate`` commands/s for ``duration`` s, one batch every 50 ms; returns their ids."""
    per_tick = max(1, round(rate * _TICK))
    body = orjson.dumps(
        {"items": [{"action": "daily_summary", "arguments": {"summary": "flood"}}] * per_tick}
    )
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    ids: list[str] = []
    started = time.perf_counter()
    next_at = started
    while time.perf_counter() - started < duration:
        async with session.post(
            f"{ingress_url}/v1/commands:batch", data=body, headers=headers
        ) as response:
            reply = orjson.loads(await response.read())
            if response.status >= 300:
                raise RuntimeError(f"flood batch answered {response.status}: {reply}")
        ids.extend(item["command_id"] for item in reply["items"] if item.get("command_id"))
        next_at += _TICK
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return ids


def _p99_ratio(during: dict[str, Any], alone: dict[str, Any]) -> float | None:
    """The quiet tenant's p99 beside the flood over its p99 alone, failed calls included."""
    before, beside = alone["latency_all_calls"].get("p99_ms"), during["latency_all_calls"].get("p99_ms")
    if before and beside:
        return round(beside / before, 2)
    return None
