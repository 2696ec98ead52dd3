"""A dict bounded by forgetting its least recently used entries: what every cache of
tenants, keys or ids uses, so that their number never grows memory past a fixed size.

Given ``owner`` (whose entry a value is: its tenant), an owner past its share of the
entries or of the bytes makes room from its own oldest entries when room must be made,
so that one tenant's flood cannot push every other tenant's entries out; below the
bounds, one owner may fill the whole (a deployment of few tenants loses nothing).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["LRU", "OWNER_SHARE"]

K = TypeVar("K")
V = TypeVar("V")

# What one owner may hold of an LRU with ``owner``: a tenth, as the ingress's waits.
OWNER_SHARE = 0.1


class LRU(Generic[K, V]):
    """A dict that forgets its least recently used entry beyond ``capacity`` entries or,
    given ``weigh`` (bytes of a value), beyond ``max_bytes`` (the newest entry is kept
    whatever it weighs); ``on_evict(key, value)`` hears each one forgotten so. Given
    ``owner``, room for an entry of an owner holding more than ``OWNER_SHARE`` of either
    bound is made from that owner's least recently used entries, not the others'."""

    def __init__(
        self,
        capacity: int,
        *,
        on_evict: Callable[[K, V], None] | None = None,
        max_bytes: int | None = None,
        weigh: Callable[[V], int] | None = None,
        owner: Callable[[V], str] | None = None,
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
        self._owner = owner
        # owner -> its keys, least recently used first, with what each weighs; and its bytes.
        self._owned: dict[str, OrderedDict[K, int]] = {}
        self._owned_bytes: dict[str, int] = {}
        self._owner_capacity = max(1, int(capacity * OWNER_SHARE))
        self._owner_bytes = None if max_bytes is None else max(1, int(max_bytes * OWNER_SHARE))

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
            if self._owner is not None:
                # The owner's own order too: room made from its entries spares those in use
                # (a tenant's hot compiled schema beside thousands it used once).
                owned = self._owned.get(self._owner(value))
                if owned is not None and key in owned:
                    owned.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        old = self._data.get(key)
        if old is not None:
            self._disown(key, old)
        size = self._weigh(value) if self._weigh is not None else 0
        if self._weigh is not None:
            self.bytes += size - (0 if old is None else self._weigh(old))
        self._data[key] = value
        self._data.move_to_end(key)
        owner = None
        if self._owner is not None:
            owner = self._owner(value)
            keys = self._owned.setdefault(owner, OrderedDict())
            keys[key] = size
            self._owned_bytes[owner] = self._owned_bytes.get(owner, 0) + size
        while len(self._data) > self.capacity or (
            self.max_bytes is not None and self.bytes > self.max_bytes and len(self._data) > 1
        ):
            own = self._over_share(owner)
            self._evict(next(iter(own if own is not None else self._data)))

    def _over_share(self, owner: str | None) -> OrderedDict[K, int] | None:
        """``owner``'s keys when it holds more than its share (and more than one entry)."""
        if owner is None:
            return None
        keys = self._owned.get(owner)
        if keys is None or len(keys) < 2:
            return None
        over_bytes = self._owner_bytes is not None and self._owned_bytes[owner] > self._owner_bytes
        return keys if len(keys) > self._owner_capacity or over_bytes else None

    def _disown(self, key: K, value: V) -> None:
        if self._owner is None:
            return
        owner = self._owner(value)
        keys = self._owned.get(owner)
        size = keys.pop(key, None) if keys is not None else None
        if size is None or keys is None:
            return
        if keys:
            self._owned_bytes[owner] -= size
        else:
            del self._owned[owner], self._owned_bytes[owner]

    def _evict(self, key: K) -> None:
        value = self._data.pop(key)
        self._disown(key, value)
        if self._weigh is not None:
            self.bytes -= self._weigh(value)
        if self._on_evict is not None:
            self._on_evict(key, value)

    def peek(self, key: K) -> V | None:
        """The value without marking it used (reads never change what is forgotten)."""
        return self._data.get(key)

    def pop(self, key: K) -> V | None:
        value = self._data.pop(key, None)
        if value is not None:
            self._disown(key, value)
            if self._weigh is not None:
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
