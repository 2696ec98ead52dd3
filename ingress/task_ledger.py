"""MCP tasks and their cancellations as every ingress replica sees them.

A task-augmented ``tools/call`` publishes its command with the header ``sy-task-ttl``;
``tasks/cancel`` publishes a :class:`schemas.TaskCancel` record after it, on the same
partition (keyed by tenant). Every replica follows the commands topic
(``ingress.accepted``) and notes both here, so ``tasks/list`` and a cancellation read
the same on whichever replica a load balancer picks. The replica that took the call
notes it at once as well (a client asking again right away reads its own write).

Bounded: at most ``capacity`` tasks over all tenants, the least recently noted
forgotten first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ._bounded import LRU

__all__ = ["DEFAULT_TASK_CAPACITY", "TaskEntry", "TaskLedger"]

DEFAULT_TASK_CAPACITY = 10_000


@dataclass(slots=True)
class TaskEntry:
    created_at: datetime
    ttl_ms: int | None  # None: only its cancellation was seen (the book's default applies)
    cancelled_at: datetime | None = None


class TaskLedger:
    """``(tenant, workspace, task id) -> TaskEntry`` of the tasks seen lately."""

    def __init__(self, capacity: int = DEFAULT_TASK_CAPACITY) -> None:
        self._entries: LRU[tuple[str, str, str], TaskEntry] = LRU(capacity)

    def created(
        self, tenant_id: str, space_id: str, task_id: str, at: datetime, ttl_ms: int
    ) -> None:
        key = (tenant_id, space_id, task_id)
        known = self._entries.peek(key)
        if known is None:
            self._entries.put(key, TaskEntry(at, ttl_ms))

    def cancelled(self, tenant_id: str, space_id: str, task_id: str, at: datetime) -> None:
        """Note a cancellation; the first one noted stands (a task stays cancelled)."""
        key = (tenant_id, space_id, task_id)
        entry = self._entries.peek(key)
        if entry is None:
            # Its creation was forgotten (or it was a plain call): cancelled all the same.
            self._entries.put(key, TaskEntry(at, None, at))
        elif entry.cancelled_at is None:
            entry.cancelled_at = at

    def get(self, tenant_id: str, space_id: str, task_id: str) -> TaskEntry | None:
        # A peek: replicas serve different reads, and reads must not make them forget
        # different tasks.
        return self._entries.peek((tenant_id, space_id, task_id))

    def task_ids(self, tenant_id: str, space_id: str) -> list[str]:
        """The workspace's task ids, newest first."""
        found = [
            (entry.created_at, task_id)
            for (tenant, space, task_id), entry in self._entries.items()
            if tenant == tenant_id and space == space_id
        ]
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [task_id for _, task_id in found]

    def __len__(self) -> int:
        return len(self._entries)
