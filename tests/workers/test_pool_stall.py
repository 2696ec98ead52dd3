"""A pool whose event loop stood still checks with the group before it starts anything,
and a command waiting to retry is left to its partition's new owner once it is not ours.

Real Kafka, OpenBao and HTTP upstream. The stall is real too: the test blocks the event
loop the pool runs on (for less than the session timeout, so the group keeps the member
and the real heartbeat confirms it).
"""

from __future__ import annotations

import logging
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

from schemas import ResultStatus
from workers._execute import Abandoned, Job

pytestmark = pytest.mark.integration


async def test_after_a_stall_the_pool_runs_on_once_the_group_confirms_it(settings, vault_admin, caplog) -> None:
    upstream = Upstream()
    async with upstream.running():
        tenant = f"st{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        before = [command(tenant) for _ in range(5)]
        after = [command(tenant) for _ in range(5)]
        async with pool_running(settings, vault_admin, upstream) as pool:
            await produce(settings, before)
            await wait_results(settings, {c.command_id for c in before})
            caplog.set_level(logging.WARNING, logger="workers._stall_guard")
            time.sleep(1.5)  # noqa: ASYNC251 - the stall under test: nothing on the loop runs
            await produce(settings, after)
            # With a confirmation that never came, these would wait out the 30 s hold.
            await wait_results(settings, {c.command_id for c in after}, within=20)
            assert pool.stall_guard.stalls >= 1
        results = await all_results(settings)
    assert "event loop stalled" in caplog.text
    everything = before + after
    assert Counter(len(results[c.command_id]) for c in everything) == {1: len(everything)}
    assert all(results[c.command_id][0].status is ResultStatus.SUCCEEDED for c in everything)


async def test_a_retry_is_not_made_once_the_command_is_no_longer_ours(settings, vault_admin) -> None:
    upstream = Upstream()
    async with upstream.running():
        tenant = f"sr{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        async with pool_running(settings, vault_admin, upstream) as pool:
            given_away = command(tenant, faults=[503])

            async def not_ours() -> bool:
                return False

            with pytest.raises(Abandoned):
                await pool.executor.run(Job(given_away, {}, 0), not_ours)
            assert len(upstream.calls_for(given_away.command_id)) == 1

            kept = command(tenant, faults=[503])

            async def ours() -> bool:
                return True

            outcome = await pool.executor.run(Job(kept, {}, 0), ours)
            assert outcome.status is ResultStatus.SUCCEEDED
            assert len(upstream.calls_for(kept.command_id)) == 2
