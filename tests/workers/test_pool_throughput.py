"""Throughput of one pool process against a fast upstream (reported, not asserted on time)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from _runtime_support import (
    Upstream,
    all_results,
    command,
    pool_running,
    produce,
    put_tenant,
    wait_results,
)

from workers._pool import PoolOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_one_pool_process_throughput_against_a_fast_upstream(settings, vault_admin):
    upstream = Upstream()
    options = PoolOptions(tier_delays=(0.2, 0.5), concurrency=256, tenant_concurrency=16)
    total = 3_000
    async with upstream.running():
        tenants = [f"p{i}{settings.topic_prefix[1:9]}" for i in range(20)]
        for tenant in tenants:
            await put_tenant(vault_admin, upstream, tenant)
        commands = [command(tenants[i % len(tenants)]) for i in range(total)]
        async with pool_running(settings, vault_admin, upstream, options=options):
            # Warm up: group join, Vault tokens for every tenant.
            warm = [command(t) for t in tenants]
            await produce(settings, warm, traced=False)
            await wait_results(settings, {c.command_id for c in warm})
            await produce(settings, commands, traced=False)
            started = time.perf_counter()
            await wait_results(settings, {c.command_id for c in commands}, within=170)
            elapsed = time.perf_counter() - started
        results = await all_results(settings)
    print(f"\nthroughput: {total} commands in {elapsed:.2f}s = {total / elapsed:.0f} commands/s")
    assert Counter(len(results[c.command_id]) for c in commands) == {1: total}
