"""The Kafka ground every component stands on: idempotent acks=all producer, tenant-keyed
partitioning, manual commits, and a restarted consumer that resumes after its last commit."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.kafka import ensure_topics, make_consumer, make_producer, start_client
from core.settings import Settings

TENANTS = [f"tenant{i}" for i in range(8)]
RECORDS = 120


async def _produce(settings: Settings, topic: str) -> dict[str, set[int]]:
    """Send RECORDS records keyed by tenant; return the partitions each tenant's records got."""
    producer = make_producer(settings)
    await start_client(producer, what="test producer")
    try:
        sends = []
        for seq in range(RECORDS):
            tenant = TENANTS[seq % len(TENANTS)]
            value = orjson.dumps({"tenant": tenant, "seq": seq})
            sends.append(await producer.send(topic, value=value, key=tenant.encode()))
        metadata = await asyncio.gather(*sends)
    finally:
        await producer.stop()
    partitions: dict[str, set[int]] = defaultdict(set)
    for seq, meta in enumerate(metadata):
        partitions[TENANTS[seq % len(TENANTS)]].add(meta.partition)
    return partitions


async def _consume(
    consumer: AIOKafkaConsumer, at_least: int, *, commit: bool
) -> list[tuple[int, dict]]:
    """Read batches until ``at_least`` records arrived; commit exactly what was read."""
    seen: list[tuple[int, dict]] = []
    async with asyncio.timeout(60):
        while len(seen) < at_least:
            batches = await consumer.getmany(timeout_ms=500, max_records=25)
            for tp, records in batches.items():
                seen.extend((tp.partition, orjson.loads(r.value)) for r in records)
            if commit and batches:
                # The consumer's position is just past the records handed to us, so this
                # commits what was processed and nothing more.
                await consumer.commit()
    return seen


async def test_tenant_keyed_records_stay_in_one_partition_and_a_restarted_consumer_resumes_after_its_last_commit(
    settings: Settings,
) -> None:
    topic = settings.topics.commands
    await ensure_topics(settings, [topic])
    produced_partitions = await _produce(settings, topic)
    assert all(len(parts) == 1 for parts in produced_partitions.values()), produced_partitions
    assert len({p for parts in produced_partitions.values() for p in parts}) > 1  # keys spread out

    group = f"g{uuid.uuid4().hex[:10]}"
    first = make_consumer(settings, topic, group_id=group, max_poll_records=25)
    await start_client(first, what="first consumer")
    try:
        before_crash = await _consume(first, RECORDS // 3, commit=True)
    finally:
        await first.stop()
    assert 0 < len(before_crash) < RECORDS

    second = make_consumer(settings, topic, group_id=group)
    await start_client(second, what="second consumer")
    try:
        after_restart = await _consume(second, RECORDS - len(before_crash), commit=True)
        committed = {
            p: await second.committed(TopicPartition(topic, p))
            for p in sorted(second.partitions_for_topic(topic) or ())
        }
    finally:
        await second.stop()

    seqs_before = [value["seq"] for _, value in before_crash]
    seqs_after = [value["seq"] for _, value in after_restart]
    assert not set(seqs_before) & set(seqs_after), "records read again after the restart"
    assert sorted(seqs_before + seqs_after) == list(range(RECORDS)), "records lost"
    assert sum(committed.values()) == RECORDS

    by_tenant: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for partition, value in before_crash + after_restart:
        by_tenant[value["tenant"]].append((partition, value["seq"]))
    for tenant, records in by_tenant.items():
        assert {p for p, _ in records} == produced_partitions[tenant]
        seqs = [seq for _, seq in records]
        assert seqs == sorted(seqs), f"{tenant}'s records out of order"
