"""A private 3-broker cluster (RF 3, min.insync.replicas 2) and OpenBao of this module:
a broker SIGKILLed and restarted under load, and OpenBao stopped and restarted under load.

OpenBao runs here rather than on the session stack because stopping it must not touch a
server other tests (or other people) share.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiokafka.partitioner import murmur2

from core.kafka import make_admin
from core.vault import VaultAdmin
from switchyard.demo import DemoTenant
from switchyard.stack import LocalStack
from switchyard.system import LocalSystem

from ._harness import (
    Counts,
    Load,
    ResultLedger,
    count,
    load_tenants,
    reset_emulator,
    start_system,
    wait_ready,
    wait_until,
    warm_up,
)

# The module fixture starts a 3-broker cluster, and with the OpenBao bug below the outage
# scenario waits out three 30 s circuit-breaker cooldowns: more than the default 180 s.
pytestmark = [pytest.mark.fault, pytest.mark.timeout(300)]

TENANTS = {"acme": "slack", "hooka": "http", "hookb": "http"}
WORKERS = {"slack": 1, "http": 2}
TOTAL = 600
# How long OpenBao stays down after the outage's commands are sent: the fault workers'
# whole retry path (tiers of 0.5, 1 and 2 s) several times over.
OUTAGE_HOLD = 15.0


@dataclass
class Cluster:
    stack: LocalStack
    system: LocalSystem
    tenants: dict[str, DemoTenant]
    keys: dict[str, str]

    async def store_credentials(self, tenants: list[DemoTenant] | None = None) -> None:
        """Put the tenants' credentials (back) into OpenBao, as a restore from backup would."""
        env = self.stack.env
        admin = VaultAdmin(env["VAULT_ADDR"], env["VAULT_TOKEN"])
        try:
            for tenant in tenants or list(self.tenants.values()):
                await admin.put_credentials(tenant.tenant_id, tenant.connector, tenant.credentials)
        finally:
            admin.close()


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    state = tmp_path_factory.mktemp("cluster")
    stack = LocalStack(state / "stack", brokers=3)
    system: LocalSystem | None = None
    try:
        env = await asyncio.to_thread(stack.up)
        system = await start_system(
            state / "system", env, workers=WORKERS, env={"SWITCHYARD_REPLICATION_FACTOR": "3"}
        )
        tenants = load_tenants(system.emulator_url, TENANTS)
        keys = await system.provision(tenants)
        await warm_up(system, keys)
        yield Cluster(stack, system, {t.tenant_id: t for t in tenants}, keys)
    finally:
        if system is not None:
            system.stop()
        await asyncio.to_thread(stack.down)


async def _replicas(system: LocalSystem, topic: str) -> set[int]:
    """The replica counts of ``topic``'s partitions."""
    admin = make_admin(system.settings)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {len(partition["replicas"]) for partition in described["partitions"]}


