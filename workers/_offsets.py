"""Which offset of each partition may be committed, when records finish out of order.

Records of one partition run concurrently (different tenants share partitions), so
record 7 may finish before record 5. The committed position of a partition is its lowest
unfinished offset; everything below it is done. The records finished *above* it are
written into the commit's metadata (``sy1:<horizon>:<pending ranges>``, relative to the
position): a later owner of the partition — after a crash or a rebalance — restores it
and skips those records instead of running them again. Because the commit and the
records' outputs share one Kafka transaction, a finished record is either committed as
done or not finished at all, which is what keeps Results exactly-once.

Each partition also carries a generation that changes when it is revoked, so a task that
finishes after its partition moved to another consumer can tell that its outcome must
be dropped (the new owner redoes the record).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import TopicPartition

__all__ = ["OffsetTracker", "decode_done", "encode_done"]

_PREFIX = "sy1:"
# Brokers refuse commit metadata over offset.metadata.max.bytes (4096 by default).
MAX_METADATA = 3_500


def encode_done(position: int, horizon: int, pending: Iterable[int], limit: int = MAX_METADATA) -> str:
    """Metadata saying: in [position, horizon) everything except ``pending`` is finished.

    When the pending set is too large to encode within ``limit``, the horizon is lowered
    to the first pending offset that does not fit: claiming fewer records done is safe.
    """
    deltas = sorted(offset - position for offset in pending if offset > position)
    parts: list[str] = []
    size = len(_PREFIX) + 12
    start = prev = None
    runs: list[tuple[int, int]] = []
    for delta in deltas:
        if prev is not None and delta == prev + 1:
            prev = delta
            continue
        if start is not None and prev is not None:
            runs.append((start, prev))
        start = prev = delta
    if start is not None and prev is not None:
        runs.append((start, prev))
    span = horizon - position
    for first, last in runs:
        text = str(first) if first == last else f"{first}-{last}"
        if size + len(text) + 1 > limit:
            span = first
            break
        parts.append(text)
        size += len(text) + 1
    return f"{_PREFIX}{span}:{','.join(parts)}"


def decode_done(position: int, metadata: str) -> tuple[int, set[int]] | None:
    """(horizon, pending offsets) from :func:`encode_done` metadata; None when not ours."""
    if not metadata.startswith(_PREFIX):
        return None
    try:
        span_text, _, ranges = metadata[len(_PREFIX) :].partition(":")
        pending: set[int] = set()
        for part in filter(None, ranges.split(",")):
            first, _, last = part.partition("-")
            pending.update(range(position + int(first), position + int(last or first) + 1))
        return position + int(span_text), pending
    except ValueError:
        return None


class _Partition:
    __slots__ = ("committed", "done_until", "generation", "next", "pending", "still_pending")

    def __init__(self, generation: int) -> None:
        self.pending: set[int] = set()
        self.next: int | None = None
        self.committed: tuple[int, str] | None = None
        self.generation = generation
        # Restored from a previous owner's commit: offsets below ``done_until`` are
        # finished unless listed in ``still_pending``.
        self.done_until = -1
        self.still_pending: set[int] = set()


class OffsetTracker:
    """Pending offsets per partition; the committable position is the lowest pending one."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}
        self._generations: dict[TopicPartition, int] = {}

    def _part(self, tp: TopicPartition) -> _Partition:
        part = self._parts.get(tp)
        if part is None:
            part = _Partition(self._generations.get(tp, 0))
            self._parts[tp] = part
        return part

    def restore(self, tp: TopicPartition, position: int, metadata: str) -> int:
        """Adopt a previous owner's commit: records below ``position`` are done, and those
        its metadata lists as finished above it; returns how many of the latter."""
        decoded = decode_done(position, metadata)
        horizon, pending = decoded if decoded is not None else (position, set())
        part = self._part(tp)
        part.done_until = horizon
        part.still_pending = pending | {position}
        return max(0, horizon - position - len(part.still_pending))

    def track(self, tp: TopicPartition, offset: int) -> int | None:
        """Register a fetched record; returns the generation to hand back later.

        Returns None when a previous owner already finished this record: skip it.
        """
        part = self._part(tp)
        part.next = offset + 1 if part.next is None else max(part.next, offset + 1)
        if offset < part.done_until and offset not in part.still_pending:
            return None
        part.pending.add(offset)
        return part.generation

    def is_current(self, tp: TopicPartition, generation: int) -> bool:
        part = self._parts.get(tp)
        return part is not None and part.generation == generation

    def finish(self, tp: TopicPartition, offset: int, generation: int) -> bool:
        """Mark a record finished; False when the partition was revoked since it was fetched."""
        part = self._parts.get(tp)
        if part is None or part.generation != generation:
            return False
        part.pending.discard(offset)
        return True

    def committable(self) -> dict[TopicPartition, tuple[int, str]]:
        """(position, metadata) of partitions whose commit changed since the last one."""
        out: dict[TopicPartition, tuple[int, str]] = {}
        for tp, part in self._parts.items():
            if part.next is None:
                continue
            # A restored done-set reaching past what we fetched yet must survive our commit,
            # or a crash of ours would make the next owner redo the previous owner's work.
            horizon = max(part.next, part.done_until)
            pending = part.pending
            if part.done_until > part.next:
                pending = pending | {o for o in part.still_pending if o >= part.next}
            if pending:
                position = min(pending)
                state = (position, encode_done(position, horizon, pending))
            else:
                state = (horizon, "")
            if state != part.committed:
                out[tp] = state
        return out

    def mark_committed(self, offsets: dict[TopicPartition, tuple[int, str]]) -> None:
        for tp, state in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = state

    def pending(self, tp: TopicPartition) -> int:
        part = self._parts.get(tp)
        return len(part.pending) if part is not None else 0

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop revoked partitions; later finishes of their records are ignored."""
        for tp in tps:
            part = self._parts.pop(tp, None)
            previous = part.generation if part is not None else self._generations.get(tp, 0)
            self._generations[tp] = previous + 1

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._parts)
