"""Raw single-hop aiokafka throughput: the same-run yardstick for every other number.

Produces N records of the given size to a fresh topic (batched sends, acks=all,
idempotent, as the pipeline's producers are) while a consumer reads them back; the rate
is records consumed per second from the first send to the last record read.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from core.kafka import ensure_topics, make_consumer, make_producer, start_client
from core.settings import Settings

__all__ = ["measure_baseline"]


async def measure_baseline(settings: Settings, *, count: int, size: int, partitions: int) -> dict[str, Any]:
    topic = f"{settings.topic_prefix}bench.baseline.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic], partitions=partitions)
    payload = b"x" * size
    consumer = make_consumer(settings, topic, group_id=None, auto_offset_reset="earliest")
    producer = make_producer(settings)
    await start_client(consumer, what="bench consumer")
    await start_client(producer, what="bench producer")
    try:
        # Wait for the assignment before producing so the clock measures the hop only.
        async with asyncio.timeout(30):
            while not consumer.assignment():  # noqa: ASYNC110 - aiokafka offers no event
                await asyncio.sleep(0.05)
        received = 0
        started = time.perf_counter()

        async def consume() -> None:
            nonlocal received
            while received < count:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                received += sum(len(records) for records in batch.values())

        reader = asyncio.create_task(consume())
        window = 2000
        for first in range(0, count, window):
            futures = [
                await producer.send(topic, payload, key=f"tenant{(first + i) % 64}".encode())
                for i in range(min(window, count - first))
            ]
            await asyncio.gather(*futures)
        async with asyncio.timeout(120):
            await reader
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "records": count,
        "record_bytes": size,
        "partitions": partitions,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed, 1),
    }
