"""The outbox publishes a Result only with the commit that claims its record done.

Real Kafka. Records finish scattered, so that the done-set does not fit a (small)
metadata limit: the commit claims up to where it fits, only those Results are published,
and the others wait in the outbox until the gaps below them close.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from core.kafka import ensure_topics, make_admin, make_producer, start_client
from core.settings import Settings
from ingress.testing import read_topic
from tests.conftest import unique
from workers._offsets import OffsetTracker, decode_done
from workers._outbox import Outbox
from workers._results import Outgoing
from workers._stable_offsets import stable_committed

RECORDS = 60


async def _results(settings: Settings, topic: str, count: int) -> list[bytes]:
    # Commit markers are written just after commit_transaction returns.
    async with asyncio.timeout(10):
        while len(records := await read_topic(settings, topic)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return [r.value for r in records]


async def test_results_wait_in_the_outbox_until_a_commit_can_claim_their_records(
    settings: Settings,
) -> None:
    source, out, group = unique("claims-src"), unique("claims-out"), unique("claims-group")
    await ensure_topics(settings, [source, out], partitions=1)
    tp = TopicPartition(source, 0)
    producer = make_producer(settings, transactional_id=unique("claims"), linger_ms=0)
    await start_client(producer, what="test producer")
    admin = make_admin(settings)
    await start_client(admin, what="test admin")
    try:
        tracker = OffsetTracker(metadata_limit=40)
        outbox = Outbox(producer, tracker, group)
        gens = {o: tracker.track(tp, o) for o in range(RECORDS)}

        def finish(offset: int) -> None:
            result = Outgoing(out, b"k", f"result {offset}".encode(), [])
            assert outbox.add([result], tp, offset, gens[offset])  # type: ignore[arg-type]

        for offset in range(1, RECORDS, 2):  # 0, 2, 4, ... still running
            finish(offset)
        await outbox.flush()
        committed = (await stable_committed(admin, group, [tp], within=10))[tp]
        horizon, _ = decode_done(committed.offset, committed.metadata)
        assert committed.offset == 0 and 0 < horizon < RECORDS
        claimed = [f"result {o}".encode() for o in range(1, horizon, 2)]
        assert await _results(settings, out, len(claimed)) == claimed
        assert outbox.held == len(range(1, RECORDS, 2)) - len(claimed)

        for offset in range(0, RECORDS, 2):
            finish(offset)
        await outbox.flush()
        assert outbox.held == 0 and outbox.pending == 0
        published = await _results(settings, out, RECORDS)
        assert sorted(published) == sorted(f"result {o}".encode() for o in range(RECORDS))
        committed = (await stable_committed(admin, group, [tp], within=10))[tp]
        assert (committed.offset, committed.metadata) == (RECORDS, "")
    finally:
        await admin.close()
        await producer.stop()
