"""Two pools of one connector: a rebalance under load neither loses nor duplicates a command."""

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

from workers._pool import PoolOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _options() -> PoolOptions:  # a fresh instance id (transactional id) per pool
    return PoolOptions(tier_delays=(0.2, 0.5), concurrency=16, tenant_concurrency=4, revoke_grace=1.0)


async def test_a_second_pool_joining_under_load_neither_loses_nor_duplicates_commands(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenants = [f"r{i}{settings.topic_prefix[1:9]}" for i in range(6)]
        for tenant in tenants:
            await put_tenant(vault_admin, upstream, tenant)
            upstream.gates[tenant] = asyncio.Event()
        commands = [command(t) for t in tenants * 50]
        async with pool_running(settings, vault_admin, upstream, options=_options()) as first:
            await produce(settings, commands)
            await eventually(lambda: sum(upstream.waiting.values()) == 16)  # saturated, rest queued
            async with pool_running(settings, vault_admin, upstream, options=_options()) as second:
                await eventually(lambda: bool(second.consumer.assignment()), within=60)
                for gate in upstream.gates.values():
                    gate.set()
                await wait_results(settings, {c.command_id for c in commands}, within=120)
        results = await all_results(settings)

    assert Counter(len(results[c.command_id]) for c in commands) == {1: len(commands)}
    assert first.completed.get("succeeded", 0) > 0 and second.completed.get("succeeded", 0) > 0
    assert first.completed["succeeded"] + second.completed["succeeded"] == len(commands)
    # Commands cut by the revocation were redone by their new owner with the same key.
    for cmd in commands:
        assert len({c.idempotency_key for c in upstream.calls_for(cmd.command_id)}) == 1
