"""Records fetched but not to be started yet, without blocking their partition.

Two reasons to wait: a retry-tier or parked record whose not-before time is in the future
(held by time), and a record read back from a tier topic whose tenant already has its
share queued (held until that tenant has room, first in first out). Either way the
record stays tracked and uncommitted, so a crash or a rebalance simply redoes it. Memory
is bounded per partition: a partition holding ``limit`` records is paused (only that one)
and resumed when it holds fewer than half of that. Timed records are also counted per
partition and tenant (:meth:`Holding.timed`), so that the pool can keep one tenant from
filling a partition's share (an upstream that answers "retry in a day").
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from aiokafka import TopicPartition

__all__ = ["Holding"]


class _Held(Protocol):
    @property
    def tp(self) -> TopicPartition: ...


T = TypeVar("T", bound=_Held)


class Holding(Generic[T]):
    """Timed and waiting-for-room records, counted per partition for pausing."""

    def __init__(
        self,
        *,
        limit: int,
        pause: Callable[[TopicPartition], None],
        resume: Callable[[TopicPartition], None],
    ) -> None:
        self.limit = limit
        self._pause = pause
        self._resume = resume
        self._timed: list[tuple[float, int, str, T]] = []
        self._timed_of: dict[tuple[TopicPartition, str], int] = {}
        self._waiting: dict[str, deque[T]] = {}
        self._per_tp: dict[TopicPartition, int] = {}
        self._seq = itertools.count()
        self.paused: set[TopicPartition] = set()
        self.wakeup = asyncio.Event()

    def __len__(self) -> int:
        return sum(self._per_tp.values())

    def _count(self, tp: TopicPartition) -> None:
        count = self._per_tp.get(tp, 0) + 1
        self._per_tp[tp] = count
        if count >= self.limit and tp not in self.paused:
            self.paused.add(tp)
            self._pause(tp)

    def _uncount(self, tp: TopicPartition) -> None:
        count = self._per_tp.get(tp, 1) - 1
        self._per_tp[tp] = count
        if tp in self.paused and count < self.limit // 2:
            self.paused.discard(tp)
            self._resume(tp)

    def until(self, item: T, due: float, tenant: str) -> None:
        """Hold ``tenant``'s ``item`` until the wall-clock time ``due`` (epoch seconds)."""
        heapq.heappush(self._timed, (due, next(self._seq), tenant, item))
        key = (item.tp, tenant)
        self._timed_of[key] = self._timed_of.get(key, 0) + 1
        self._count(item.tp)
        self.wakeup.set()

    def timed(self, tp: TopicPartition, tenant: str) -> int:
        """How many of ``tenant``'s records ``tp`` holds until a time."""
        return self._timed_of.get((tp, tenant), 0)

    def for_room(self, tenant: str, item: T) -> None:
        """Hold ``item`` until :meth:`take_waiting` for its tenant (FIFO per tenant)."""
        self._waiting.setdefault(tenant, deque()).append(item)
        self._count(item.tp)

    def next_due(self) -> float | None:
        return self._timed[0][0] if self._timed else None

    def due(self, now: float) -> list[T]:
        """Remove and return the timed records due at ``now``."""
        out: list[T] = []
        while self._timed and self._timed[0][0] <= now:
            _, _, tenant, item = heapq.heappop(self._timed)
            self._untime(item, tenant)
            out.append(item)
        return out

    def release(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove and return the timed records matching ``predicate`` before they are due."""
        kept: list[tuple[float, int, str, T]] = []
        released: list[tuple[float, int, str, T]] = []
        for entry in self._timed:
            (released if predicate(entry[3]) else kept).append(entry)
        if not released:
            return []
        heapq.heapify(kept)
        self._timed = kept
        for _, _, tenant, item in released:
            self._untime(item, tenant)
        return [entry[3] for entry in released]

    def _untime(self, item: T, tenant: str) -> None:
        """Count a timed record out (it was taken from the heap)."""
        key = (item.tp, tenant)
        left = self._timed_of[key] - 1
        if left:
            self._timed_of[key] = left
        else:
            del self._timed_of[key]
        self._uncount(item.tp)

    def waiting(self, tenant: str) -> bool:
        return tenant in self._waiting

    def tenants_waiting(self) -> list[str]:
        return list(self._waiting)

    def take_waiting(self, tenant: str) -> T | None:
        """The oldest record waiting for room of ``tenant``, or None."""
        queue = self._waiting.get(tenant)
        if not queue:
            return None
        item = queue.popleft()
        if not queue:
            del self._waiting[tenant]
        self._uncount(item.tp)
        return item

    def drop(self, predicate: Callable[[T], bool]) -> int:
        """Forget held records matching ``predicate`` (they stay uncommitted); returns how many."""
        dropped = 0
        kept = [entry for entry in self._timed if not predicate(entry[3])]
        dropped += len(self._timed) - len(kept)
        heapq.heapify(kept)
        self._timed = kept
        for tenant in list(self._waiting):
            queue = self._waiting[tenant]
            left = deque(item for item in queue if not predicate(item))
            dropped += len(queue) - len(left)
            if left:
                self._waiting[tenant] = left
            else:
                del self._waiting[tenant]
        # Recount from what is left; partitions with nothing held are forgotten.
        counts: dict[TopicPartition, int] = {}
        self._timed_of = {}
        for _, _, tenant, item in self._timed:
            counts[item.tp] = counts.get(item.tp, 0) + 1
            self._timed_of[item.tp, tenant] = self._timed_of.get((item.tp, tenant), 0) + 1
        for queue in self._waiting.values():
            for item in queue:
                counts[item.tp] = counts.get(item.tp, 0) + 1
        self._per_tp = counts
        self.paused &= set(counts)
        return dropped
