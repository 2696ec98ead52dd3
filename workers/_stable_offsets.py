"""Read a group's committed offsets only once no open transaction is about to change them.

The other half of KIP-447 (see ``_fencing`` for the first). A worker stopped in the middle
of a transaction (its offsets sent with ``TxnOffsetCommit``, its ``EndTxn`` not yet) holds
a pending offset commit. The partitions' next owner, reading the committed offsets at
that moment, gets the older ones and redoes those records; if the stalled worker then
wakes and commits, its Results are published a second time. aiokafka's ``OffsetFetch``
cannot ask for stable offsets; version 7 can (``require_stable``): the broker answers
``UNSTABLE_OFFSET_COMMIT`` until the transaction ends, by its commit, abort or timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Boolean, CompactArray, Int16, Int32, Int64, Schema
from aiokafka.structs import OffsetAndMetadata

from core.errors import KafkaUnavailable

from ._kafka_structs import STRING, TAGS, per_topic, tagged_array

__all__ = ["stable_committed"]

_UNSTABLE = 88  # UNSTABLE_OFFSET_COMMIT: a transaction holds a pending commit
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR: ask again.
_COORDINATOR_MOVED = frozenset({14, 15, 16})


async def stable_committed(
    admin: Any, group_id: str, partitions: Iterable[TopicPartition], *, within: float
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets of ``partitions`` (-1: none) once they are stable.

    Raises:
        KafkaUnavailable: still unstable, or the coordinator unreachable, after
            ``within`` seconds; or the broker refused the request.
    """
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    request = _OffsetFetchV7(group_id, [(t, sorted(p), {}) for t, p in by_topic.items()])
    waiting_for = "the group coordinator"
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    coordinator = await admin.find_coordinator(group_id)
                    response = await admin._send_request(request, coordinator)
                except (OSError, TimeoutError) as exc:
                    raise KafkaUnavailable(f"offset fetch failed ({type(exc).__name__})") from exc
                except KafkaError as exc:
                    if not exc.retriable:
                        raise KafkaUnavailable(f"offset fetch failed ({type(exc).__name__})") from exc
                else:
                    offsets, waiting_for = _read(response)
                    if offsets is not None:
                        return offsets
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise KafkaUnavailable(f"committed offsets not stable in {within:.0f} s: {waiting_for}") from None


def _read(response: Any) -> tuple[dict[TopicPartition, OffsetAndMetadata] | None, str]:
    """The offsets, or None and what is being waited for.

    Raises:
        KafkaUnavailable: an error that asking again does not cure.
    """
    if response.error_code in _COORDINATOR_MOVED:
        return None, "the group coordinator"
    if response.error_code:
        raise KafkaUnavailable(f"offset fetch refused: {for_code(response.error_code).__name__}")
    offsets: dict[TopicPartition, OffsetAndMetadata] = {}
    unstable = 0
    for topic, partitions, _ in response.topics:
        for partition, offset, _epoch, metadata, error_code, _ in partitions:
            if error_code == _UNSTABLE:
                unstable += 1
            elif error_code in _COORDINATOR_MOVED:
                return None, "the group coordinator"
            elif error_code:
                name = for_code(error_code).__name__
                raise KafkaUnavailable(f"offset fetch refused for {topic}: {name}")
            offsets[TopicPartition(topic, partition)] = OffsetAndMetadata(offset, metadata or "")
    if unstable:
        return None, f"{unstable} partition(s) with a commit pending in an open transaction"
    return offsets, ""


class OffsetFetchResponse_v7(Response):  # noqa: N801  (aiokafka's naming)
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            per_topic(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("metadata", STRING),
                ("error_code", Int16),
            ),
        ),
        ("error_code", Int16),
        TAGS,
    )


class OffsetFetchRequest_v7(RequestStruct):  # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", STRING),
        ("topics", tagged_array(("name", STRING), ("partition_indexes", CompactArray(Int32)))),
        ("require_stable", Boolean),
        TAGS,
    )


class _OffsetFetchV7(Request[OffsetFetchRequest_v7]):
    """Only version 7 (Kafka 2.5+): an older broker fails the read, never answers unstable."""

    API_KEY = 9

    def __init__(self, group_id: str, topics: list[tuple[str, list[int], dict[int, bytes]]]) -> None:
        self._group_id = group_id
        self._topics = topics

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        return request_struct_class(self._group_id, self._topics, True, {})
