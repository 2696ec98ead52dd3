"""Outbox: a transaction that fails where it cannot be aborted is never sent again.

The producer here is a stand-in for the broker side only; the transaction states are
aiokafka's own ``TransactionManager``, which decides whether an abort is possible.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from aiokafka.producer.transaction_manager import TransactionManager

from core.errors import KafkaUnavailable
from workers._holding import Holding
from workers._lifecycle import PoolLifecycle
from workers._offsets import OffsetTracker
from workers._outbox import Outbox, TransactionInDoubt
from workers._pool import PoolOptions
from workers._results import Outgoing
from workers._scheduler import FairScheduler

TP = TopicPartition("connector", 0)


class BrokerGoneProducer:
    """Sends are accepted; the step named by ``fail_at`` raises as a lost broker would."""

    def __init__(self, fail_at: str) -> None:
        self._txn_manager = TransactionManager("worker.slack.test", 60_000)
        self._txn_manager._transition_to(self._txn_manager.state.READY)
        self.fail_at = fail_at
        self.sent: list[bytes] = []
        self.commits = 0

    async def begin_transaction(self) -> None:
        self._txn_manager.begin_transaction()

    async def send(self, topic, value, key=None, headers=None):
        if self.fail_at == "send":
            self._txn_manager.error_transaction(KafkaConnectionError())
            raise KafkaConnectionError()
        self.sent.append(value)

    async def send_offsets_to_transaction(self, offsets, group_id) -> None:
        pass

    async def commit_transaction(self) -> None:
        self._txn_manager.committing_transaction()
        if self.fail_at == "commit":
            # EndTxn sent, no answer: the coordinator may commit it all the same.
            raise KafkaTimeoutError()
        self._txn_manager.complete_transaction()
        self.commits += 1

    async def abort_transaction(self) -> None:
        self._txn_manager.aborting_transaction()  # asserts from a state that cannot abort
        self._txn_manager.complete_transaction()


def _outbox_with_one_result(producer: BrokerGoneProducer, on_committed: Any = None) -> Outbox:
    tracker = OffsetTracker()
    generation = tracker.track(TP, 0)
    assert generation is not None
    outbox = Outbox(producer, tracker, "group", interval=0.01, linger=0)  # type: ignore[arg-type]
    assert outbox.add([Outgoing("results", b"tenant", b"result-0", [])], TP, 0, generation, on_committed)
    return outbox


async def test_a_failed_send_is_aborted_and_its_records_are_retried_in_the_next_transaction() -> None:
    producer = BrokerGoneProducer(fail_at="send")
    outbox = _outbox_with_one_result(producer)
    with pytest.raises(KafkaUnavailable) as raised:
        await outbox.flush()
    assert not isinstance(raised.value, TransactionInDoubt)
    assert outbox.pending == 1
    producer.fail_at = ""
    await outbox.flush()
    assert (producer.sent, producer.commits, outbox.pending) == ([b"result-0"], 1, 0)


async def test_a_commit_without_an_answer_is_in_doubt_and_nothing_is_sent_again() -> None:
    producer = BrokerGoneProducer(fail_at="commit")
    outbox = _outbox_with_one_result(producer)
    with pytest.raises(TransactionInDoubt):
        await outbox.flush()
    producer.fail_at = ""
    with pytest.raises(TransactionInDoubt):
        await outbox.flush()
    assert producer.sent == [b"result-0"]  # once, in the transaction that may still commit


async def test_the_flush_loop_stops_at_once_on_a_transaction_in_doubt() -> None:
    producer = BrokerGoneProducer(fail_at="commit")
    outbox = _outbox_with_one_result(producer)
    with pytest.raises(TransactionInDoubt):
        async with asyncio.timeout(5):
            await outbox.run()
    assert producer.sent == [b"result-0"]


async def test_a_revoke_after_a_failed_flush_leaves_the_partitions_outcomes_to_the_new_owner() -> None:
    """What stayed queued for a revoked partition is not sent by a later flush: its offset
    was never committed, so the new owner redoes it, and sending it too would be a second
    Result. Other partitions' queued outcomes still go out."""
    producer = BrokerGoneProducer(fail_at="send")
    reported: list[str] = []
    outbox = _outbox_with_one_result(producer, lambda: reported.append("revoked"))
    other = TopicPartition("connector", 1)
    generation = outbox._tracker.track(other, 0)
    assert generation is not None
    assert outbox.add(
        [Outgoing("results", b"tenant", b"result-other", []), Outgoing("logs", b"tenant", b"line", [])],
        other, 0, generation, lambda: reported.append("other"),
    )  # fmt: skip

    pool = PoolLifecycle()
    pool.options = PoolOptions(revoke_grace=0.1)
    pool._started = True
    pool.scheduler = FairScheduler(global_limit=4, tenant_limit=1)
    pool.holding = Holding(limit=10, pause=lambda tp: None, resume=lambda tp: None)
    pool.tracker, pool.outbox, pool._running = outbox._tracker, outbox, {}
    pool._settling, pool._unsettled, pool._revoking = set(), [], asyncio.Event()
    pool._settles, pool._doubtful = {}, {}
    await pool._on_revoked({TP})  # its flush fails (abortable): both stay queued, then TP's go

    assert outbox.pending == 2 and reported == []  # nothing is reported before its commit
    producer.fail_at = ""
    await outbox.flush()
    assert (producer.sent, producer.commits) == ([b"result-other", b"line"], 1)
    assert reported == ["other"]  # once for its outcome; TP's, discarded, never
