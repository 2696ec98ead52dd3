"""The router's in-doubt check: which pending commands' outputs are already on their topic.

Real Kafka. A command whose output is on the topic counts as sent, one whose output is
not does not, and a check that cannot read far enough says so instead of guessing "not
sent" (which would publish a command a second time).
"""

from __future__ import annotations

import time

import pytest

from core.errors import KafkaUnavailable
from core.kafka import ensure_topics, make_producer, start_client
from core.settings import Settings
from router._verify import find_sent
from schemas import Headers
from tests.conftest import unique


async def _topic_with_outputs(settings: Settings, command_ids: list[str]) -> str:
    topic = unique("verify")
    await ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    await start_client(producer, what="test producer")
    try:
        for command_id in command_ids:
            headers = [(Headers.COMMAND_ID, command_id.encode())]
            await producer.send(topic, b"{}", key=b"tenant", headers=headers, partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    return topic


async def test_outputs_on_the_topic_are_found_and_missing_ones_are_not(settings: Settings) -> None:
    topic = await _topic_with_outputs(settings, [f"c{i}" for i in range(50)])
    written_at = int(time.time() * 1000)
    found = await find_sent(settings, [("c7", topic, 0, written_at), ("lost", topic, 0, written_at)])
    assert found == {"c7"}


async def test_a_check_that_cannot_read_far_enough_fails_instead_of_answering_not_sent(
    settings: Settings,
) -> None:
    topic = await _topic_with_outputs(settings, [f"c{i}" for i in range(50)])
    written_at = int(time.time() * 1000)
    with pytest.raises(KafkaUnavailable, match="records"):
        await find_sent(settings, [("c49", topic, 0, written_at)], max_records=10)
