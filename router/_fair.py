"""The router's batch queue: each commands partition served in turn, not first come first served.

Commands are keyed by tenant, so a tenant's commands share one partition. A batch takes
an equal share from every partition that has something queued, starting each batch with
a different one, so a partition's wait is about one batch, whatever the others hold.
Order within a partition is kept, which is all the router's ordering (``router._route``)
and faust's commits rely on.

The queue is deep (``capacity``) on purpose: what faust has fetched moves out of its
stream buffer, which is first come first served across partitions, into this one, where
the fair order applies. ``put`` blocks only when ``capacity`` events are queued, which
bounds memory; a rebalance's stale events pass through it to the router's fence.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["FairQueue"]


class FairQueue:
    def __init__(self, *, capacity: int, key: Callable[[Any], Hashable]) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._key = key
        # Insertion order is the service order: a partition served moves to the end.
        self._queues: dict[Hashable, deque[Any]] = {}
        self._size = 0
        self._nonempty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return self._size

    async def put(self, event: Any) -> None:
        while self._size >= self._capacity:
            self._room.clear()
            await self._room.wait()
        key = self._key(event)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(event)
        self._size += 1
        self._nonempty.set()

    async def get_batch(self, limit: int) -> list[Any]:
        """Wait for at least one event; return up to ``limit``, shared across partitions."""
        while not self._size:
            self._nonempty.clear()
            await self._nonempty.wait()
        batch: list[Any] = []
        while len(batch) < limit and self._queues:
            share = max(1, (limit - len(batch)) // len(self._queues))
            for key in list(self._queues):
                queue = self._queues.pop(key)
                take = min(share, len(queue), limit - len(batch))
                batch.extend(queue.popleft() for _ in range(take))
                self._size -= take
                if queue:
                    self._queues[key] = queue  # to the end of the service order
                if len(batch) >= limit:
                    break
        # After whole rounds the order is unchanged: start the next batch one further on.
        first = self._key(batch[0])
        if first in self._queues and next(iter(self._queues)) == first:
            self._queues[first] = self._queues.pop(first)
        self._room.set()
        return batch
