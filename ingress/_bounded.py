"""Bounded in-memory structures: a per-key token bucket (and the LRU map, from core).

Everything an ingress replica remembers is bounded, so a flood of distinct tenants,
keys or command ids costs at most a fixed amount of memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager

from core.lru import LRU

__all__ = ["LRU", "KeyedLocks", "TokenBuckets"]


class KeyedLocks:
    """One lock per key, held only while someone holds or waits for it (so as many as
    there are writers at a time, not keys ever seen)."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class TokenBuckets:
    """One token bucket per key (tenant): ``rate`` tokens per second up to ``burst``.

    At most ``max_keys`` buckets are kept; the least recently used one is dropped, which
    only ever makes a tenant's bucket full again (never denies more than it should).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: LRU[str, list[float]] = LRU(max_keys)

    def take(self, key: str, count: int = 1) -> float:
        """Take ``count`` tokens; returns 0 when granted, else seconds until they would be.

        A denied request takes nothing, so a client that waits ``Retry-After`` succeeds.
        """
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [self.burst, now]
            self._buckets.put(key, bucket)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= count:
            bucket[0] = tokens - count
            return 0.0
        bucket[0] = tokens
        return (count - tokens) / self.rate
