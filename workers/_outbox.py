"""The pool's outbox: outgoing records and consumed offsets, committed in one Kafka transaction.

A finished command's records (its Result, a retry-tier hand-off, a dead letter) and the
consumer offsets that their completion allows are produced and committed atomically,
as soon as there is something to commit (group commit: while one transaction is in
flight the next batch gathers, so batches grow with load and latency stays low when
idle), and at least every ``interval`` seconds for offsets alone. Either both land or neither:
a crash before the commit leaves the offsets where they were, the records are redone,
and the aborted records are invisible to ``read_committed`` consumers. That is what
makes "exactly one final Result per command" hold across SIGKILL and rebalances, not
only "at least one".

With ``membership`` (the consumer's generation, see ``_fencing``) a commit carries it, so a
worker that stalled while its partitions were given away has its commit refused instead
of publishing Results its partitions' new owner publishes too; while the consumer has no
generation (it is rejoining) nothing is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.producer.transaction_manager import TransactionState

from core.errors import KafkaUnavailable

from ._fencing import GroupMembership, Membership
from ._offsets import OffsetTracker
from ._results import Outgoing

__all__ = ["Outbox", "TransactionInDoubt"]

logger = logging.getLogger(__name__)

# States from which aiokafka can abort a transaction (and so retry its records safely).
_ABORTABLE = (TransactionState.IN_TRANSACTION, TransactionState.ABORTABLE_ERROR)


class TransactionInDoubt(KafkaUnavailable):
    """A transaction failed in a state where its commit may still land.

    Sending its records again could publish every Result in it twice, so this producer
    must not be used again: the process exits, and whoever takes the partitions over
    (under the same transactional id) fences it; the broker completes or aborts the
    transaction, and the committed offsets say what to redo.
    """


class Outbox:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        tracker: OffsetTracker,
        group_id: str,
        *,
        interval: float = 0.05,
        linger: float = 0.002,
        max_batch: int = 1_000,
        max_failures: int = 5,
        membership: Membership | None = None,
    ) -> None:
        self._producer = producer
        self._tracker = tracker
        self._group_id = group_id
        self._interval = interval
        self._linger = linger
        self._max_batch = max_batch
        self._max_failures = max_failures
        self._membership = membership
        # The membership the transaction in progress commits as, taken with its offsets:
        # read later, a rejoin in between would let the commit pass for partitions that
        # are someone else's by then (see commit_membership).
        self._member: GroupMembership | None = None
        # Each record with the source record whose outcome it is (see discard(), flush()),
        # and on an outcome's first record what to call once it is committed.
        self._pending: list[tuple[TopicPartition, int, Outgoing, Callable[[], None] | None]] = []
        # Records left queued by the last flush because its commit could not claim their
        # source records yet (see OffsetTracker.claims); the pool counts them as load.
        self.held = 0
        self._lock = asyncio.Lock()
        self._full = asyncio.Event()
        self.transactions = 0
        self._stopped = False
        self._in_doubt = False
        # Position last committed per partition, for :meth:`wait_visible`.
        self._committed: dict[TopicPartition, int] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(
        self,
        records: list[Outgoing],
        tp: TopicPartition,
        offset: int,
        generation: int,
        on_committed: Callable[[], None] | None = None,
    ) -> bool:
        """Queue ``records`` as the outcome of one consumed record; ``on_committed`` is
        called once they are committed (never for records discarded: their partition's
        next owner redoes them, and reports them).

        Returns False (and queues nothing) when the record's partition was revoked after it
        was fetched: its new owner redoes it, so producing here would duplicate it.
        """
        if not self._tracker.is_current(tp, generation):
            return False
        self._pending.extend(
            (tp, offset, record, on_committed if i == 0 else None) for i, record in enumerate(records)
        )
        self._tracker.finish(tp, offset, generation)
        self._full.set()
        return True

    async def flush(self) -> None:
        """Produce queued records and commit the offsets they complete, in one transaction.

        Raises:
            KafkaUnavailable: the transaction failed and was aborted; queued records
                stay queued.
            TransactionInDoubt: it failed where it could not be aborted (e.g. during
                the commit); nothing more is sent through this outbox.
        """
        async with self._lock:
            if self._in_doubt:
                raise TransactionInDoubt("an earlier transaction is in doubt")
            if self._membership is not None:
                self._member = self._membership()
                if self._member is None:
                    # The consumer noticed a rebalance and is rejoining: the partitions may
                    # be someone else's. Everything waits; revocation drops what was theirs.
                    return
            # Taken together, with no await between: offsets finished later belong with
            # records that are not in this transaction.
            offsets = self._tracker.committable()
            batch, held = [], []
            for entry in self._pending:
                tp, offset, _, _ = entry
                # Only with the commit that claims its source record done: sent earlier, it
                # would be redone (and published twice) by the partition's next owner.
                claimed = tp in offsets and self._tracker.claims(tp, offset)
                (batch if claimed else held).append(entry)
            self._pending = held
            self.held = len(held)
            if not batch and not offsets:
                return
            try:
                await self._producer.begin_transaction()
                for _, _, record, _ in batch:
                    await self._producer.send(
                        record.topic, record.value, key=record.key, headers=record.headers
                    )
                if offsets:
                    await self._producer.send_offsets_to_transaction(
                        dict(offsets), self._group_id
                    )
                await self._producer.commit_transaction()
            except (KafkaError, OSError) as exc:
                self._pending = batch + self._pending  # re-sorted by the next flush
                if not self._abortable() or not await self._abort():
                    self._in_doubt = True
                    raise TransactionInDoubt(
                        f"outbox transaction failed and cannot be aborted ({type(exc).__name__})"
                    ) from exc
                raise KafkaUnavailable(f"outbox transaction failed ({type(exc).__name__})") from exc
            self._tracker.mark_committed(offsets)
            for tp, (position, _) in offsets.items():
                self._committed[tp] = position
            self.transactions += 1
            for _, _, _, on_committed in batch:
                if on_committed is not None:
                    try:
                        on_committed()
                    except Exception:  # a report must never undo a commit
                        logger.exception("reporting a committed outcome failed")

    def commit_membership(self) -> GroupMembership | None:
        """The membership taken with the offsets of the transaction in progress."""
        return self._member

    def discard(self, tps: set[TopicPartition]) -> int:
        """Drop queued records that are outcomes of ``tps`` (being given up); returns how many.

        Their offsets were not committed, so the partitions' next owner redoes them;
        sending them later (a flush after a failed one re-sends what stayed queued) would
        publish a second Result. Call with no await before :meth:`OffsetTracker.forget`.
        """
        kept = [entry for entry in self._pending if entry[0] not in tps]
        dropped = len(self._pending) - len(kept)
        self._pending = kept
        self.held = min(self.held, len(kept))
        return dropped

    async def wait_visible(
        self, admin: Any, tps: Iterable[TopicPartition], within: float = 5.0
    ) -> bool:
        """Wait (bounded) until the group's offsets of ``tps`` read back as committed here.

        A transaction's offsets become readable only once the broker has written its commit
        markers, a moment *after* ``commit_transaction`` returns; aiokafka's OffsetFetch
        cannot ask for stable offsets (KIP-447), so until then the broker answers the
        previous offset. A partition's next owner reads its position right after this
        process gives the partition up, and would redo — and publish a second Result for —
        the records of the last transaction. Call before giving partitions up.

        Returns:
            False when they did not read back within ``within`` seconds (records may be redone).
        """
        # Popped: the partitions are being given up, and a later owner's commits are not ours.
        want = {tp: self._committed.pop(tp) for tp in tps if tp in self._committed}
        deadline = asyncio.get_running_loop().time() + within
        while want:
            try:
                seen = await admin.list_consumer_group_offsets(
                    self._group_id, partitions=sorted(want)
                )
            except (KafkaError, OSError):
                seen = {}
            want = {tp: pos for tp, pos in want.items() if tp not in seen or seen[tp].offset < pos}
            if not want:
                break
            if asyncio.get_running_loop().time() >= deadline:
                logger.warning("committed offsets not readable yet; the next owner may redo records")
                return False
            await asyncio.sleep(0.01)
        return True

    def _abortable(self) -> bool:
        # aiokafka asserts on an abort from any other state (e.g. a commit in flight).
        manager = getattr(self._producer, "_txn_manager", None)
        return manager is None or manager.state in _ABORTABLE

    async def _abort(self) -> bool:
        try:
            await self._producer.abort_transaction()
        except (KafkaError, OSError) as exc:
            logger.warning("abort after a failed transaction failed too: %s", type(exc).__name__)
            return False
        return True

    def stop(self) -> None:
        """Make :meth:`run` return after its current flush."""
        self._stopped = True
        self._full.set()

    async def run(self) -> None:
        """Flush periodically until cancelled.

        Raises:
            KafkaUnavailable: after ``max_failures`` failed transactions in a row; the
                process should exit so that uncommitted work is redone elsewhere.
            TransactionInDoubt: at once, when a transaction could not be aborted.
        """
        failures = 0
        while not self._stopped:
            try:
                async with asyncio.timeout(self._interval):
                    await self._full.wait()
            except TimeoutError:
                pass
            if self._stopped:
                return
            if self._linger and len(self._pending) < self._max_batch:
                # A moment for concurrent completions to join this transaction.
                await asyncio.sleep(self._linger)
            self._full.clear()
            try:
                await self.flush()
            except TransactionInDoubt:
                raise
            except KafkaUnavailable:
                failures += 1
                logger.warning("outbox flush failed (%d in a row)", failures)
                if failures >= self._max_failures:
                    raise
                await asyncio.sleep(min(2.0, 0.1 * 2**failures))
            else:
                failures = 0
