"""``tenant_memory``: each process's resident memory as the number of distinct tenants grows.

The target: memory bounded under any tenant count (caches and label sets capped). A
*unit* of traffic for a tenant id is:

- one Command onto the commands topic, as the ingress publishes it: the router routes it
  by the tenant's workspace (published to the config topic when the tenant is new, so
  the router and every ingress hold it) to the Slack pool, which fails it;
- one RoutedCommand onto the Slack topic, as the router publishes it: the worker pool
  mints the tenant's Vault token, finds no credentials and publishes a failed Result;
- one request to the ingress with an API key of a key id nobody issued (401).

Every Result also passes the ingress's results feed and its per-tenant observer. Each
step (cumulative 7,000 → 14,000 → 21,000 tenant ids by default: the last step lies
wholly past every cap — metric labels 200 tenants, the observer 1,000, the workers'
tokens and breakers 10,000) sends first one more unit for each tenant of the step before
(the control: known tenants, the same count, each still below its breaker's threshold),
then one unit for each new id, and samples every process's resident set (``VmRSS``)
before, between and after, and the series each ``/metrics`` serves.

Caches that fill per command (the ingress's last 100,000 Results, the router's duplicate
check up to 500,000 keys) grow alike in both halves; the difference, per new tenant, is
what a tenant costs once the caps are full: its workspace's JSON in the router and every
ingress (``core.workspaces``, ~1 KiB), and nothing else unless something is uncapped.

What it cannot reach: the ingress's per-tenant state behind authentication (rate
buckets, task ledger) at these counts, since each new API key's first check is a scrypt
of tens of milliseconds by design (those are LRUs of fixed size, unit-tested).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from core.kafka import make_producer, start_client
from ingress.admin import publish_config
from ingress.pipeline import COMMAND_KIND, COMMAND_SCHEMA
from schemas import Command, CommandSource, Headers, command_id_for
from switchyard.system import LocalSystem

from ._cpu import process_ids
from ._load import ResultClock
from ._noisy_worker import routed_command, routed_headers
from ._tenants import slack_tenant

__all__ = ["STEPS", "QUICK_STEPS", "tenant_memory"]

# Steps of equal size (each step's control is the one before); past 14,000 every cap is
# full (metric labels 200 tenants, the observer 1,000, the workers' caches 10,000).
STEPS = (7_000, 14_000, 21_000)
QUICK_STEPS = (400, 800, 1_200)
# Concurrent 401 requests to the ingress.
_PROBES_IN_FLIGHT = 16
_SERIES = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? ", re.M)


def _command(tenant: str) -> Command:
    """A command as the ingress publishes it."""
    key = f"mem-{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    return Command(
        command_id=command_id_for(tenant, "main", key),
        tenant_id=tenant,
        space_id="main",
        user_id=f"user@{tenant}",
        role="admin",
        action="daily_summary",
        arguments={"summary": "memory bench"},
        idempotency_key=key,
        submitted_at=now,
        deadline=now + timedelta(minutes=10),
        source=CommandSource.REST,
    )


def rss_mib(system: LocalSystem) -> dict[str, float]:
    """Resident set size of every process of the system (and the bench's own), MiB."""
    out: dict[str, float] = {}
    for name, pid in process_ids(system).items():
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        out[name] = round(int(line.split()[1]) / 1024, 1)
        except OSError:
            continue
    return dict(sorted(out.items()))


async def _series(session: aiohttp.ClientSession, system: LocalSystem) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, url in sorted(system.metrics_urls.items()):
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    out[name] = len(_SERIES.findall(await response.text()))
        except (aiohttp.ClientError, OSError):
            continue
    return out


async def _unknown_keys(session: aiohttp.ClientSession, url: str, tenants: list[str]) -> dict[str, int]:
    """One request per tenant with a well-formed API key nobody issued; statuses counted."""
    statuses: dict[str, int] = {}
    slots = asyncio.Semaphore(_PROBES_IN_FLIGHT)

    async def probe(index: int) -> None:
        key = f"sy_{uuid.uuid4().hex[:16]}_{uuid.uuid4().hex}{uuid.uuid4().hex[:11]}"
        async with slots, session.get(
            f"{url}/v1/commands/unknown-{index}", headers={"Authorization": f"Bearer {key}"}
        ) as response:
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1

    await asyncio.gather(*(probe(i) for i in range(len(tenants))))
    return statuses


async def _units(
    system: LocalSystem, clock: ResultClock, producer: Any, session: aiohttp.ClientSession, tenants: list[str]
) -> dict[str, Any]:
    """One unit of traffic per entry of ``tenants`` (ids may repeat); waits for every Result."""
    settings = system.settings
    started = time.perf_counter()
    ids, sends = [], []
    for tenant in tenants:
        command = _command(tenant)
        sends.append(await producer.send(
            settings.topics.commands, command.to_bytes(), key=tenant.encode(),
            headers=Headers.for_command(tenant, "main", command.command_id, kind=COMMAND_KIND, schema=COMMAND_SCHEMA),
        ))  # fmt: skip
        routed = routed_command(tenant, 0, deadline_s=600)
        sends.append(await producer.send(
            settings.topics.connector("slack"), routed.to_bytes(), key=tenant.encode(), headers=routed_headers(routed),
        ))  # fmt: skip
        ids += [command.command_id, routed.command_id]
    await asyncio.gather(*sends)
    statuses = await _unknown_keys(session, system.ingress_url, tenants)
    finished = await clock.all_arrived(ids, within=max(180.0, len(ids) / 20))
    seconds = time.perf_counter() - started
    await asyncio.sleep(1.0)  # the last Results' follow-up work (logs, metrics)
    return {
        "units": len(tenants),
        "all_results_arrived": finished,
        "result_statuses": clock.summary(ids)["statuses"],
        "unknown_key_statuses": statuses,
        "seconds": round(seconds, 1),
    }


async def tenant_memory(system: LocalSystem, clock: ResultClock, steps: tuple[int, ...] = STEPS) -> dict[str, Any]:
    """Each step after the first: one more unit for each tenant of the step before (the
    control: caches that fill per command, like the ingress's last 100,000 Results, grow
    alike), then one unit for each new id, as many; the difference is what a tenant costs."""
    producer = make_producer(system.settings, linger_ms=5)
    await start_client(producer, what="bench memory producer")
    run = uuid.uuid4().hex[:6]
    out: dict[str, Any] = {
        "steps_tenants": list(steps),
        "unit": "one Command (routed by the tenant's workspace, published when the tenant is new), "
        "one RoutedCommand (Slack pool: no credentials in Vault), one request with an unissued "
        "API key (ingress: 401)",
        "rss_mib_before": rss_mib(system),
        "steps": [],
    }
    try:
        async with aiohttp.ClientSession() as session:
            out["metric_series_before"] = await _series(session, system)
            previous: list[str] = []
            for index, total in enumerate(steps):
                new = [f"mem{run}_{i}" for i in range(steps[index - 1] if index else 0, total)]
                step: dict[str, Any] = {"tenants": total, "new_tenants": len(new)}
                start = rss_mib(system)
                middle = start
                if previous:
                    control = (previous * (len(new) // len(previous) + 1))[: len(new)]
                    step["control"] = await _units(system, clock, producer, session, control)
                    middle = rss_mib(system)
                await publish_config(system.settings, [slack_tenant(t).workspace() for t in new], producer=producer)
                step["new"] = await _units(system, clock, producer, session, new)
                end = rss_mib(system)
                step["all_results_arrived"] = all(
                    step[half]["all_results_arrived"] for half in ("control", "new") if half in step
                )
                step["rss_mib"] = end
                step["metric_series"] = await _series(session, system)
                step["new_kib_per_unit"] = _per(middle, end, len(new))
                if previous:
                    control_kib = _per(start, middle, len(new))
                    step["control_kib_per_unit"] = control_kib
                    step["kib_per_new_tenant"] = {
                        name: round(kib - control_kib[name], 2)
                        for name, kib in step["new_kib_per_unit"].items() if name in control_kib
                    }  # fmt: skip
                out["steps"].append(step)
                previous = new
    finally:
        await producer.stop()
    return out


def _per(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    return {name: round((after[name] - before[name]) * 1024 / units, 2) for name in after if name in before}

