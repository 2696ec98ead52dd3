"""``done`` dedup entries ride with the next batch's state write, or are flushed on demand."""

from __future__ import annotations

import asyncio
import uuid

import orjson
from _cycles import CyclicGarbage
from _router_support import (
    apply,
    changelog_topics,
    command,
    in_process_router,
    prepare_topics,
    stream_events,
    summary_action,
    workspace,
)
from aiokafka import TopicPartition

from core.kafka import make_consumer, start_client, topic_partitions
from core.settings import Settings


async def _changelog(settings: Settings, topic: str) -> list[tuple[str, str]]:
    """(command id, state) of every record on the changelog, in order."""
    consumer = make_consumer(settings, group_id=None)
    await start_client(consumer, what="changelog reader")
    out: list[tuple[str, str]] = []
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        async with asyncio.timeout(30):
            for _ in range(200):
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        entry = orjson.loads(record.value)
                        out.append((entry["c"], entry["s"]))
    finally:
        await consumer.stop()
    return out


async def test_done_entries_are_written_with_the_next_batch_or_by_flush_done(
    own_settings: Settings,
) -> None:
    settings = own_settings
    await prepare_topics(settings)
    tenant = f"acme_{uuid.uuid4().hex[:6]}"
    await apply(
        settings,
        workspace(
            tenant, [summary_action("slack", "post_message", {"text": "{{ args.summary }}"})]
        ),
    )
    dedup_topic, _ = changelog_topics(settings)
    async with in_process_router(settings) as router:
        first = [command(tenant) for _ in range(3)]
        second = [command(tenant) for _ in range(2)]

        await router.handle_batch(stream_events(settings, first, 0))
        # Durable: pending only. In memory: done, so a duplicate is dropped at once.
        assert await _changelog(settings, dedup_topic) == [(c.command_id, "p") for c in first]
        await router.handle_batch(stream_events(settings, [first[0]], 3))
        assert router.dropped == 1

        await router.handle_batch(stream_events(settings, second, 4))
        written = await _changelog(settings, dedup_topic)
        assert written[3:] == [
            *((c.command_id, "d") for c in first),
            *((c.command_id, "p") for c in second),
        ]

        await router.flush_done(within=10)
        written = await _changelog(settings, dedup_topic)
        assert written[len(first) * 2 + len(second) :] == [(c.command_id, "d") for c in second]
        await router.flush_done(within=10)  # nothing left: writes nothing
        assert len(await _changelog(settings, dedup_topic)) == 2 * (len(first) + len(second))


async def test_a_rejected_command_leaves_no_reference_cycle(own_settings: Settings) -> None:
    """A rejection kept as an exception in its deciding frame made a cycle through the
    traceback that held the whole batch's frames (its futures and records) until a full
    GC collection, which the router's GC settings (core.heap) make rare."""
    settings = own_settings
    await prepare_topics(settings)
    tenant = f"acme_{uuid.uuid4().hex[:6]}"
    await apply(settings, workspace(tenant, [summary_action("slack", "post_message", {"text": "{{ args.summary }}"})]))
    async with in_process_router(settings) as router:
        await router.handle_batch(stream_events(settings, [command(tenant)], 0))  # warm
        rejected = [command(tenant, action="nope"), command(tenant, {}), command(f"{tenant}x")]
        with CyclicGarbage() as left:
            await router.handle_batch(stream_events(settings, rejected, 1))
    assert router.rejected == 3
    assert "PermanentError" not in left.exceptions and "_decide" not in left.frames