async def test_a_sigkilled_broker_of_three_restarted_under_load_loses_and_duplicates_no_command(
    cluster: Cluster,
) -> None:
    system = cluster.system
    assert await _replicas(system, system.settings.topics.commands) == {3}
    assert await _replicas(system, system.settings.topics.results) == {3}
    await reset_emulator(system)
    ledger = ResultLedger(system.settings)
    await ledger.start()
    try:
        load = Load(system.ingress_url, cluster.keys, total=TOTAL, pace=0.3)
        submitting = asyncio.create_task(load.run())
        await wait_until(lambda: len(load.accepted) >= TOTAL // 4 or submitting.done(), 90, "a quarter accepted")
        assert not submitting.done(), "the load finished before the broker was killed"
        # Node 2 of 3: with RF 3 and min.insync.replicas 2 every partition keeps a writable ISR.
        await asyncio.to_thread(cluster.stack.stop_kafka, 1)
        await wait_until(lambda: len(load.accepted) >= TOTAL // 2 or submitting.done(), 90, "half accepted")
        await asyncio.to_thread(cluster.stack.start_kafka, 1)
        async with asyncio.timeout(150):
            await submitting
        counts = await count("sigkill 1 of 3 brokers", system, ledger, load, connectors=WORKERS, within=150)
    finally:
        await ledger.stop()
    assert counts.accepted == TOTAL
    assert counts.lost == 0 and counts.duplicates == 0, counts
    assert counts.final == counts.accepted
    assert counts.statuses == {"succeeded": TOTAL}, counts.statuses
    http = counts.effects["http"]
    assert http["keys_with_repeats"] == 0 and http["keys"] == http["succeeded"], http
    assert system.dead() == [], system.dead()


def _partition_twin(tenant_id: str, partitions: int) -> str:
    """Another tenant id whose commands land on the same partition as ``tenant_id``'s."""
    def partition(key: str) -> int:
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

    return next(f"w{n}{tenant_id}" for n in range(10_000) if partition(f"w{n}{tenant_id}") == partition(tenant_id))


@dataclass
class Outage:
    counts: Counts
    during: Load
    after: Load
    statuses: dict[str, str]  # command id → status of its first Result
    errors: dict[str, str]


@pytest.fixture(scope="module")
async def vault_outage(cluster: Cluster) -> Outage:
    """OpenBao stopped while commands run; started again (empty, as a dev server comes
    back), the credentials restored, then more commands."""
    system = cluster.system
    # Fresh tenants: no worker holds their credentials or Vault tokens in a cache yet, so
    # their commands during the outage must go to Vault and fail there.
    spec = {"vslack": "slack", "vhook": "http"}
    fresh = load_tenants(system.emulator_url, spec)
    # Tenants on the same connector-topic partitions (so the same worker processes) as the
    # fresh ones: one command each before the outage makes those workers log in to OpenBao,
    # as any worker that has run before would have.
    warm = load_tenants(system.emulator_url, {_partition_twin(t, system.settings.topic_partitions): c
                                              for t, c in spec.items()})
    keys = await system.provision(fresh)
    warm_keys = await system.provision(warm)
    warmup = Load(system.ingress_url, warm_keys, total=len(warm), batch=1)
    await reset_emulator(system)
    ledger = ResultLedger(system.settings)
    await ledger.start()
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    try:
        await warmup.run()
        await ledger.drain(warmup.accepted, within=60, quiet=0)
        assert all(ledger.results[c][0][0] == "succeeded" for c in warmup.accepted), ledger.results
        await asyncio.to_thread(cluster.stack.stop_vault)
        during = Load(system.ingress_url, keys, total=150, pace=0.1)
        await during.run()
        # Long past the whole (short) retry path, several times over: commands that could
        # not read their credentials wait for Vault, none ends (before 2026-11-29 each
        # try spent an attempt, and they were dead-lettered within seconds).
        await asyncio.sleep(OUTAGE_HOLD)
        outage_results = sum(1 for c in during.accepted if c in ledger.results)
        marks["outage_s"] = round(time.monotonic() - t0, 1)
        await asyncio.to_thread(cluster.stack.start_vault)
        # The dev server lost everything but the pools' AppRoles: restore the credentials.
        await cluster.store_credentials([*cluster.tenants.values(), *fresh])
        marks["restored_at_s"] = round(time.monotonic() - t0, 1)
        after = Load(system.ingress_url, keys, total=150, pace=0.1)
        await after.run()
        marks["after_sent_at_s"] = round(time.monotonic() - t0, 1)
        counts = await count(
            "openbao stopped and restored", system, ledger, during.merged(after), connectors=WORKERS,
            within=150, extra={"results_during_outage": outage_results, **marks},
        )
    finally:
        await ledger.stop()
    statuses = {c: ledger.results[c][0][0] for c in [*during.accepted, *after.accepted] if c in ledger.results}
    outage = Outage(counts, during, after, statuses, dict(ledger.errors))
    for name, load in (("during the outage", during), ("after the restore", after)):
        split: dict[str, int] = {}
        for command_id in load.accepted:
            key = f"{statuses.get(command_id, 'lost')}:{outage.errors.get(command_id, '-')}"
            split[key] = split.get(key, 0) + 1
        print(f"FAULT-STATUSES openbao, commands sent {name}: {split}", flush=True)
    return outage


async def test_openbao_stopped_and_restarted_under_load_ends_each_command_exactly_once(
    cluster: Cluster, vault_outage: Outage
) -> None:
    counts = vault_outage.counts
    assert counts.accepted == 300
    assert counts.lost == 0 and counts.duplicates == 0, counts
    assert counts.final == counts.accepted
    assert counts.effects["http"]["keys_with_repeats"] == 0, counts.effects
    # Nothing of what was sent during the outage ended while Vault was down.
    assert counts.extra["results_during_outage"] == 0, counts.extra
    assert cluster.system.dead() == [], cluster.system.dead()


async def test_commands_after_openbao_is_restored_succeed(vault_outage: Outage) -> None:
    statuses, errors = vault_outage.statuses, vault_outage.errors
    # While Vault is down the commands wait for it, spending no attempt; between its
    # restart and the restore of the credentials the secret really is missing, a
    # permanent failure.
    for command_id in vault_outage.during.accepted:
        assert statuses[command_id] in ("succeeded", "failed"), (statuses[command_id], errors.get(command_id))
        if statuses[command_id] == "failed":
            assert errors[command_id] == "credentials_missing", errors[command_id]
    # Workers drop their dead Vault tokens and log in again: nothing fails once restored.
    assert all(statuses[c] == "succeeded" for c in vault_outage.after.accepted)


async def test_a_router_and_a_worker_started_while_a_broker_is_down_become_ready(
    cluster: Cluster,
) -> None:
    """Processes (re)started during a broker outage — what an orchestrator does all the
    time — must come up on the two brokers left, not exit on the dead one."""
    system = cluster.system
    await asyncio.to_thread(cluster.stack.stop_kafka, 1)
    router = system.add_router()
    worker = system.add_worker("slack")
    try:
        for name in (router, worker):
            url = system.metrics_urls[name].removesuffix("/metrics") + "/readyz"
            await wait_ready(url, within=120)
        assert router not in system.dead() and worker not in system.dead()
    finally:
        system.stop_worker("slack")
        system.stop_router()
        await asyncio.to_thread(cluster.stack.start_kafka, 1)
    assert system.dead() == [], system.dead()
