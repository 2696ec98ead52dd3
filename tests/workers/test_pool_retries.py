"""Retries against real Kafka: in-process backoff, retry tier topics, dead letters, breakers."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from _runtime_support import (
    Upstream,
    all_results,
    command,
    pool_running,
    produce,
    put_tenant,
    read_topic,
    wait_results,
)
from aiokafka import TopicPartition

from core.kafka import make_admin, make_consumer, start_client
from core.metrics import BreakerState, Metrics
from schemas import ErrorCode, Headers, ResultStatus, RoutedCommand
from workers._pool import PoolOptions

pytestmark = pytest.mark.integration


async def test_429_and_500_storm_ends_in_success_or_dead_letter_with_exactly_one_result_each(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenants = [f"s{i}{settings.topic_prefix[1:9]}" for i in range(3)]
        for tenant in tenants:
            await put_tenant(vault_admin, upstream, tenant)
        # Recovers within the in-process retries (2 attempts per delivery).
        quick = [command(t, faults=[429], retry_after="0") for t in tenants for _ in range(5)]
        # Needs the retry tiers: 3 failures = first delivery (2) + tier 0 (1 failure, 1 success).
        tiered = [command(t, faults=[500, 503, 500]) for t in tenants for _ in range(5)]
        # Never recovers: 1 + 2 tiers = 3 deliveries x 2 attempts, then the dead-letter topic.
        doomed = [command(t, faults=[500] * 50) for t in tenants for _ in range(3)]
        everything = quick + tiered + doomed
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, everything)
            await wait_results(settings, {c.command_id for c in everything})
        results = await all_results(settings)
        dead = [RoutedCommand.from_bytes(r.value) for r in await read_topic(settings, settings.topics.dead_letters)]

    assert Counter(len(results[c.command_id]) for c in everything) == {1: len(everything)}
    for cmd in quick:
        (result,) = results[cmd.command_id]
        assert (result.status, result.attempts) == (ResultStatus.SUCCEEDED, 2)
    for cmd in tiered:
        (result,) = results[cmd.command_id]
        assert (result.status, result.attempts) == (ResultStatus.SUCCEEDED, 4)
        assert len(upstream.calls_for(cmd.command_id)) == 4
    for cmd in doomed:
        (result,) = results[cmd.command_id]
        assert result.status is ResultStatus.DEAD_LETTERED
        assert result.error is not None and result.error.code is ErrorCode.RETRIES_EXHAUSTED
        assert result.attempts == 6 == len(upstream.calls_for(cmd.command_id))
    assert sorted(d.command_id for d in dead) == sorted(c.command_id for c in doomed)
    for letter in dead:
        assert [e.code for e in letter.errors] == [ErrorCode.UPSTREAM_UNAVAILABLE] * 6
        assert all(e.http_status == 500 and e.retryable for e in letter.errors)
        assert letter.attempt == 3


async def test_retry_tier_hand_off_carries_history_and_the_trace_of_earlier_attempts(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenant = f"h{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        cmd = command(tenant, faults=[500, 500])
        async with pool_running(settings, vault_admin, upstream):
            await produce(settings, [cmd], extra_headers=[(Headers.CONCURRENCY, b"3")])
            await wait_results(settings, {cmd.command_id})
        results = await all_results(settings)
        records = await read_topic(settings, settings.topics.retry("echo", 0))
        tier0 = [RoutedCommand.from_bytes(r.value) for r in records]
    # The workspace's cap goes with the command to the tier, as the router stamped it.
    assert [dict(r.headers).get(Headers.CONCURRENCY) for r in records] == [b"3"]

    (result,) = results[cmd.command_id]
    assert result.status is ResultStatus.SUCCEEDED and result.attempts == 3
    (handoff,) = tier0
    assert handoff.attempt == 2 and handoff.not_before is not None and len(handoff.errors) == 2
    assert handoff.not_before > handoff.routed_at
    names = [s.name for s in result.spans]
    assert names.count("worker.execute") == 2 and names.count("upstream.echo.send") == 3
    assert {s.trace_id for s in result.spans} == {result.trace_id}


async def test_a_drained_retry_tier_is_committed_past_its_transaction_markers(settings, vault_admin):
    # Tier topics are written in transactions: each commit leaves a marker after the
    # records. Committed one short of the end, a drained tier read a lag of 1 for ever
    # (and KEDA kept a pool meant to scale to zero at one replica).
    upstream = Upstream()
    tier = settings.topics.retry("echo", 0)
    async with upstream.running():
        tenant = f"m{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        commands = [command(tenant, faults=[500, 500]) for _ in range(3)]
        async with pool_running(settings, vault_admin, upstream) as pool:
            await produce(settings, commands)
            await wait_results(settings, {c.command_id for c in commands})
            admin, reader = make_admin(settings), make_consumer(settings, group_id=None)
            await start_client(admin, what="test admin")
            await start_client(reader, what="test reader")
            try:
                tps = [TopicPartition(tier, p) for p in range(settings.topic_partitions)]
                ends = {tp: end for tp, end in (await reader.end_offsets(tps)).items() if end > 0}
                assert ends  # the commands went through the tier

                async def committed() -> dict[TopicPartition, int]:
                    offsets = await admin.list_consumer_group_offsets(pool.group_id, partitions=list(ends))
                    return {tp: meta.offset for tp, meta in offsets.items()}

                async with asyncio.timeout(20):
                    while (done := await committed()) != ends:  # noqa: ASYNC110 - bounded; read from the broker
                        await asyncio.sleep(0.1)
            finally:
                await admin.close()
                await reader.stop()
    assert done == ends


async def test_open_circuit_short_circuits_only_the_failing_tenant(settings, vault_admin):
    upstream = Upstream()
    options = PoolOptions(
        tier_delays=(0.2, 0.5), breaker_threshold=2, breaker_cooldown=600.0, in_process_attempts=1,
        concurrency=4, tenant_concurrency=1,
    )
    async with upstream.running():
        bad, good = f"bad{settings.topic_prefix[1:9]}", f"good{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, bad)
        await put_tenant(vault_admin, upstream, good)
        broken = [command(bad, faults=[500] * 50) for _ in range(4)]
        fine = [command(good) for _ in range(4)]
        metrics = Metrics("worker-echo")
        async with pool_running(settings, vault_admin, upstream, options=options, metrics=metrics):
            await produce(settings, broken + fine)
            await wait_results(settings, {c.command_id for c in broken + fine})
        results = await all_results(settings)
        dead = [RoutedCommand.from_bytes(r.value) for r in await read_topic(settings, settings.topics.dead_letters)]

    def breaker(tenant: str) -> float | None:
        return metrics.registry.get_sample_value(
            "switchyard_circuit_breaker_state", {"tenant": tenant, "connector": "echo"}
        )

    # The gauge SREs alert on shows the open breaker, and only that tenant's.
    assert (breaker(bad), breaker(good)) == (BreakerState.OPEN, None)
    # Each attempt at the API counted by outcome; the breaker's refusals made no call.
    calls = {
        outcome: metrics.registry.get_sample_value(
            "switchyard_upstream_calls_total", {"connector": "echo", "outcome": outcome}
        )
        for outcome in ("ok", "upstream_unavailable", "circuit_open")
    }
    assert calls == {"ok": 4, "upstream_unavailable": 2, "circuit_open": None}
    assert all(results[c.command_id][0].status is ResultStatus.SUCCEEDED for c in fine)
    # The breaker opened after 2 upstream failures of `bad`: the rest never reached upstream again.
    assert len([c for c in upstream.calls if c.tenant == bad]) == 2
    for cmd in broken:
        (result,) = results[cmd.command_id]
        # The cool-down outlasts the deadline: the command expires now instead of waiting.
        assert result.status is ResultStatus.EXPIRED
        assert result.error is not None and result.error.code is ErrorCode.DEADLINE_EXPIRED
    assert sorted(d.command_id for d in dead) == sorted(c.command_id for c in broken)
    assert all(d.errors[-1].code is ErrorCode.CIRCUIT_OPEN for d in dead)


async def test_a_half_open_probe_keeps_its_turn_through_in_process_retries(settings, vault_admin):
    """The probe that fails once and succeeds on its in-process retry closes the breaker
    (it used to ask the breaker again, be refused as "probing", and leave the tenant's
    circuit open until the process restarted)."""
    upstream = Upstream()
    options = PoolOptions(
        tier_delays=(0.2,), breaker_threshold=2, breaker_cooldown=1.0, in_process_attempts=2,
        concurrency=4, tenant_concurrency=1,
    )
    async with upstream.running():
        tenant = f"probe{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        broken = [command(tenant, faults=[500] * 50) for _ in range(2)]
        async with pool_running(settings, vault_admin, upstream, options=options):
            await produce(settings, broken)
            await wait_results(settings, {c.command_id for c in broken})
            await asyncio.sleep(1.2)  # past the cool-down: the next command is the probe
            probe = command(tenant, faults=[500])
            await produce(settings, [probe])
            await wait_results(settings, {probe.command_id})
            after = [command(tenant) for _ in range(2)]
            await produce(settings, after)
            await wait_results(settings, {c.command_id for c in after})
        results = await all_results(settings)

    (probed,) = results[probe.command_id]
    assert (probed.status, probed.attempts) == (ResultStatus.SUCCEEDED, 2)
    assert [results[c.command_id][0].status for c in after] == [ResultStatus.SUCCEEDED] * 2
