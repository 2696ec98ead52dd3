"""The router's batch queue serves commands partitions in turn (``router._fair``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from router._fair import FairQueue


@dataclass(frozen=True)
class Event:
    partition: int
    offset: int


def make_queue(capacity: int = 10_000) -> FairQueue:
    return FairQueue(capacity=capacity, key=lambda e: e.partition)


async def test_a_backlog_on_one_partition_does_not_delay_another() -> None:
    queue = make_queue()
    for offset in range(500):
        await queue.put(Event(0, offset))
    await queue.put(Event(1, 0))
    batch = await queue.get_batch(20)
    assert Event(1, 0) in batch
    assert [e.offset for e in batch if e.partition == 0] == list(range(19))


async def test_order_within_a_partition_is_kept_across_batches() -> None:
    queue = make_queue()
    for offset in range(50):
        for partition in range(3):
            await queue.put(Event(partition, offset))
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    while len(queue):
        for event in await queue.get_batch(7):
            seen[event.partition].append(event.offset)
    assert seen == {p: list(range(50)) for p in range(3)}


async def test_batches_share_the_limit_and_rotate_the_first_partition() -> None:
    queue = make_queue()
    for partition in range(3):
        for offset in range(10):
            await queue.put(Event(partition, offset))
    first = await queue.get_batch(6)
    second = await queue.get_batch(6)
    assert sorted(e.partition for e in first) == [0, 0, 1, 1, 2, 2]
    assert first[0].partition != second[0].partition


async def test_put_waits_for_room_at_capacity() -> None:
    queue = make_queue(capacity=3)
    for offset in range(3):
        await queue.put(Event(0, offset))
    blocked = asyncio.create_task(queue.put(Event(1, 0)))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert len(await queue.get_batch(2)) == 2
    await asyncio.wait_for(blocked, 1.0)
    assert len(queue) == 2


async def test_get_batch_waits_for_the_first_event() -> None:
    queue = make_queue()
    waiting = asyncio.create_task(queue.get_batch(5))
    await asyncio.sleep(0)
    assert not waiting.done()
    await queue.put(Event(0, 0))
    assert await asyncio.wait_for(waiting, 1.0) == [Event(0, 0)]
    assert len(queue) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        make_queue(capacity=0)
