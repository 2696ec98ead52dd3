"""Cancellations against real Kafka: a pool ends a cancelled command that is queued,
waiting for its retry tier, or cancelled before the pool started, without calling the
upstream for it; one already running is not interrupted. The cancellation records are
published as the ingress publishes them (``ingress.pipeline.KafkaPipeline.cancel``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from _runtime_support import (
    CONNECTOR,
    EchoConnector,
    Upstream,
    all_results,
    command,
    eventually,
    pool_running,
    produce,
    put_tenant,
    wait_results,
)

from core.errors import KafkaUnavailable
from core.kafka import ensure_topics, make_producer, start_client
from core.settings import Settings
from core.vault import PoolVault
from schemas import TASK_CANCEL_KIND, ErrorCode, Headers, ResultStatus, TaskCancel
from workers._pool import PoolOptions, WorkerPool

pytestmark = pytest.mark.integration


async def _cancel(settings: Settings, tenant: str, command_id: str) -> None:
    await ensure_topics(settings, [settings.topics.cancels])
    cancel = TaskCancel(command_id=command_id, tenant_id=tenant, space_id="space1", cancelled_at=datetime.now(UTC))
    producer = make_producer(settings)
    await start_client(producer, what="test producer")
    try:
        await producer.send_and_wait(
            settings.topics.cancels,
            cancel.to_bytes(),
            key=tenant.encode(),
            headers=Headers.for_command(tenant, "space1", command_id, kind=TASK_CANCEL_KIND, schema="1"),
        )
    finally:
        await producer.stop()


async def test_a_queued_command_cancelled_ends_rejected_and_the_running_one_finishes(settings, vault_admin):
    upstream = Upstream()
    async with upstream.running():
        tenant = f"q{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        upstream.gates[tenant] = asyncio.Event()
        running, queued, after = command(tenant), command(tenant), command(tenant)
        options = PoolOptions(tier_delays=(0.2,), tenant_concurrency=1, doubt_clock_skew=0.0)
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            await eventually(lambda: bool(pool.consumer.assignment()) and not pool._settling)  # noqa: SLF001
            await asyncio.sleep(0.05)  # commands stamped after the assignment: none in doubt
            await produce(settings, [running, queued, after])
            await eventually(lambda: upstream.waiting[tenant] == 1)  # one at a time: the rest queue
            await _cancel(settings, tenant, running.command_id)
            await _cancel(settings, tenant, queued.command_id)
            await eventually(lambda: pool.cancels.cancelled(tenant, queued.command_id, queued.submitted_at))
            upstream.gates[tenant].set()
            await wait_results(settings, {c.command_id for c in (running, queued, after)})
        results = await all_results(settings)

    # Already running when cancelled: it is not interrupted, its call may have taken effect.
    assert [r.status for r in results[running.command_id]] == [ResultStatus.SUCCEEDED]
    (cancelled,) = results[queued.command_id]
    assert (cancelled.status, cancelled.attempts) == (ResultStatus.REJECTED, 0)
    assert cancelled.error is not None and cancelled.error.code is ErrorCode.CANCELLED
    assert upstream.calls_for(queued.command_id) == []
    assert [r.status for r in results[after.command_id]] == [ResultStatus.SUCCEEDED]


@pytest.mark.parametrize(("delay", "held"), [(3.0, False), (30.0, True)])
async def test_a_command_waiting_for_its_retry_tier_cancelled_fails_with_its_last_error(
    settings, vault_admin, delay: float, held: bool
):
    # Cancelled right after its first attempt, or once it is back from its tier and held
    # until due (30 s): ended when its cancellation is read, not when the delay is up.
    upstream = Upstream()
    async with upstream.running():
        tenant = f"{'h' if held else 'r'}{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        retried = command(tenant, faults=[503, 503])
        options = PoolOptions(tier_delays=(delay,), in_process_attempts=1)
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            await produce(settings, [retried])
            if held:
                await eventually(lambda: len(pool.holding) == 1)
            else:
                await eventually(lambda: len(upstream.calls_for(retried.command_id)) == 1)
            await _cancel(settings, tenant, retried.command_id)
            results = await wait_results(settings, {retried.command_id}, within=15.0)

    (result,) = results[retried.command_id]
    assert (result.status, result.attempts) == (ResultStatus.FAILED, 1)
    assert result.error is not None and result.error.code is ErrorCode.CANCELLED
    assert result.error.http_status == 503
    assert len(upstream.calls_for(retried.command_id)) == 1  # the tier's attempt never ran


async def test_a_pool_started_after_the_cancellation_reads_it_back(settings, vault_admin):
    # Records written before a pool's assignment may have been started by a previous
    # owner (workers._lifecycle): so a cancelled one ends failed, not rejected, and says
    # an earlier attempt may have taken effect. It is not called here either way.
    upstream = Upstream()
    async with upstream.running():
        tenant = f"b{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        cancelled, kept = command(tenant), command(tenant)
        await produce(settings, [cancelled, kept])
        await _cancel(settings, tenant, cancelled.command_id)
        async with pool_running(settings, vault_admin, upstream):
            results = await wait_results(settings, {cancelled.command_id, kept.command_id})

    (result,) = results[cancelled.command_id]
    assert result.status is ResultStatus.FAILED and result.attempts == 0
    assert result.error is not None and result.error.code is ErrorCode.CANCELLED
    assert "an earlier attempt may have taken effect" in result.error.message
    assert upstream.calls_for(cancelled.command_id) == []
    assert [r.status for r in results[kept.command_id]] == [ResultStatus.SUCCEEDED]


async def test_a_pool_that_fails_to_start_stops_reading_cancellations(settings, vault_admin, monkeypatch):
    approle = await vault_admin.bootstrap_pool(CONNECTOR)
    vault = PoolVault(vault_admin._client.url, CONNECTOR, approle)  # noqa: SLF001
    pool = WorkerPool(settings, EchoConnector(), vault, base_url="http://127.0.0.1:9")

    async def broker_refuses() -> None:
        raise KafkaUnavailable("worker producer: no broker")

    monkeypatch.setattr(pool, "_start_clients", broker_refuses)
    try:
        with pytest.raises(KafkaUnavailable):
            await pool.start()
        assert not pool.cancels.follower.running  # nothing left reading for a pool that never ran
    finally:
        vault.close()
