"""A pool whose event loop stood still checks with the group before it starts anything,
and a command waiting to retry is left to its partition's new owner once it is not ours.

Real Kafka, OpenBao and HTTP upstream. The stall is real too: the test blocks the event
loop the pool runs on (for less than the session timeout, so the group keeps the member
and the real heartbeat confirms it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from contextlib import asynccontextmanager

import aiohttp
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


@asynccontextmanager
async def _pool_of_one_tenant(settings, vault_admin, prefix: str):  # type: ignore[no-untyped-def]
    """A running pool on the real upstream, with one tenant (``prefix`` + the test's id):
    yields ``(upstream, tenant, pool)``."""
    upstream = Upstream()
    async with upstream.running():
        tenant = f"{prefix}{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        async with pool_running(settings, vault_admin, upstream) as pool:
            yield upstream, tenant, pool


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
    async with _pool_of_one_tenant(settings, vault_admin, "sr") as (upstream, tenant, pool):
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


async def test_a_request_not_yet_written_when_the_loop_stalled_waits_for_the_group(settings, vault_admin) -> None:
    # A call past the start checks when the loop froze (its body not yet written: aiohttp
    # writes it in a task of its own) is not written on waking until the group confirms
    # this member: the new owner of its partition may be making it already.
    async with _pool_of_one_tenant(settings, vault_admin, "sw") as (upstream, tenant, pool):
        warm = command(tenant)  # credentials cached, a connection kept alive
        assert (await pool.executor.run(Job(warm, {}, 0))).status is ResultStatus.SUCCEEDED
        confirmed = asyncio.Event()

        async def confirm() -> bool:
            await confirmed.wait()
            return True

        async def still_ours() -> bool:
            await pool.stall_guard.cleared()
            return True

        stalled = False

        async def stall_once(*_: object) -> None:
            # The stall lands between the request's headers and its body.
            nonlocal stalled
            if not stalled:
                stalled = True
                time.sleep(1.5)  # noqa: ASYNC251 - the stall under test: nothing on the loop runs

        freeze = aiohttp.TraceConfig()
        freeze.on_request_headers_sent.append(stall_once)
        freeze.freeze()
        pool.session._trace_configs.append(freeze)
        pool.stall_guard._confirm = confirm
        held = command(tenant)
        running = asyncio.create_task(pool.executor.run(Job(held, {}, 0), still_ours))
        async with asyncio.timeout(10):
            # (A loop lagging a second on its own under load is a stall too: held the same.)
            while not stalled and not pool.stall_guard.stalls:  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # the loop runs on, the group's answer held back
        assert not running.done()
        assert upstream.calls_for(held.command_id) == []
        confirmed.set()
        outcome = await asyncio.wait_for(running, 10)
        assert outcome.status is ResultStatus.SUCCEEDED
        assert len(upstream.calls_for(held.command_id)) == 1
        assert outcome.result is not None and outcome.result.attempts == 1  # held is no attempt
