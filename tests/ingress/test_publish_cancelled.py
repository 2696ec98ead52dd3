"""A submit cancelled midway (client gone, edge timeout) leaves nothing half-done.

Records the producer already took are acknowledged and settled by their own callback,
so replays of them answer at once; a record cancelled before the producer took it is
forgotten, so a replay publishes it. Nothing stays in flight. Real Kafka throughout; the
only stand-in is a gate in front of the real producer's ``send``, to cancel at a known
item.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.settings import Settings
from ingress.admin import ensure_ingress_topics
from ingress.contracts import Identity
from ingress.pipeline import KafkaPipeline, Submission, command_id_for
from ingress.results import ResultsFeed
from ingress.testing import read_topic, unique_id
from schemas import Command, CommandSource

ITEMS = 40
GATED = 25


def _identity() -> Identity:
    return Identity(unique_id("acme"), "sales", "ann", "member", "k1")


def _items(prefix: str) -> list[Submission]:
    return [Submission("notify", {"n": i}, f"{prefix}-{i}") for i in range(ITEMS)]


async def _published(settings: Settings, tenant: str) -> set[str]:
    records = await read_topic(settings, settings.topics.commands)
    return {
        c.command_id for c in (Command.from_bytes(r.value) for r in records) if c.tenant_id == tenant
    }


async def _settled(pipeline: KafkaPipeline) -> None:
    async with asyncio.timeout(30):
        while pipeline._inflight:  # noqa: ASYNC110 - acks arrive on the producer's own task
            await asyncio.sleep(0.02)


@pytest.fixture
async def pipeline(settings: Settings) -> AsyncIterator[KafkaPipeline]:
    await ensure_ingress_topics(settings)
    running = KafkaPipeline(settings, ResultsFeed(settings), rate_per_second=1e6, burst=10**6)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_cancelled_before_the_producer_took_a_record(
    settings: Settings, pipeline: KafkaPipeline
) -> None:
    assert pipeline.producer is not None
    real_send = pipeline.producer.send
    calls = 0
    gate = asyncio.Event()
    reached = asyncio.Event()

    async def gated_send(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == GATED + 1:
            reached.set()
            await gate.wait()  # never set: the submit is cancelled here
        return await real_send(*args, **kwargs)

    pipeline.producer.send = gated_send  # type: ignore[method-assign]
    identity = _identity()
    items = _items("cut")
    task = asyncio.create_task(
        pipeline.submit_many(identity, items, source=CommandSource.REST)
    )
    async with asyncio.timeout(10):
        await reached.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    pipeline.producer.send = real_send  # type: ignore[method-assign]
    await _settled(pipeline)

    ids = [command_id_for(identity.tenant_id, identity.space_id, item.idempotency_key or "") for item in items]
    async with asyncio.timeout(30):
        published = await _published(settings, identity.tenant_id)
    assert published == set(ids[:GATED])
    # Replays: the taken ones are known and answer at once; the rest publish now.
    async with asyncio.timeout(30):
        outcomes = await pipeline.submit_many(identity, items, source=CommandSource.REST)
    assert [o[1] for o in outcomes if isinstance(o, tuple)] == [False] * GATED + [True] * (
        ITEMS - GATED
    )
    await _settled(pipeline)
    async with asyncio.timeout(30):
        assert await _published(settings, identity.tenant_id) == set(ids)


async def test_cancelled_while_waiting_for_acks(settings: Settings, pipeline: KafkaPipeline) -> None:
    assert pipeline.producer is not None
    identity = _identity()
    items = _items("wait")
    real_send = pipeline.producer.send
    handed = 0
    task: asyncio.Task[Any] | None = None

    async def counting_send(*args: Any, **kwargs: Any) -> Any:
        nonlocal handed
        ack = await real_send(*args, **kwargs)
        handed += 1
        if handed == ITEMS and task is not None:
            task.cancel()  # lands on the wait for the acknowledgements
        return ack

    pipeline.producer.send = counting_send  # type: ignore[method-assign]
    task = asyncio.create_task(
        pipeline.submit_many(identity, items, source=CommandSource.REST)
    )
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and handed == ITEMS
    pipeline.producer.send = real_send  # type: ignore[method-assign]
    await _settled(pipeline)
    async with asyncio.timeout(5):
        outcomes = await pipeline.submit_many(identity, items, source=CommandSource.REST)
    assert all(isinstance(o, tuple) and o[1] is False for o in outcomes), outcomes
    ids = {command_id_for(identity.tenant_id, identity.space_id, item.idempotency_key or "") for item in items}
    async with asyncio.timeout(30):
        assert await _published(settings, identity.tenant_id) == ids
