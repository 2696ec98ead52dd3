"""Consumer lag: from a running consumer's assignment, or for any group through Kafka.

Lag of a partition is its high watermark minus the group's committed offset (the
consumer's position when nothing is committed yet): what a pool still has to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from .errors import KafkaUnavailable

__all__ = ["consumer_lag", "group_lag", "lag_by_topic"]


def lag_by_topic(lag: Mapping[tuple[str, int], int]) -> dict[str, int]:
    """Per-partition lag (as :func:`consumer_lag` gives it) summed per topic."""
    by_topic: dict[str, int] = {}
    for (topic, _partition), value in lag.items():
        by_topic[topic] = by_topic.get(topic, 0) + value
    return by_topic


async def consumer_lag(consumer: AIOKafkaConsumer) -> dict[tuple[str, int], int]:
    """Lag per (topic, partition) of the partitions assigned to ``consumer``.

    Uses the high watermark the consumer learnt from its last fetch and asks the broker
    for end offsets only for partitions it has not fetched yet or has paused.

    Raises:
        KafkaUnavailable: the broker did not answer for offsets.
    """
    assigned = list(consumer.assignment())
    out: dict[tuple[str, int], int] = {}
    try:
        # A paused partition is not fetched, so its cached watermark stops while records
        # keep coming: exactly when a pool is behind (it pauses under backpressure).
        paused = consumer.paused()
        missing = [tp for tp in assigned if tp in paused or consumer.highwater(tp) is None]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(missing) if missing else {}
        for tp in assigned:
            high = ends.get(tp) if tp in ends else consumer.highwater(tp)
            if high is None:
                high = 0
            done = await consumer.committed(tp)
            if done is None:
                done = await consumer.position(tp)
            out[(tp.topic, tp.partition)] = max(0, high - done)
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot read consumer offsets ({type(exc).__name__})") from exc
    return out


async def group_lag(
    admin: Any, reader: AIOKafkaConsumer, group_id: str, topics: Iterable[str]
) -> dict[tuple[str, int], int]:
    """Lag per (topic, partition) of ``group_id`` on ``topics``, read from the cluster.

    ``admin`` is a started ``AIOKafkaAdminClient`` (committed offsets), ``reader`` a
    started consumer without a group (end offsets). A partition the group never
    committed counts its whole backlog from the log start, as KEDA's Kafka scaler does
    with ``offsetResetPolicy: earliest``.

    Raises:
        KafkaUnavailable: the broker did not answer.
    """
    try:
        described = await admin.describe_topics(list(topics))
        tps = [
            TopicPartition(topic["topic"], part["partition"])
            for topic in described
            if topic.get("error_code") == 0
            for part in topic.get("partitions", ())
        ]
        if not tps:
            return {}
        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        ends = await reader.end_offsets(tps)
        starts = await reader.beginning_offsets(tps)
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot read the lag of {group_id} ({type(exc).__name__})") from exc
    out: dict[tuple[str, int], int] = {}
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else starts.get(tp, 0)
        out[(tp.topic, tp.partition)] = max(0, ends.get(tp, 0) - done)
    return out
