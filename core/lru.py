"""A dict bounded by forgetting its least recently used entries: what every cache of
tenants, keys or ids uses, so that their number never grows memory past a fixed size."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["LRU"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A dict that forgets its least recently used entry beyond ``capacity`` entries or,
    given ``weigh`` (bytes of a value), beyond ``max_bytes`` (the newest entry is kept
    whatever it weighs); ``on_evict(key, value)`` hears each one forgotten so."""

    def __init__(
        self,
        capacity: int,
        *,
        on_evict: Callable[[K, V], None] | None = None,
        max_bytes: int | None = None,
        weigh: Callable[[V], int] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if (max_bytes is None) != (weigh is None):
            raise ValueError("max_bytes and weigh go together")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._weigh = weigh
        self.bytes = 0  # what the values weigh, with ``weigh``
        self._on_evict = on_evict
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self._weigh is not None:
            old = self._data.get(key)
            self.bytes += self._weigh(value) - (0 if old is None else self._weigh(old))
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity or (
            self.max_bytes is not None and self.bytes > self.max_bytes and len(self._data) > 1
        ):
            evicted = self._data.popitem(last=False)
            if self._weigh is not None:
                self.bytes -= self._weigh(evicted[1])
            if self._on_evict is not None:
                self._on_evict(*evicted)

    def peek(self, key: K) -> V | None:
        """The value without marking it used (reads never change what is forgotten)."""
        return self._data.get(key)

    def pop(self, key: K) -> V | None:
        value = self._data.pop(key, None)
        if value is not None and self._weigh is not None:
            self.bytes -= self._weigh(value)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))

    def items(self) -> list[tuple[K, V]]:
        """A snapshot of the entries, least recently used first (uses nothing)."""
        return list(self._data.items())
