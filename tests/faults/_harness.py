"""Fault-suite tools: a running system, tenants fit for load, process kills and restarts,
emulator faults. The load generator lives in ``_load``, the results ledger and the
per-scenario counts in ``_ledger``; both are re-exported here."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from core.health import answers_ok
from schemas import ConnectorOptions, Limits, WorkspaceConfig
from switchyard.demo import DemoTenant, demo_tenants
from switchyard.system import LocalSystem, ensure_pool_roles
from workers.emulators.testing import emulator_control

from ._ledger import Counts, ResultLedger, count, effects, repeated_effects
from ._load import Load

__all__ = [
    "FAST_WORKER_ARGS",
    "OPEN_INGRESS_ARGS",
    "Counts",
    "HookTenant",
    "Load",
    "ResultLedger",
    "add_fault",
    "count",
    "effects",
    "repeated_effects",
    "ensure_pool_roles",
    "load_tenants",
    "reset_emulator",
    "restart",
    "sigkill",
    "start_system",
    "wait_ready",
    "wait_until",
    "warm_up",
]

# Short retry tiers: a command's whole retry path fits in seconds, not minutes.
FAST_WORKER_ARGS = ["--retry-tier-delays", "0.5,1,2", "--shutdown-grace", "2"]
# The edge rate limit is not under test here.
OPEN_INGRESS_ARGS = ["--rate", "100000", "--burst", "100000"]
LOAD_LIMITS = Limits(rate_per_second=100000, burst=1000000, concurrency=64)


@dataclass(frozen=True)
class HookTenant(DemoTenant):
    """A tenant of the generic ``http`` connector, calling the emulator's webhook receiver
    (the one upstream here that honours ``Idempotency-Key``)."""

    allowed_hosts: tuple[str, ...] = ()

    def workspace(self) -> WorkspaceConfig:
        base = super().workspace()
        return base.model_copy(
            update={"connectors": {"http": ConnectorOptions(allowed_hosts=list(self.allowed_hosts))}}
        )


def load_tenants(emulator_url: str, spec: Mapping[str, str]) -> list[DemoTenant]:
    """Tenants named by ``spec`` (tenant id → connector) with limits fit for load.

    ``slack``/``gmail``/``notion``/``jira`` tenants reuse the demo's mappings; ``http``
    tenants post the summary to ``<emulator>/hooks/<tenant>``.
    """
    demo = {t.connector: t for t in demo_tenants(emulator_url)}
    host = emulator_url.removeprefix("http://")
    tenants: list[DemoTenant] = []
    for tenant_id, connector in spec.items():
        if connector == "http":
            token = f"hook-{uuid.uuid4().hex}"
            tenants.append(
                HookTenant(
                    tenant_id, "main", "http", "request",
                    {"url": f"{emulator_url}/hooks/{tenant_id}", "method": "POST",
                     "json": {"summary": "{{ args.summary }}"}},
                    {"bearer_token": token}, token, LOAD_LIMITS, allowed_hosts=(host,),
                )
            )
        else:
            base = demo[connector]
            tenants.append(
                DemoTenant(tenant_id, "main", connector, base.operation, base.mapping,
                           base.credentials, base.emulator_token, LOAD_LIMITS)
            )
    return tenants




async def start_system(
    state: Path,
    stack_env: Mapping[str, str],
    *,
    workers: Mapping[str, int],
    env: Mapping[str, str] | None = None,
) -> LocalSystem:
    """A running system with one topic prefix of its own; stopped by the caller."""
    connectors = tuple(workers)
    system = LocalSystem(
        state,
        connectors=connectors,
        workers=workers,
        stack_env=await ensure_pool_roles(stack_env, connectors),
        env={"SWITCHYARD_TOPIC_PREFIX": f"flt{uuid.uuid4().hex[:8]}.",
             "SWITCHYARD_TOPIC_PARTITIONS": "6", **(env or {})},
        args={"worker": FAST_WORKER_ARGS, "ingress": OPEN_INGRESS_ARGS},
    )
    try:
        await system.start()
    except BaseException:
        system.stop()
        raise
    return system


async def warm_up(system: LocalSystem, keys: Mapping[str, str], within: float = 120.0) -> None:
    """One command per tenant, each ended by a Result: the whole pipeline is up (the router's
    tables, every pool's consumer group), so a fault lands on a steady system.

    ``LocalSystem.start`` waits only for the ingress; the router and the workers may still be
    starting when it returns.

    Raises:
        RuntimeError: a warm-up command got no Result within ``within`` seconds.
    """
    ledger = ResultLedger(system.settings)
    await ledger.start()
    try:
        load = Load(system.ingress_url, keys, total=len(keys), batch=1, clients=1, pace=0)
        await load.run()
        await ledger.drain(load.accepted, within, quiet=0)
        missing = [c for c in load.accepted if c not in ledger.results]
    finally:
        await ledger.stop()
    if missing:
        raise RuntimeError(f"{len(missing)} warm-up commands got no Result; dead: {system.dead()}")


# -- processes -------------------------------------------------------------------------


def sigkill(system: LocalSystem, name: str) -> None:
    """SIGKILL the process group of child ``name`` (a crash: no shutdown code runs)."""
    assert system.supervisor is not None
    child = next(c for c in system.supervisor.children if c.name == name)
    os.killpg(child.record.pid, signal.SIGKILL)
    child.proc.wait(timeout=10)
    system.supervisor.stop(name)  # the group is gone: this only forgets the child


async def _metric(system: LocalSystem, names: list[str], metric: str) -> dict[str, float]:
    """The sum of ``metric`` over its labels in each of children ``names``."""
    sums: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        for name in names:
            async with session.get(system.metrics_urls[name]) as response:
                text = await response.text()
            sums[name] = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith(metric + "{")
            )
    return sums


async def in_flight(system: LocalSystem, names: list[str]) -> dict[str, float]:
    """Commands running now in each of children ``names`` (their metrics)."""
    return await _metric(system, names, "switchyard_in_flight")


async def busiest(system: LocalSystem, names: list[str], within: float = 5.0) -> tuple[str, float]:
    """Of children ``names``, the one with the most commands running, and how many.

    The load comes in batches, so a pool is often idle for a moment: the metrics are read
    again (bounded by ``within`` seconds) until one of them runs something. If none does
    by then, the one that has finished the most (it owns the busy partitions).
    """
    deadline = asyncio.get_running_loop().time() + within
    running = await in_flight(system, names)
    while not any(running.values()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
        running = await in_flight(system, names)
    if any(running.values()):
        name = max(names, key=lambda n: running[n])
    else:
        finished = await _metric(system, names, "switchyard_commands_succeeded_total")
        name = max(names, key=lambda n: finished[n])
    return name, running[name]


async def settled(system: LocalSystem, names: list[str], within: float = 30.0) -> None:
    """Wait (bounded) until children ``names`` run nothing, twice in a row a second apart."""
    idle = 0
    async with asyncio.timeout(within):
        while idle < 2:
            idle = idle + 1 if not any((await in_flight(system, names)).values()) else 0
            await asyncio.sleep(1.0)


async def stall(system: LocalSystem, names: list[str], seconds: float) -> None:
    """SIGSTOP the process groups of children ``names``, SIGCONT them ``seconds`` later
    (a VM pause or a long GC: the process wakes up believing it still owns its work)."""
    assert system.supervisor is not None
    pids = [c.record.pid for c in system.supervisor.children if c.name in names]
    assert len(pids) == len(names), names
    for pid in pids:
        os.killpg(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        for pid in pids:
            os.killpg(pid, signal.SIGCONT)


def restart(system: LocalSystem, name: str, argv: list[str], *, metrics: bool = False) -> None:
    """Start child ``name``; with ``metrics``, on a /metrics port of its own (see busiest)."""
    assert system.supervisor is not None
    if metrics:
        system.start_serving_metrics(name, argv)
    else:
        system.start_child(name, argv)


def running_workers(system: LocalSystem, connector: str) -> list[str]:
    """Names of the pool's live worker processes that serve /metrics."""
    assert system.supervisor is not None
    return [
        c.name for c in system.supervisor.children
        if c.name.startswith(f"worker-{connector}-") and c.name in system.metrics_urls
    ]  # fmt: skip


async def wait_ready(url: str, within: float = 90.0) -> None:
    """Poll ``url`` until it answers 200.

    Raises:
        TimeoutError: not ready within ``within`` seconds.
    """
    async with aiohttp.ClientSession() as session, asyncio.timeout(within):
        while not await answers_ok(session, url):  # noqa: ASYNC110 - polled with a bound
            await asyncio.sleep(0.2)


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``condition`` (bounded).

    Raises:
        AssertionError: it did not hold within ``within`` seconds.
    """
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - polled with a bound
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {within:.0f}s") from None


# -- emulator --------------------------------------------------------------------------


async def reset_emulator(system: LocalSystem) -> None:
    async with aiohttp.ClientSession() as session:
        await emulator_control(session, system.emulator_url, "reset", {})


async def add_fault(system: LocalSystem, **spec: Any) -> None:
    async with aiohttp.ClientSession() as session:
        await emulator_control(session, system.emulator_url, "faults", spec)
