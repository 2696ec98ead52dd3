"""Fair scheduling of commands across tenants.

Each tenant has its own FIFO queue; a ring of tenants that have queued work and are
below their concurrency cap is served round-robin, one command per turn. So one tenant's
flood (or slow API holding its slots) never delays another tenant's next command by more
than one turn of the ring, whatever the order the records had in their partition.

A tenant's cap is the process's ``tenant_limit``, or lower when its commands say so (the
workspace's ``limits.concurrency``, which the router stamps on each routed record): the
lowest cap of the tenant's workspaces that pushed work since the tenant was last idle
(a workspace's latest command sets its cap), so a busy workspace never lifts a sibling's
lower cap. They are forgotten when the tenant has nothing queued or running, so the
caps held are bounded by the tenants at work and their workspaces.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["FairScheduler"]

T = TypeVar("T")


class FairScheduler(Generic[T]):
    """Per-tenant queues, per-tenant and global running caps, round-robin between tenants."""

    def __init__(self, *, global_limit: int, tenant_limit: int) -> None:
        if global_limit < 1 or tenant_limit < 1:
            raise ValueError("limits must be >= 1")
        self.global_limit = global_limit
        self.tenant_limit = tenant_limit
        self._queues: dict[str, deque[T]] = {}
        self._running: dict[str, int] = {}
        # tenant -> workspace -> its cap, for workspaces that pushed work since the tenant
        # was last idle; the tenant's cap is the lowest of them (and tenant_limit).
        self._limits: dict[str, dict[str, int]] = {}
        self._ring: deque[str] = deque()
        self._in_ring: set[str] = set()
        self._in_flight = 0
        self._buffered = 0
        self._wakeup = asyncio.Event()

    @property
    def buffered(self) -> int:
        """Commands queued and not started."""
        return self._buffered

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def running(self, tenant: str) -> int:
        return self._running.get(tenant, 0)

    def queued(self, tenant: str) -> int:
        """Commands of ``tenant`` queued and not started."""
        queue = self._queues.get(tenant)
        return len(queue) if queue is not None else 0

    def limit(self, tenant: str) -> int:
        """The commands of ``tenant`` that may run at once."""
        caps = self._limits.get(tenant)
        return min(self.tenant_limit, *caps.values()) if caps else self.tenant_limit

    def _maybe_ring(self, tenant: str) -> None:
        if (
            tenant not in self._in_ring
            and self._queues.get(tenant)
            and self._running.get(tenant, 0) < self.limit(tenant)
        ):
            self._ring.append(tenant)
            self._in_ring.add(tenant)
            self._wakeup.set()

    def push(self, tenant: str, item: T, limit: int | None = None, space: str = "") -> None:
        """Queue ``item``; ``limit``: the cap its workspace ``space`` sets, if its command
        carries one (a command of a router of before carries none)."""
        if limit is not None and limit >= 1:
            self._limits.setdefault(tenant, {})[space] = limit
        self._queues.setdefault(tenant, deque()).append(item)
        self._buffered += 1
        self._maybe_ring(tenant)

    def take(self) -> tuple[str, T] | None:
        """The next command to start, or None when nothing may start now."""
        if self._in_flight >= self.global_limit or not self._ring:
            return None
        tenant = self._ring.popleft()
        self._in_ring.discard(tenant)
        queue = self._queues[tenant]
        item = queue.popleft()
        self._buffered -= 1
        self._in_flight += 1
        self._running[tenant] = self._running.get(tenant, 0) + 1
        if not queue:
            del self._queues[tenant]
        else:
            # To the back of the ring: every other ready tenant gets a turn first.
            self._maybe_ring(tenant)
        return tenant, item

    async def next(self) -> tuple[str, T]:
        """Wait until a command may start and return it (tenant, item)."""
        while True:
            taken = self.take()
            if taken is not None:
                return taken
            self._wakeup.clear()
            await self._wakeup.wait()

    def release(self, tenant: str) -> None:
        """A started command finished: free its slots."""
        self._in_flight -= 1
        left = self._running.get(tenant, 0) - 1
        if left <= 0:
            self._running.pop(tenant, None)
            if tenant not in self._queues:
                self._limits.pop(tenant, None)
        else:
            self._running[tenant] = left
        self._maybe_ring(tenant)
        self._wakeup.set()

    def drop(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove queued (not started) commands matching ``predicate``; return them."""
        dropped: list[T] = []
        for tenant in list(self._queues):
            queue = self._queues[tenant]
            kept = deque(item for item in queue if not predicate(item))
            dropped.extend(item for item in queue if predicate(item))
            if kept:
                self._queues[tenant] = kept
            else:
                del self._queues[tenant]
                if tenant not in self._running:
                    self._limits.pop(tenant, None)
                if tenant in self._in_ring:
                    self._in_ring.discard(tenant)
                    self._ring.remove(tenant)
        self._buffered -= len(dropped)
        return dropped
