"""A worker whose partitions were given away while it stalled cannot commit their Results,
and their next owner starts from committed positions that no open transaction can change.

Real Kafka throughout. Member A fetches a record and finishes it; while A "stalls", the
group moves on without it (A leaves, as a session timeout would remove it, and B joins
and is assigned the partition). A wakes up and its outbox commits with the membership it
had: the group coordinator refuses, the transaction is aborted, and neither the Result
nor the offset becomes visible, so B's run of the record is the only one. The same
commit with B's current membership lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from _runtime_support import group_member
from aiokafka import TopicPartition

from core.errors import KafkaUnavailable
from core.kafka import ensure_topics, make_admin, make_consumer, make_producer, start_client
from core.settings import Settings
from ingress.testing import read_topic
from tests.conftest import unique
from workers._fencing import GroupMembership, consumer_membership, fence_offset_commits
from workers._offsets import OffsetTracker
from workers._outbox import Outbox, TransactionInDoubt
from workers._results import Outgoing
from workers._stable_offsets import stable_committed


async def _finish_and_flush(
    settings: Settings,
    group: str,
    source: TopicPartition,
    out: str,
    membership: Callable[[], GroupMembership | None],
) -> None:
    """Finish offset 0 of ``source`` in a fresh outbox and commit it with ``membership``."""
    producer = make_producer(settings, transactional_id=unique("fence"), linger_ms=0)
    await start_client(producer, what="test producer")
    try:
        tracker = OffsetTracker()
        generation = tracker.track(source, 0)
        assert generation is not None
        outbox = Outbox(producer, tracker, group, membership=membership)
        # As the pool wires it: the commit carries what the outbox took with its offsets.
        fence_offset_commits(producer, outbox.commit_membership)
        assert outbox.add([Outgoing(out, b"k", b"result of offset 0", [])], source, 0, generation)
        await outbox.flush()
    finally:
        await producer.stop()


async def _values_once_committed(settings: Settings, topic: str) -> list[bytes]:
    # Commit markers are written just after commit_transaction returns.
    async with asyncio.timeout(10):
        while not (records := await read_topic(settings, topic)):  # noqa: ASYNC110 - polls Kafka
            await asyncio.sleep(0.05)
    return [r.value for r in records]


async def _no_open_transaction(settings: Settings, tp: TopicPartition) -> None:
    """The abort reached the broker: the last stable offset is the end of the log.

    An abort that stays local leaves the transaction open, and every read_committed
    reader of the partition stuck behind it until the transaction timeout.
    """
    ends = {}
    for isolation in ("read_uncommitted", "read_committed"):
        consumer = make_consumer(settings, group_id=None, isolation_level=isolation)
        await start_client(consumer, what="test reader")
        try:
            ends[isolation] = (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()
    assert ends["read_uncommitted"] > 0  # the refused Result was written, then aborted
    assert ends["read_committed"] == ends["read_uncommitted"]


async def _committed(settings: Settings, group: str, tp: TopicPartition) -> int:
    admin = make_admin(settings)
    await start_client(admin, what="test admin")
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    return offsets[tp].offset if tp in offsets else -1


@pytest.fixture
async def topics(settings: Settings) -> tuple[TopicPartition, str]:
    source, out = unique("fence-src"), unique("fence-out")
    await ensure_topics(settings, [source, out], partitions=1)
    producer = make_producer(settings)
    await start_client(producer, what="test seed")
    try:
        await producer.send_and_wait(source, b"command", key=b"k")
    finally:
        await producer.stop()
    return TopicPartition(source, 0), out


@asynccontextmanager
async def _moved_on(
    settings: Settings, topic: str, group: str
) -> AsyncIterator[tuple[GroupMembership, GroupMembership]]:
    """(a member's membership before it "stalled", its successor's), while the successor
    owns the partition."""
    async with group_member(settings, topic, group) as stalled:
        before_stall = consumer_membership(stalled)
    async with group_member(settings, topic, group) as successor:
        current = consumer_membership(successor)
        assert before_stall is not None and current is not None
        assert current.generation_id > before_stall.generation_id
        yield before_stall, current


async def test_a_stalled_member_cannot_commit_what_was_given_away(
    settings: Settings, topics: tuple[TopicPartition, str]
) -> None:
    source, out = topics
    group = unique("fence-group")
    async with _moved_on(settings, source.topic, group) as (before_stall, current):
        with pytest.raises(KafkaUnavailable) as refused:
            await _finish_and_flush(settings, group, source, out, lambda: before_stall)
        assert not isinstance(refused.value, TransactionInDoubt)  # aborted, not in doubt
        assert await read_topic(settings, out) == []
        await _no_open_transaction(settings, TopicPartition(out, 0))
        assert await _committed(settings, group, source) == -1

        await _finish_and_flush(settings, group, source, out, lambda: current)
        assert await _values_once_committed(settings, out) == [b"result of offset 0"]
        assert await _committed(settings, group, source) == 1


async def test_the_commit_carries_the_membership_taken_with_its_offsets(
    settings: Settings, topics: tuple[TopicPartition, str]
) -> None:
    # The consumer rejoins between the outbox taking its offsets and the commit going
    # out: the offsets were taken as the old member, so the commit must not pass as the new.
    source, out = topics
    group = unique("fence-group")
    async with _moved_on(settings, source.topic, group) as (before_stall, current):
        answers = iter([before_stall])
        with pytest.raises(KafkaUnavailable):
            await _finish_and_flush(settings, group, source, out, lambda: next(answers, current))
        assert await _committed(settings, group, source) == -1


async def test_nothing_is_committed_while_the_member_has_no_generation(
    settings: Settings, topics: tuple[TopicPartition, str]
) -> None:
    source, out = topics
    group = unique("fence-group")
    await _finish_and_flush(settings, group, source, out, lambda: None)
    assert await read_topic(settings, out) == []
    assert await _committed(settings, group, source) == -1


async def test_the_next_owner_reads_positions_only_once_no_transaction_holds_a_commit(
    settings: Settings, topics: tuple[TopicPartition, str]
) -> None:
    source, _ = topics
    group = unique("fence-group")
    # A previous owner stopped between its offset commit and its EndTxn.
    stalled = make_producer(settings, transactional_id=unique("stalled"))
    await start_client(stalled, what="test producer")
    admin = make_admin(settings)
    await start_client(admin, what="test admin")
    try:
        await stalled.begin_transaction()
        await stalled.send_offsets_to_transaction({source: 1}, group)
        # aiokafka's own read answers the older position: the record would be redone.
        assert await _committed(settings, group, source) == -1
        with pytest.raises(KafkaUnavailable, match="pending in an open transaction"):
            await stable_committed(admin, group, [source], within=1.0)

        await stalled.commit_transaction()
        stable = await stable_committed(admin, group, [source], within=10.0)
        assert stable[source].offset == 1
    finally:
        await admin.close()
        await stalled.stop()
