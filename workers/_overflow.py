"""Parking a flooding tenant's excess so its partitions keep flowing for everyone else.

The pool pauses fetching when its in-memory buffer is full, and a pause stops whole
partitions, so without this a tenant that floods (or whose API is slow) would fill the
buffer and stall every other tenant sharing its partitions, whatever the scheduler's
fairness. Instead, once a tenant holds ``backlog`` queued commands, each further record
of that tenant fetched from the connector topic is *parked*: its bytes and headers are
re-produced, unparsed, to the pool's parked topic (``sy-kind: parked``), in the same
Kafka transaction that commits its source offset (the outbox), exactly like a retry
hand-off. The command therefore exists in exactly one place at any moment and still
ends with exactly one final Result; parking is not an attempt (the command is not
touched, its ``attempt`` and ``errors`` stay as they were) and a parked command that
later fails still goes to tier 0 (``sy-next-tier``).

A parked record comes back as soon as it is read again and, while its tenant still has
twice the backlog queued, waits in memory, first in first out, until the tenant has room
(:mod:`workers._holding`, which pauses only that parked partition past its own bound).
It is never re-produced. The parked topic is the pool's own, not retry tier 0: a paused
partition of parked records holds up only tenants over their backlog, never another
tenant's retries (when parked records shared tier 0, a flood on a slow API held the
retries of every tenant on that partition until the flood drained). So the flood waits in Kafka, not in the worker, and costs one
extra produce and fetch per parked command. An earlier version parked records until an
estimated time when the tenant would have room; under CPU saturation the estimate was
late and the tenant's slots idled (3x lower bulk throughput), so there is no timer:
Kafka's flow control (the paused partition) is the only brake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas import Headers

from ._results import Outgoing

__all__ = ["NEXT_TIER_HEADER", "PARKED", "Overflow"]

PARKED = "parked"
NEXT_TIER_HEADER = "sy-next-tier"
_REPLACED = frozenset({Headers.KIND, NEXT_TIER_HEADER})


class Overflow:
    """Decides when a tenant's records are parked, and builds the parked record.

    Args:
        topic: where parked records go (the connector's parked topic).
        backlog: queued (not started) commands a tenant may hold in memory.
    """

    def __init__(self, topic: str, *, backlog: int) -> None:
        if backlog < 1:
            raise ValueError("backlog must be >= 1")
        self.topic = topic
        self.backlog = backlog
        self.parked = 0

    def over(self, queued: int, *, returning: bool = False) -> bool:
        """Whether a tenant with ``queued`` commands must wait: fresh records park at
        ``backlog``, records coming back wait in memory only at twice that, so the
        tenant's older commands go before its newer ones."""
        return queued >= (2 * self.backlog if returning else self.backlog)

    def park(self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]) -> Outgoing:
        """The parked record that carries one excess record, unchanged."""
        kept = [(k, v) for k, v in headers if k not in _REPLACED]
        kept += [(Headers.KIND, PARKED.encode()), (NEXT_TIER_HEADER, b"0")]
        self.parked += 1
        return Outgoing(topic=self.topic, key=key, value=value, headers=kept)

    @staticmethod
    def next_tier(headers: Mapping[str, str]) -> int | None:
        """The tier a parked record goes to when it fails; None when it was not parked."""
        if headers.get(Headers.KIND) != PARKED:
            return None
        try:
            return max(0, int(headers.get(NEXT_TIER_HEADER, "")))
        except ValueError:
            return 0
