"""The 3-node cluster the fault suites use: RF 3 and min ISR 2 keep acks=all writes going
while one broker is SIGKILLed, and the broker rejoins on restart."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from core.kafka import ensure_topics, make_producer, start_client
from core.settings import load_settings
from switchyard.stack import LocalStack

pytestmark = pytest.mark.fault


async def test_three_broker_stack_keeps_acks_all_writes_through_a_killed_broker_and_rejoins_it(
    tmp_path: Path,
) -> None:
    stack = LocalStack(tmp_path / "stack", brokers=3, heap="384m")
    try:
        env = await asyncio.to_thread(stack.up)
        assert env["SWITCHYARD_REPLICATION_FACTOR"] == "3"
        settings = load_settings(env, topic_prefix="fault.")
        topic = settings.topics.commands
        await ensure_topics(settings, [topic], partitions=3)
        producer = make_producer(settings)
        await start_client(producer, what="fault producer")
        try:
            for i in range(10):
                await producer.send_and_wait(topic, b"before", key=f"tenant{i}".encode())
            await asyncio.to_thread(stack.stop_kafka, 1, signal.SIGKILL)
            assert [p["alive"] for p in stack.status()["processes"]] == [True, False, True, True]
            async with asyncio.timeout(60):
                for i in range(10):
                    await producer.send_and_wait(topic, b"degraded", key=f"tenant{i}".encode())
            await asyncio.to_thread(stack.start_kafka, 1)
            assert all(p["alive"] for p in stack.status()["processes"])
        finally:
            await producer.stop()
    finally:
        await asyncio.to_thread(stack.down)
    assert not stack.status()["running"]
