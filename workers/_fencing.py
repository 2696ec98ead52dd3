"""Fence a stalled worker's offset commits by group generation (KIP-447, missing in aiokafka).

aiokafka sends the outbox's transactional offset commit as ``TxnOffsetCommit`` v0: group
id and offsets, no membership. The broker accepts that from a worker whose partitions
were given away while it was stalled (a VM pause, SIGSTOP): it wakes up, commits the
Results of the tasks it was running, and the new owner, which read the old offsets,
publishes them again. Each process has its own transactional id, so the new owner's
producer does not fence it either.

Version 3 of the request carries the consumer's generation and member id, and the group
coordinator refuses it from a member or a generation that is no longer current. The
refusal is made an abortable transaction error here (aiokafka would otherwise raise it
inside its sender task), so the outbox aborts: the Results are never visible and the
offsets stay where the new owner found them. A commit is also refused locally while the
consumer has no generation (it has noticed the rebalance and is rejoining), because a
commit without membership is one the broker does not check.

This reaches into aiokafka's sender (``_sender``, ``_do_txn_offset_commit``, its handler
class); :func:`fence_offset_commits` checks that those exist, so an aiokafka that changed
them fails at start, not silently unfenced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import CoordinationType
from aiokafka.errors import CommitFailedError, GroupAuthorizationFailedError
from aiokafka.producer.sender import TxnOffsetCommitHandler
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Int16, Int32, Int64, Schema

from ._kafka_structs import STRING, TAGS, per_topic

__all__ = ["GroupMembership", "consumer_membership", "fence_offset_commits"]

# ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID: the
# partitions may belong to someone else by now.
_FENCED = frozenset({22, 25, 27, 82})


@dataclass(frozen=True, slots=True)
class GroupMembership:
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


Membership = Callable[[], GroupMembership | None]


def consumer_membership(consumer: AIOKafkaConsumer) -> GroupMembership | None:
    """The consumer's current generation and member id; None while it has none."""
    coordinator = getattr(consumer, "_coordinator", None)
    generation = getattr(coordinator, "generation", -1)
    member_id = getattr(coordinator, "member_id", "")
    if not isinstance(generation, int) or generation < 0 or not member_id:
        return None
    return GroupMembership(generation, member_id, getattr(consumer, "_group_instance_id", None))


def fence_offset_commits(producer: AIOKafkaProducer, membership: Membership) -> None:
    """Make ``producer``'s transactional offset commits carry ``membership()`` (v3).

    Raises:
        RuntimeError: this aiokafka's sender is not the one this was written against.
    """
    sender = getattr(producer, "_sender", None)
    if not callable(getattr(sender, "_do_txn_offset_commit", None)) or not callable(
        getattr(sender, "_find_coordinator", None)
    ):
        raise RuntimeError("aiokafka's producer changed: cannot fence its offset commits")

    async def txn_offset_commit(offsets: dict[Any, Any], group_id: str) -> None:
        # aiokafka's own _do_txn_offset_commit, with the fenced handler.
        if not offsets:
            return
        member = membership()
        if member is None:
            _refuse(sender, "the consumer is not in a group generation")
            return
        try:
            node_id = await sender._find_coordinator(CoordinationType.GROUP, group_id)
        except GroupAuthorizationFailedError as exc:
            _abortable_error(sender._txn_manager, exc)
            return
        await _FencedHandler(sender, offsets, group_id, member).do(node_id)

    sender._do_txn_offset_commit = txn_offset_commit


class _FencedHandler(TxnOffsetCommitHandler):  # type: ignore[misc]
    def __init__(self, sender: Any, offsets: Any, group_id: str, member: GroupMembership) -> None:
        super().__init__(sender, offsets, group_id)
        self._member = member

    def create_request(self) -> Request[Any]:
        manager = self._sender._txn_manager
        by_topic: dict[str, list[tuple[int, int, int, str | None, dict[int, bytes]]]] = {}
        for tp, offset in sorted(self._offsets.items()):
            by_topic.setdefault(tp.topic, []).append(
                (tp.partition, offset.offset, -1, offset.metadata, {})
            )
        return _TxnOffsetCommitV3(
            (
                manager.transactional_id,
                self._group_id,
                manager.producer_id,
                manager.producer_epoch,
                self._member.generation_id,
                self._member.member_id,
                self._member.group_instance_id,
                [(topic, partitions, {}) for topic, partitions in by_topic.items()],
                {},
            )
        )

    def handle_response(self, resp: Any) -> float | None:
        codes = {code for _, partitions, _ in resp.topics for _, code, _ in partitions}
        if codes & _FENCED:
            _refuse(self._sender, f"the group coordinator refused it (error codes {sorted(codes)})")
            return None
        return super().handle_response(_AsV0(resp))  # type: ignore[no-any-return]


def _refuse(sender: Any, why: str) -> None:
    error = CommitFailedError(f"transactional offset commit fenced: {why}")
    _abortable_error(sender._txn_manager, error)


def _abortable_error(manager: Any, error: Exception) -> None:
    """aiokafka's ``error_transaction``, keeping what the transaction holds.

    ``error_transaction`` forgets the transaction's partitions and group, and aiokafka
    then ends an abort of an "empty" transaction locally, without EndTxn: the broker
    would keep it open, holding every read_committed reader of those partitions until
    the transaction timeout, and the producer's next transaction would join it and
    commit the refused Results after all. Kept, the abort is sent.
    """
    partitions, group = set(manager._txn_partitions), manager._txn_consumer_group
    manager.error_transaction(error)
    manager._txn_partitions |= partitions
    manager._txn_consumer_group = group
    # The caller of send_offsets_to_transaction gets the error; this copy of it is
    # replaced unread by the abort, and would be logged as "never retrieved".
    manager.wait_for_transaction_end().exception()


class _AsV0:
    """A v3 response shaped like the v0 one aiokafka's handler reads."""

    def __init__(self, resp: Any) -> None:
        self.errors = [
            (topic, [(partition, code) for partition, code, _ in partitions])
            for topic, partitions, _ in resp.topics
        ]


class TxnOffsetCommitResponse_v3(Response):  # noqa: N801  (aiokafka's naming)
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", per_topic(("partition_index", Int32), ("error_code", Int16))),
        TAGS,
    )


class TxnOffsetCommitRequest_v3(RequestStruct):  # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", STRING),
        ("group_id", STRING),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", STRING),
        ("group_instance_id", STRING),
        (
            "topics",
            per_topic(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("committed_metadata", STRING),
            ),
        ),
        TAGS,
    )


class _TxnOffsetCommitV3(Request[TxnOffsetCommitRequest_v3]):
    """Only version 3: a broker without it (Kafka < 2.5) fails the commit, never unfenced."""

    API_KEY = 28

    def __init__(self, fields: tuple[Any, ...]) -> None:
        self._fields = fields

    def build(
        self, request_struct_class: type[TxnOffsetCommitRequest_v3]
    ) -> TxnOffsetCommitRequest_v3:
        return request_struct_class(*self._fields)
