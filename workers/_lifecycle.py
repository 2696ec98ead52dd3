"""Rebalance and shutdown of a :class:`~workers._pool.WorkerPool`.

On revocation, queued and held records of the lost partitions are dropped (they stay
uncommitted: the new owner redoes them), running ones get ``revoke_grace`` seconds to
finish, and what finished is committed and waited on until it reads back, so the next
owner starts after it. On assignment, the partitions wait (paused, beside the consumer)
until no open transaction holds a commit of theirs; then the records a previous owner
finished above its committed position (listed in the commit metadata) are restored so
they are skipped.
Shutdown is the same for every partition, with ``shutdown_grace``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from ._credentials import Credentials
from ._holding import Holding
from ._offsets import OffsetTracker
from ._outbox import Outbox
from ._scheduler import FairScheduler
from ._stable_offsets import stable_committed

if TYPE_CHECKING:
    from ._pool import PoolOptions, WorkerPool

__all__ = ["PoolLifecycle", "RebalanceListener"]

# Longest wait for a previous owner's pending commit to settle. The wait runs beside the
# consumer (not in its assignment callback, where no heartbeat is sent), so it can outlast
# the broker's abort of a stalled owner's transaction: the 15 s transaction timeout plus
# the broker's 10 s check for timed-out transactions. Past it (a broker that never
# answers stable), the positions are read as they are.
SETTLE_WITHIN = 60.0
# How long a stopping pool waits for OAuth refreshes in flight to reach Vault: a token
# call (up to its 10 s request timeout), then the write-back, each Vault call bounded at
# 10 s, with retries while Vault is unreachable (0.5 + 1 + 2 s). Inside the chart's 60 s
# termination grace.
REFRESH_GRACE = 30.0
# Of the whole stop's budget (PoolOptions.shutdown_within), what the final commit leaves
# to the token write-backs; and the least each Kafka client gets to close.
_REFRESH_RESERVE = 10.0
_CLOSE_AT_LEAST = 2.0

# The pool's logger: these lines were always the pool's, and log filters rely on the name.
logger = logging.getLogger("workers._pool")


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._pool._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._pool._on_assigned(set(assigned))


class PoolLifecycle:
    """The pool's rebalance and shutdown steps (mixed into :class:`WorkerPool`)."""

    # Set by WorkerPool.__init__ / start().
    options: PoolOptions
    group_id: str
    source_topics: list[str]
    metrics: Any
    scheduler: FairScheduler[Any]
    holding: Holding[Any]
    tracker: OffsetTracker
    outbox: Outbox
    admin: Any
    cancels: Any
    consumer: Any
    producer: Any
    session: aiohttp.ClientSession
    resolver: AbstractResolver | None
    credentials: Credentials
    completed: dict[str, int]
    _tasks: set[asyncio.Task[None]]
    _running: dict[TopicPartition, int]
    _settling: set[TopicPartition]
    _unsettled: list[tuple[TopicPartition, Any]]
    _settles: dict[asyncio.Task[None], frozenset[TopicPartition]]
    _doubtful: dict[TopicPartition, list[float]]
    _doubt_window: int
    _bp_paused: bool
    _revoking: asyncio.Event
    _started: bool

    def _refill(self, tenant: str) -> None:
        raise NotImplementedError

    def _admit(self, tp: TopicPartition, record: Any) -> None:
        raise NotImplementedError

    def request_stop(self) -> None:
        raise NotImplementedError

    def _drop(self, tps: set[TopicPartition] | None) -> None:
        """Forget queued and held records (of ``tps``, or all); they stay uncommitted."""
        self.scheduler.drop(lambda item: tps is None or item.tp in tps)
        self.holding.drop(lambda item: tps is None or item.tp in tps)
        for tenant in self.holding.tenants_waiting():
            self._refill(tenant)  # their queued records may have been dropped

    async def _wait_running(self, tps: set[TopicPartition] | None, grace: float) -> bool:
        def busy() -> bool:
            return any(n > 0 for tp, n in self._running.items() if tps is None or tp in tps)

        try:
            async with asyncio.timeout(grace):
                while busy() and self._tasks:
                    await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            return False
        return True

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not self._started or not revoked:
            return
        self._revoking.set()
        try:
            await self._give_up(revoked)
        finally:
            self._revoking.clear()

    def _report_assignment(self, held: set[TopicPartition]) -> None:
        if self.metrics is not None:
            self.metrics.set_assigned(self.group_id, self.source_topics, held)

    async def _give_up(self, revoked: set[TopicPartition]) -> None:
        self._stop_settling(revoked)
        self._drop(revoked)
        await self._wait_running(revoked, self.options.revoke_grace)
        try:
            await self.outbox.flush()
        except Exception:
            logger.exception("commit on revoke failed; the new owner redoes uncommitted records")
        # What stayed queued (a failed flush, or a task that finished after it) is the
        # new owner's to redo: sent by a later flush, it would be a second Result. Given
        # up before the wait below, so that nothing finishing meanwhile commits for them.
        if dropped := self.outbox.discard(revoked):
            logger.info("outcomes of revoked partitions left to their new owner: %d", dropped)
        self.tracker.forget(revoked)
        for tp in revoked:
            self._doubtful.pop(tp, None)
        self._settling -= revoked
        self._unsettled = [(tp, record) for tp, record in self._unsettled if tp not in revoked]
        for tp in revoked:
            self._running.pop(tp, None)
        try:
            await self.outbox.wait_visible(self.admin, revoked)
        except Exception:
            logger.exception("waiting for the commit on revoke failed")

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._report_assignment(assigned)
        # A fresh assignment starts unpaused; backpressure is re-evaluated on the next poll.
        self._bp_paused = False
        self.holding.paused &= assigned
        if not assigned:
            return
        # The consumer has already read its start positions, maybe while a stalled previous
        # owner's transaction held a newer commit pending. Until the stable commits are
        # read, these partitions are paused and what was fetched of them waits (see
        # _admit); records below a stable position are then skipped as done. The wait runs
        # in a task: returning keeps the consumer heartbeating.
        self._settling |= assigned
        self.consumer.pause(*assigned)
        self._start_settling(assigned)

    def _start_settling(self, tps: set[TopicPartition]) -> None:
        task = asyncio.create_task(self._settle(frozenset(tps)), name="settle")
        self._settles[task] = frozenset(tps)
        task.add_done_callback(lambda done: self._settles.pop(done, None))

    def _stop_settling(self, tps: set[TopicPartition] | None) -> None:
        """Stop waiting for ``tps`` (all with None); the others of a wait wait on."""
        for task, waiting in list(self._settles.items()):
            if tps is None or waiting & tps:
                task.cancel()
                rest = set() if tps is None else set(waiting - tps)
                if rest:
                    self._start_settling(rest)

    async def _settle(self, tps: frozenset[TopicPartition]) -> None:
        try:
            committed = await self._committed(set(tps))
            # Records the previous owner finished above its committed position are listed
            # in the commit metadata: restore them so they are skipped, not run twice.
            skipped = 0
            for tp, meta in committed.items():
                if tp in tps and meta.offset >= 0:
                    skipped += self.tracker.restore(tp, meta.offset, meta.metadata)
            if skipped:
                logger.info("restored %d records finished by the previous owner", skipped)
            # Any transaction of a previous owner has ended, and with it the attempts it
            # made: the first records from here may have been started by it.
            settled_at = time.time()
            for tp in tps:
                self._doubtful[tp] = [settled_at, float(self._doubt_window)]
        except Exception:
            logger.exception("reading the committed positions of new partitions failed; stopping")
            self.request_stop()  # nothing of them was admitted: their records are redone
            return
        self._admit_settled(set(tps))
        if not self._bp_paused:
            self.consumer.resume(*(set(tps) - self.holding.paused - self._settling))

    def _admit_settled(self, assigned: set[TopicPartition]) -> None:
        """Admit the records that waited, in order, before any later one of their partitions.

        A failure here stops the pool: the records not admitted stay uncommitted, and are
        redone.
        """
        self._settling -= assigned
        waiting, self._unsettled = self._unsettled, []
        for index, (tp, record) in enumerate(waiting):
            if tp not in assigned:
                continue
            try:
                self._admit(tp, record)
            except Exception:
                logger.exception("admitting records of new partitions failed; stopping")
                self._unsettled = waiting[index:] + self._unsettled
                self._settling |= assigned  # nothing later of them may pass these
                self.request_stop()
                return

    async def _committed(self, assigned: set[TopicPartition]) -> dict[TopicPartition, Any]:
        try:
            return await stable_committed(self.admin, self.group_id, assigned, within=SETTLE_WITHIN)
        except Exception as exc:  # e.g. KafkaUnavailable; NotImplementedError without v7
            logger.warning("stable offsets not read (%s); reading them as they are", exc)
        try:
            committed: dict[TopicPartition, Any] = await self.admin.list_consumer_group_offsets(
                self.group_id, partitions=sorted(assigned)
            )
            return committed
        except (KafkaError, OSError) as exc:
            logger.warning(
                "cannot read committed metadata (%s): finished records may be redone",
                type(exc).__name__,
            )
            return {}

    async def _shutdown(
        self, background: list[asyncio.Task[Any]], flusher: asyncio.Task[None]
    ) -> None:
        logger.info("worker pool stopping")
        loop = asyncio.get_running_loop()
        end = loop.time() + self.options.shutdown_within

        def left(reserve: float = 0.0) -> float:
            return max(0.0, end - loop.time() - reserve)

        # The token write-backs' share of the budget, which a stuck commit leaves them.
        reserve = min(_REFRESH_RESERVE, self.options.shutdown_within / 5)

        try:
            self.consumer.pause(*self.consumer.assignment())
        except Exception:
            logger.exception("pause on shutdown failed")
        for task in background:
            task.cancel()
        self._stop_settling(None)
        self._drop(None)
        finished = await self._wait_running(None, min(self.options.shutdown_grace, left()))
        if not finished:
            logger.warning(
                "in-flight commands cut at shutdown; they stay uncommitted and are redone"
            )
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Not cancelled: a cancel in the middle of a transaction would leave it open. But
        # not waited for past the budget either (a flush stuck on a frozen broker): then
        # cancelled, and the open transaction is the broker's to abort, as after a kill.
        self.outbox.stop()
        _, stuck = await asyncio.wait([flusher, *background], timeout=left(reserve))
        if stuck:
            logger.warning("the outbox's flush was cut at shutdown; uncommitted records are redone")
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        try:
            # Cut at the budget (a frozen broker): an open transaction is aborted by the
            # broker and its records are redone, as after a kill. The last seconds stay
            # for the token write-backs, which have been running all along.
            async with asyncio.timeout(left(reserve)):
                await self.outbox.flush()
                await self.outbox.wait_visible(self.admin, self.consumer.assignment())
        except TimeoutError:
            logger.warning("final commit cut at shutdown; uncommitted records are redone")
        except Exception:
            logger.exception("final commit failed; uncommitted records are redone")
        # Before the HTTP session closes (and the caller closes Vault): tokens a provider
        # has issued must reach Vault, or a rotating provider's tenant is locked out.
        unfinished = await self.credentials.finish_refreshes(min(REFRESH_GRACE, left()))
        if unfinished:
            logger.warning(
                "%d OAuth refreshes cut at shutdown; their tenants may need new consent",
                unfinished,
            )
        # Leaving the group and the producer's last flush: bounded too (a frozen broker),
        # by what is left or a few seconds.
        for stop in (self.cancels.stop, self.consumer.stop, self.producer.stop, self.admin.close):
            try:
                async with asyncio.timeout(max(left(), _CLOSE_AT_LEAST)):
                    await stop()
            except TimeoutError:
                logger.warning("a Kafka client did not close in time at shutdown")
        await self.session.close()
        if self.resolver is not None:
            await self.resolver.close()
        logger.info("worker pool stopped", extra={"fields": {"completed": dict(self.completed)}})
