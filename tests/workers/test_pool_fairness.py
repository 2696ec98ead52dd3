"""Fair scheduling and shutdown against real Kafka: a slow tenant stalls nobody else."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from _runtime_support import (
    Upstream,
    all_results,
    command,
    eventually,
    pool_running,
    produce,
    put_tenant,
    wait_results,
)

from schemas import Headers, ResultStatus
from workers._pool import PoolOptions

pytestmark = pytest.mark.integration


async def test_slow_tenant_does_not_stall_another_tenant_in_the_same_partition(settings, vault_admin):
    upstream = Upstream()
    options = PoolOptions(tier_delays=(0.2, 0.5), concurrency=16, tenant_concurrency=4)
    async with upstream.running():
        slow, fast = f"slow{settings.topic_prefix[1:9]}", f"fast{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, slow)
        await put_tenant(vault_admin, upstream, fast)
        upstream.gates[slow] = asyncio.Event()  # the slow tenant's API answers only when we say
        slow_cmds = [command(slow) for _ in range(30)]
        fast_cmds = [command(fast) for _ in range(30)]
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            # Same partition, slow tenant's flood first: ordering alone would stall `fast`.
            await produce(settings, slow_cmds, partition=0)
            await produce(settings, fast_cmds, partition=0)
            fast_results = await wait_results(settings, {c.command_id for c in fast_cmds})
            # Every fast command finished while the slow tenant had not completed one.
            assert pool.completed.get("succeeded", 0) == 30
            assert upstream.waiting[slow] == 4 == upstream.max_waiting[slow]
            assert pool.scheduler.running(slow) == 4
            upstream.gates[slow].set()
            await wait_results(settings, {c.command_id for c in slow_cmds})
        results = await all_results(settings)

    assert all(r[0].status is ResultStatus.SUCCEEDED for r in fast_results.values())
    assert Counter(len(results[c.command_id]) for c in slow_cmds + fast_cmds) == {1: 60}
    assert upstream.max_waiting[slow] == 4  # the per-tenant cap held for the whole run


async def test_the_workspace_concurrency_on_a_routed_record_caps_its_tenant(settings, vault_admin):
    # The router stamps the workspace's limits.concurrency on each routed record; the
    # process's own per-tenant cap (8 here) is the ceiling.
    upstream = Upstream()
    options = PoolOptions(tier_delays=(0.2, 0.5), concurrency=16, tenant_concurrency=8)
    async with upstream.running():
        tenant = f"cap{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        upstream.gates[tenant] = asyncio.Event()
        first = [command(tenant) for _ in range(6)]
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            await produce(settings, first, extra_headers=[(Headers.CONCURRENCY, b"2")])
            await eventually(lambda: upstream.waiting[tenant] == 2)
            await asyncio.sleep(0.5)  # a third would have started by now
            assert upstream.max_waiting[tenant] == 2 and pool.scheduler.queued(tenant) == 4
            upstream.gates[tenant].set()
            await wait_results(settings, {c.command_id for c in first})
        results = await all_results(settings)
    assert upstream.max_waiting[tenant] == 2
    assert Counter(len(results[c.command_id]) for c in first) == {1: 6}


async def test_stop_cuts_blocked_commands_and_the_next_pool_redoes_each_exactly_once(settings, vault_admin):
    upstream = Upstream()
    options = PoolOptions(tier_delays=(0.2, 0.5), shutdown_grace=0.3, tenant_concurrency=8)
    async with upstream.running():
        tenant, other = f"g{settings.topic_prefix[1:9]}", f"k{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        await put_tenant(vault_admin, upstream, other)
        upstream.gates[tenant] = asyncio.Event()
        blocked = [command(tenant) for _ in range(6)]
        done = [command(other) for _ in range(6)]
        async with pool_running(settings, vault_admin, upstream, options=options):
            await produce(settings, blocked + done)
            await wait_results(settings, {c.command_id for c in done})
            await eventually(lambda: upstream.waiting[tenant] == 6)
        # Stopped with 6 commands in flight: none of them may have a Result yet.
        cut = await all_results(settings)
        assert not any(c.command_id in cut for c in blocked)
        upstream.gates[tenant].set()
        async with pool_running(settings, vault_admin, upstream, options=options):
            await wait_results(settings, {c.command_id for c in blocked})
        results = await all_results(settings)

    assert Counter(len(results[c.command_id]) for c in blocked + done) == {1: 12}
    for cmd in blocked:
        calls = upstream.calls_for(cmd.command_id)
        # Redone once by the second pool, with the same upstream idempotency key.
        assert len(calls) == 2 and calls[0].idempotency_key == calls[1].idempotency_key
    assert all(len(upstream.calls_for(c.command_id)) == 1 for c in done)
