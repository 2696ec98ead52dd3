"""Bounded in-memory structures: an LRU map and a per-key token bucket.

Everything an ingress replica remembers is bounded, so a flood of distinct tenants,
keys or command ids costs at most a fixed amount of memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["LRU", "TokenBuckets"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A dict that forgets its least recently used entry beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def peek(self, key: K) -> V | None:
        """The value without marking it used (reads never change what is forgotten)."""
        return self._data.get(key)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))

    def items(self) -> list[tuple[K, V]]:
        """A snapshot of the entries, least recently used first (uses nothing)."""
        return list(self._data.items())


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
