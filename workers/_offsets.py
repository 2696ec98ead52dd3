"""Which offset of each partition may be committed, when records finish out of order.

Records of one partition run concurrently (different tenants share partitions), so
record 7 may finish before record 5. The committed position of a partition is its lowest
unfinished offset; everything below it is done. The records finished *above* it are
written into the commit's metadata (``sy1:<horizon>:<pending ranges>``, relative to the
position): a later owner of the partition — after a crash or a rebalance — restores it
and skips those records instead of running them again. Because the commit and the
records' outputs share one Kafka transaction, a finished record is either committed as
done or not finished at all, which is what keeps Results exactly-once.

When the finished records above the position are too scattered to list within the
broker's metadata limit, fewer are claimed: the claim stops below the first gap that
does not fit, and the outputs of records finished above it wait in the outbox until a
later commit can claim them (see :meth:`OffsetTracker.claims`). A claim is never taken
back: a commit that would list less than the previous one lists the records that
finished since then as unfinished again (what the previous commit listed, which fitted),
so a record whose Result was published stays claimed done.

Each partition also carries a generation that changes when it is revoked, so a task that
finishes after its partition moved to another consumer can tell that its outcome must
be dropped (the new owner redoes the record).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from aiokafka import TopicPartition

__all__ = ["OffsetTracker", "decode_done", "encode_done"]

_PREFIX = "sy1:"
# Brokers refuse commit metadata over offset.metadata.max.bytes (4096 by default).
MAX_METADATA = 3_500


def encode_done(position: int, horizon: int, pending: Iterable[int], limit: int = MAX_METADATA) -> str:
    """Metadata saying: in [position, horizon) everything except ``pending`` is finished.

    When the pending set is too large to encode within ``limit``, the horizon is lowered
    to the first pending offset that does not fit (see :func:`encode_claim`).
    """
    return encode_claim(position, horizon, pending, limit)[0]


def encode_claim(
    position: int, horizon: int, pending: Iterable[int], limit: int = MAX_METADATA
) -> tuple[str, int]:
    """(:func:`encode_done` metadata, the horizon it really claims, maybe lowered)."""
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
    return f"{_PREFIX}{span}:{','.join(parts)}", position + span


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


class _Claim(NamedTuple):
    """A commit being made: its (position, metadata), its horizon, and which finished
    records it claims done (their outputs go into the same transaction)."""

    state: tuple[int, str]
    until: int
    finished: frozenset[int]


class _Partition:
    __slots__ = (
        "claim", "claimed_until", "committed", "done_until", "finished", "generation", "next",
        "pending", "still_pending",
    )  # fmt: skip

    def __init__(self, generation: int) -> None:
        self.pending: set[int] = set()
        # Finished, but not claimed done by a commit yet.
        self.finished: set[int] = set()
        self.next: int | None = None
        self.committed: tuple[int, str] | None = None
        # Horizon of the last commit: nothing below it that it claimed may be taken back.
        self.claimed_until = -1
        self.claim: _Claim | None = None
        self.generation = generation
        # Restored from a previous owner's commit: offsets below ``done_until`` are
        # finished unless listed in ``still_pending``.
        self.done_until = -1
        self.still_pending: set[int] = set()


class OffsetTracker:
    """Pending offsets per partition; the committable position is the lowest pending one."""

    def __init__(self, metadata_limit: int = MAX_METADATA) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}
        self._generations: dict[TopicPartition, int] = {}
        self._limit = metadata_limit

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
        part.claimed_until = horizon
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

    def advance(self, tp: TopicPartition, position: int) -> None:
        """The consumer stands at ``position`` of ``tp``, and every record below it was
        handed to :meth:`track`: offsets below it never tracked are Kafka's control
        records (a transaction's commit or abort marker), which a commit may claim.

        Without this a drained partition of a topic written in transactions (the retry
        tiers, parked) commits one short of its end: a lag of 1 for ever, which keeps
        a lag-scaled pool from going to zero. Only partitions with a tracked record
        move: one never read here has nothing of ours to commit.
        """
        part = self._parts.get(tp)
        if part is not None and part.next is not None and position > part.next:
            part.next = position

    def is_current(self, tp: TopicPartition, generation: int) -> bool:
        part = self._parts.get(tp)
        return part is not None and part.generation == generation

    def finish(self, tp: TopicPartition, offset: int, generation: int) -> bool:
        """Mark a record finished; False when the partition was revoked since it was fetched."""
        part = self._parts.get(tp)
        if part is None or part.generation != generation:
            return False
        if offset in part.pending:
            part.pending.discard(offset)
            part.finished.add(offset)
        return True

    def committable(self) -> dict[TopicPartition, tuple[int, str]]:
        """(position, metadata) of partitions whose commit changed since the last one.

        Also decides, per partition, which finished records that commit claims: ask
        :meth:`claims` before :meth:`mark_committed`.
        """
        out: dict[TopicPartition, tuple[int, str]] = {}
        for tp, part in self._parts.items():
            if part.next is None:
                continue
            part.claim = self._claim(part)
            if part.claim.state != part.committed:
                out[tp] = part.claim.state
        return out

    def _claim(self, part: _Partition) -> _Claim:
        # A restored done-set reaching past what we fetched yet must survive our commit,
        # or a crash of ours would make the next owner redo the previous owner's work.
        horizon = max(part.next or 0, part.done_until)
        unfinished = part.pending
        if part.done_until > (part.next or 0):
            unfinished = unfinished | {o for o in part.still_pending if o >= (part.next or 0)}
        state, until = self._encode(unfinished, horizon)
        listed: set[int] = set()
        if until < part.claimed_until:
            # Records finished since the last commit split the runs it listed into more
            # than fit. Those above the lowest unfinished one listed again as unfinished,
            # what is listed below the last horizon is a tail of what the last commit
            # listed, which fitted; so that horizon holds.
            lowest = min(unfinished)
            listed = {o for o in part.finished if lowest < o < part.claimed_until}
            state, until = self._encode(unfinished | listed, horizon)
        claimed = frozenset(o for o in part.finished if o < until and o not in listed)
        return _Claim(state, until, claimed)

    def _encode(self, unfinished: set[int], horizon: int) -> tuple[tuple[int, str], int]:
        if not unfinished:
            return (horizon, ""), horizon
        position = min(unfinished)
        metadata, until = encode_claim(position, horizon, unfinished, self._limit)
        return (position, metadata), until

    def claims(self, tp: TopicPartition, offset: int) -> bool:
        """Whether the commit :meth:`committable` just proposed claims this finished record."""
        part = self._parts.get(tp)
        return part is not None and part.claim is not None and offset in part.claim.finished

    def mark_committed(self, offsets: dict[TopicPartition, tuple[int, str]]) -> None:
        for tp, state in offsets.items():
            part = self._parts.get(tp)
            if part is None:
                continue
            part.committed = state
            if part.claim is not None and part.claim.state == state:
                part.finished -= part.claim.finished
                part.claimed_until = max(part.claimed_until, part.claim.until)

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
