"""A flooding tenant is parked on a topic of its pool's own instead of pausing partitions others share."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from _runtime_support import (
    CONNECTOR,
    Upstream,
    all_results,
    command,
    eventually,
    pool_running,
    produce,
    put_tenant,
    read_topic,
    wait_results,
)
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2

from schemas import Headers, ResultStatus
from workers._overflow import PARKED
from workers._pool import PoolOptions

pytestmark = pytest.mark.integration

# Small buffers so that, without parking, 60 flood records fill the pool and pause the
# partition; a long request timeout so the flood's hung calls are not retried meanwhile.
_OPTIONS = PoolOptions(
    tier_delays=(0.2, 0.5),
    concurrency=8,
    tenant_concurrency=2,
    max_buffered=24,
    tenant_backlog=8,
    breaker_threshold=1_000,
    request_timeout=60.0,
)


async def test_flooding_tenant_does_not_stop_another_tenant_in_the_same_partition(
    settings, vault_admin
):
    upstream = Upstream()
    async with upstream.running():
        flood, quiet = f"fl{settings.topic_prefix[1:9]}", f"qu{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, flood)
        await put_tenant(vault_admin, upstream, quiet)
        upstream.gates[flood] = asyncio.Event()  # the flooding tenant's API hangs until released
        flood_cmds = [command(flood) for _ in range(60)]
        quiet_cmds = [command(quiet) for _ in range(6)]
        async with pool_running(settings, vault_admin, upstream, options=_OPTIONS) as pool:
            # One partition, the flood first: a paused partition would hide the quiet tenant.
            await produce(settings, flood_cmds, partition=0)
            await produce(settings, quiet_cmds, partition=0)
            await wait_results(settings, {c.command_id for c in quiet_cmds})
            # Every quiet command finished while the flood had not finished one.
            assert pool.completed.get("succeeded", 0) == 6
            assert upstream.waiting[flood] == 2
            assert pool.scheduler.queued(flood) <= 2 * _OPTIONS.tenant_backlog
            parked = pool.overflow.parked
            assert parked >= 60 - 2 - 2 * _OPTIONS.tenant_backlog  # all but the running and queued
            upstream.gates[flood].set()
            flood_results = await wait_results(settings, {c.command_id for c in flood_cmds})
        results = await all_results(settings)
        parked_topic = await read_topic(settings, settings.topics.parked(CONNECTOR))
        tier0 = await read_topic(settings, settings.topics.retry(CONNECTOR, 0))

    assert Counter(len(results[c.command_id]) for c in flood_cmds + quiet_cmds) == {1: 66}
    assert all(r[0].status is ResultStatus.SUCCEEDED for r in results.values())
    # Parking is not an attempt: one upstream call and attempts == 1 for every flood command.
    assert all(len(upstream.calls_for(c.command_id)) == 1 for c in flood_cmds)
    assert {r[0].attempts for r in flood_results.values()} == {1}
    assert Counter(dict(r.headers)[Headers.KIND] for r in parked_topic) == {PARKED.encode(): parked}
    assert tier0 == []  # the retry tiers carry retries only
    # The trace survives the detour: router.route -> worker.execute -> upstream call.
    for cmd in flood_cmds:
        spans = {s.name: s for s in results[cmd.command_id][0].spans}
        assert spans["worker.execute"].parent_span_id == spans["router.route"].span_id
        assert spans["upstream.echo.send"].parent_span_id == spans["worker.execute"].span_id


async def test_parked_commands_held_at_stop_are_finished_exactly_once_by_the_next_pool(
    settings, vault_admin
):
    upstream = Upstream()
    async with upstream.running():
        flood = f"fs{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, flood)
        upstream.gates[flood] = asyncio.Event()
        flood_cmds = [command(flood) for _ in range(40)]
        options = PoolOptions(
            tier_delays=(0.2, 0.5),
            concurrency=8,
            tenant_concurrency=2,
            max_buffered=16,
            tenant_backlog=3,
            shutdown_grace=0.3,
            request_timeout=60.0,
            breaker_threshold=1_000,
        )
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            await produce(settings, flood_cmds, partition=0)
            await eventually(lambda: pool.overflow.parked >= 20 and upstream.waiting[flood] == 2)
        # Stopped with commands in flight, queued and parked: none may have a Result yet.
        cut = await all_results(settings)
        assert not any(c.command_id in cut for c in flood_cmds)
        upstream.gates[flood].set()
        async with pool_running(settings, vault_admin, upstream, options=options):
            await wait_results(settings, {c.command_id for c in flood_cmds})
        results = await all_results(settings)

    assert Counter(len(results[c.command_id]) for c in flood_cmds) == {1: 40}
    assert all(r[0].status is ResultStatus.SUCCEEDED for r in results.values())


def _same_partition_as(tenant: str, partitions: int) -> str:
    """Another tenant id whose records land on ``tenant``'s partition (Kafka's default
    partitioner: murmur2 of the key)."""
    target = (murmur2(tenant.encode()) & 0x7FFFFFFF) % partitions
    for n in range(10_000):
        other = f"{tenant[:-1]}q{n}"
        if (murmur2(other.encode()) & 0x7FFFFFFF) % partitions == target:
            return other
    raise AssertionError("no tenant id found on that partition")


async def test_a_flood_waiting_parked_does_not_hold_up_another_tenants_retry(settings, vault_admin):
    # The flood's returning parked records pause their partition (past 10 held). They
    # once shared retry tier 0 with everyone's retries: the quiet tenant's retry, on the
    # same partition, waited there until the flood drained.
    options = replace(_OPTIONS, max_delayed_per_partition=10)
    upstream = Upstream()
    async with upstream.running():
        flood = f"fl{settings.topic_prefix[1:9]}"
        quiet = _same_partition_as(flood, settings.topic_partitions)
        await put_tenant(vault_admin, upstream, flood)
        await put_tenant(vault_admin, upstream, quiet)
        upstream.gates[flood] = asyncio.Event()
        flood_cmds = [command(flood) for _ in range(60)]
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            await produce(settings, flood_cmds, partition=0)
            await eventually(lambda: pool.holding.paused, within=30)
            failing = command(quiet, faults=[503] * options.in_process_attempts)
            await produce(settings, [failing], partition=0)
            quiet_results = await wait_results(settings, {failing.command_id}, within=20)
            assert upstream.waiting[flood] == 2  # the flood has not moved meanwhile
            upstream.gates[flood].set()
            await wait_results(settings, {c.command_id for c in flood_cmds})
    [result] = quiet_results[failing.command_id]
    assert result.status is ResultStatus.SUCCEEDED and result.attempts == options.in_process_attempts + 1


async def test_a_tenant_told_to_wait_a_day_cannot_pause_a_partition_others_share(settings, vault_admin):
    # A tenant's own upstream can answer 429 with Retry-After: 86400 to every retry, and
    # its commands may live that long: held in memory, they filled the partition's share
    # (max_delayed_per_partition) and paused it for every tenant on it for a day.
    options = replace(_OPTIONS, max_delayed_per_partition=16)  # a tenant may hold 2
    upstream = Upstream()
    async with upstream.running():
        waiting, quiet = f"wa{settings.topic_prefix[1:9]}", f"qu{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, waiting)
        await put_tenant(vault_admin, upstream, quiet)
        later = datetime.now(UTC) + timedelta(days=1)
        told_to_wait = [command(waiting, deadline_in=2 * 86_400).model_copy(update={"not_before": later})
                        for _ in range(20)]  # fmt: skip
        quiet_cmd = command(quiet)
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            await produce(settings, told_to_wait, partition=0)
            await produce(settings, [quiet_cmd], partition=0)  # behind them, same partition
            await wait_results(settings, {quiet_cmd.command_id, *(c.command_id for c in told_to_wait[2:])})
            held = pool.holding.timed(TopicPartition(settings.topics.connector(CONNECTOR), 0), waiting)
        results = await all_results(settings)

    assert results[quiet_cmd.command_id][0].status is ResultStatus.SUCCEEDED
    assert held == 2 and not any(c.command_id in results for c in told_to_wait[:2])
    for cmd in told_to_wait[2:]:
        (shed,) = results[cmd.command_id]
        assert shed.status is ResultStatus.FAILED and shed.error.retryable
        assert 86_000 < shed.error.retry_after <= 86_400 and shed.attempts == 0


def test_a_command_in_doubt_told_to_wait_is_not_offered_for_resubmission(settings) -> None:
    # Its earlier attempt may have taken effect: submitting it again could repeat that.
    from workers._execute import IN_DOUBT_HEADER, Job
    from workers._pool import WorkerPool, _Item
    from workers.connectors import get_connector

    pool = WorkerPool(settings, get_connector("slack")(), vault=None, options=PoolOptions())
    tp = TopicPartition(settings.topics.connector("slack"), 0)
    due = datetime.now(UTC).timestamp() + 600
    # A new owner's doubt about its first records (doubt_settled_at alone) does not count.
    for headers, retryable in (({}, True), ({IN_DOUBT_HEADER: "1"}, False)):
        job = Job(command("t1"), headers, 0, doubt_settled_at=1.0)
        (error,) = [pool._shed(_Item(tp, 7, 1, job), due).result.error]
        assert error.retryable is retryable and 590 < error.retry_after <= 600
        assert ("may have taken effect" in error.message) is (not retryable)
