"""Cancellations a worker process knows of: the cancels topic, followed whole.

A caller cancels a command it submitted (``POST /v1/commands/{id}:cancel``, MCP
``tasks/cancel``); the ingress publishes the cancellation on the cancels topic. Whichever
worker process holds the command (queued behind its tenant's others, parked, or waiting
for a retry tier's delay) may be any of the pool's, so every process follows every
partition of the topic, without a group, and remembers the cancelled command ids. The
executor asks before each attempt: a cancelled command ends without running (a command
already running is not interrupted: its call may have taken effect).

A process started later reads the topic back ``lookback`` seconds (a day, the longest
deadline a command may have), so a restart or a rebalance forgets no cancellation of a
command that may still run. A cancellation holds only for a command submitted before it
(with a margin for the clocks of two ingress replicas): an idempotency key used again
after the dedup window gives the same command id to a new command, which an old
cancellation must not end. Memory is bounded: at most ``capacity`` ids, a tenant past a
tenth of them forgetting its own oldest first (``core.lru``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.follow import Following, TopicFollower
from core.kafka import headers_dict
from core.lru import LRU
from core.settings import Settings
from schemas import TASK_CANCEL_KIND, Headers

__all__ = ["CancelFeed"]

# The longest deadline a command may have (ingress.models.MAX_DEADLINE_SECONDS): a
# cancellation older than that names a command that has ended by now.
LOOKBACK_SECONDS = 86_400.0
# How much later than its cancellation a command's submission may read, by the clocks of
# two ingress replicas, and still be the command cancelled.
CLOCK_MARGIN_MS = 60_000


class CancelFeed(Following):
    """``command id -> (tenant, cancelled at, ms)`` of the commands cancelled lately."""

    def __init__(self, settings: Settings, *, capacity: int = 100_000, lookback: float = LOOKBACK_SECONDS) -> None:
        self._cancelled: LRU[str, tuple[str, int]] = LRU(capacity, owner=lambda entry: entry[0])
        # Told of each cancellation read (tenant, command id): the pool ends a retry it
        # holds for a later time at once instead of when it is due.
        self.on_cancel: Callable[[str, str], None] | None = None
        self.follower = TopicFollower(
            settings, settings.topics.cancels, self.apply, start_at=lookback, name="cancels"
        )

    def apply(self, record: Any) -> None:
        found = headers_dict(record.headers)
        if found.get(Headers.KIND) != TASK_CANCEL_KIND:
            return
        tenant, command_id = found.get(Headers.TENANT), found.get(Headers.COMMAND_ID)
        if tenant and command_id:
            self._cancelled.put(command_id, (tenant, record.timestamp))
            if self.on_cancel is not None:
                self.on_cancel(tenant, command_id)

    def cancelled(self, tenant_id: str, command_id: str, submitted_at: datetime) -> bool:
        """Whether ``tenant_id`` cancelled its command ``command_id`` submitted at ``submitted_at``."""
        entry = self._cancelled.get(command_id)
        return (
            entry is not None
            and entry[0] == tenant_id
            and entry[1] >= submitted_at.timestamp() * 1000 - CLOCK_MARGIN_MS
        )

    def __len__(self) -> int:
        return len(self._cancelled)
