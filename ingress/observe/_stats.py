"""Bounded per-tenant statistics: a log-bucket latency histogram and a ring of time slots.

Memory per tenant is fixed: ``SLOTS`` slots of ``SLOT_SECONDS`` each (10 minutes), each
with a 64-bucket histogram allocated on first use (256 bytes), plus the bounded deques
of recent commands and failures kept by the aggregator.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["SLOTS", "SLOT_SECONDS", "LatencyHistogram", "Series", "Slot"]

SLOT_SECONDS = 10
SLOTS = 60
# Bucket i holds latencies up to BASE * GROWTH**i seconds: 1 ms .. ~20 min, ±12% error.
_BASE = 0.001
_GROWTH = 1.25
_BUCKETS = 64
_LOG_GROWTH = math.log(_GROWTH)


def _bucket(seconds: float) -> int:
    if seconds <= _BASE:
        return 0
    return min(_BUCKETS - 1, math.ceil(math.log(seconds / _BASE) / _LOG_GROWTH))


def _upper(index: int) -> float:
    return _BASE * _GROWTH**index


class LatencyHistogram:
    """A fixed-size streaming histogram of latencies in seconds."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = array("I", bytes(4 * _BUCKETS))
        self.total = 0

    def add(self, seconds: float) -> None:
        self.counts[_bucket(max(0.0, seconds))] += 1
        self.total += 1

    def merge(self, other: LatencyHistogram) -> None:
        for i, count in enumerate(other.counts):
            if count:
                self.counts[i] += count
        self.total += other.total

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) in seconds, interpolated inside its bucket; None if empty."""
        if self.total == 0:
            return None
        rank = q * self.total
        seen = 0
        for i, count in enumerate(self.counts):
            if count and seen + count >= rank:
                low = 0.0 if i == 0 else _upper(i - 1)
                high = _upper(i)
                return low + (high - low) * max(0.0, min(1.0, (rank - seen) / count))
            seen += count
        return _upper(_BUCKETS - 1)

    @classmethod
    def merged(cls, parts: Iterable[LatencyHistogram | None]) -> LatencyHistogram:
        out = cls()
        for part in parts:
            if part is not None:
                out.merge(part)
        return out


@dataclass(slots=True)
class Slot:
    index: int = -1  # epoch seconds // SLOT_SECONDS of the slot this entry holds
    total: int = 0
    ok: int = 0
    errors: int = 0
    latency: LatencyHistogram | None = None


@dataclass(slots=True)
class Series:
    """A ring of the last ``SLOTS`` time slots of one tenant (or of all, when merged)."""

    slots: list[Slot] = field(default_factory=lambda: [Slot() for _ in range(SLOTS)])

    def add(self, when: float, ok: bool, latency: float | None, now: float) -> None:
        index = int(when // SLOT_SECONDS)
        if index <= int(now // SLOT_SECONDS) - SLOTS:
            return  # older than the window: counted in totals only
        slot = self.slots[index % SLOTS]
        if slot.index != index:
            if slot.index > index:
                return  # the ring already moved past this slot
            slot.index, slot.total, slot.ok, slot.errors, slot.latency = index, 0, 0, 0, None
        slot.total += 1
        if ok:
            slot.ok += 1
        else:
            slot.errors += 1
        if latency is not None:
            if slot.latency is None:
                slot.latency = LatencyHistogram()
            slot.latency.add(latency)

    def window(self, seconds: int, now: float) -> list[Slot]:
        """Live slots covering the last ``seconds`` (the current, partial slot included)."""
        current = int(now // SLOT_SECONDS)
        first = current - max(1, seconds // SLOT_SECONDS) + 1
        return [s for s in self.slots if first <= s.index <= current]

    def rate(self, seconds: int, now: float) -> float:
        """Results per second over the last ``seconds``."""
        count = sum(slot.total for slot in self.window(seconds, now))
        # The current slot is partial: divide by the time it actually covers.
        covered = seconds - SLOT_SECONDS + (now % SLOT_SECONDS)
        return count / max(1.0, covered)

    def timeline(self, now: float) -> list[dict[str, float | int | None]]:
        """One point per slot, oldest first, zero-filled: for charts."""
        current = int(now // SLOT_SECONDS)
        by_index = {s.index: s for s in self.slots}
        points: list[dict[str, float | int | None]] = []
        for index in range(current - SLOTS + 1, current + 1):
            slot = by_index.get(index)
            hist = slot.latency if slot is not None else None
            points.append(
                {
                    "t": index * SLOT_SECONDS,
                    "total": slot.total if slot else 0,
                    "ok": slot.ok if slot else 0,
                    "errors": slot.errors if slot else 0,
                    "p50_ms": _ms(hist.quantile(0.5)) if hist else None,
                    "p95_ms": _ms(hist.quantile(0.95)) if hist else None,
                    "p99_ms": _ms(hist.quantile(0.99)) if hist else None,
                }
            )
        return points

    def merge(self, other: Series) -> None:
        """Add ``other``'s live slots into this ring (for the operator's all-tenant view)."""
        for theirs in other.slots:
            if theirs.index < 0:
                continue
            mine = self.slots[theirs.index % SLOTS]
            if mine.index != theirs.index:
                if mine.index > theirs.index:
                    continue
                mine.index, mine.total, mine.ok, mine.errors, mine.latency = theirs.index, 0, 0, 0, None
            mine.total += theirs.total
            mine.ok += theirs.ok
            mine.errors += theirs.errors
            if theirs.latency is not None:
                if mine.latency is None:
                    mine.latency = LatencyHistogram()
                mine.latency.merge(theirs.latency)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
