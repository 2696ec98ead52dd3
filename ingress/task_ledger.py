"""MCP tasks and their cancellations as every ingress replica sees them.

A task-augmented ``tools/call`` publishes its command with the header ``sy-task-ttl``;
``tasks/cancel`` publishes a :class:`schemas.TaskCancel` record after it, on the same
partition (keyed by tenant). Every replica follows the commands topic
(``ingress.accepted``) and notes both here, so ``tasks/list`` and a cancellation read
the same on whichever replica a load balancer picks. The replica that took the call
notes it at once as well (a client asking again right away reads its own write).

Bounded: at most ``capacity`` tasks in all, and a tenant at most a tenth of them (its
own oldest forgotten first). So one tenant's flood of tasks cannot make a replica forget
another tenant's tasks, nor their cancellations (a forgotten cancelled task would read
"working" again); past the capacity, the tenant noted least recently loses its oldest.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

__all__ = ["DEFAULT_TASK_CAPACITY", "TaskEntry", "TaskLedger"]

DEFAULT_TASK_CAPACITY = 10_000
_TENANT_SHARE = 0.1


@dataclass(slots=True)
class TaskEntry:
    created_at: datetime
    ttl_ms: int | None  # None: only its cancellation was seen (the book's default applies)
    cancelled_at: datetime | None = None


class TaskLedger:
    """``(tenant, workspace, task id) -> TaskEntry`` of the tasks seen lately."""

    def __init__(self, capacity: int = DEFAULT_TASK_CAPACITY) -> None:
        self._capacity = capacity
        self._per_tenant = max(1, int(capacity * _TENANT_SHARE))
        # tenant -> (workspace, task id) -> entry, oldest noted first; tenants likewise.
        self._tenants: OrderedDict[str, OrderedDict[tuple[str, str], TaskEntry]] = OrderedDict()
        self._size = 0

    def created(
        self, tenant_id: str, space_id: str, task_id: str, at: datetime, ttl_ms: int
    ) -> None:
        if self.get(tenant_id, space_id, task_id) is None:
            self._put(tenant_id, (space_id, task_id), TaskEntry(at, ttl_ms))

    def cancelled(self, tenant_id: str, space_id: str, task_id: str, at: datetime) -> None:
        """Note a cancellation; the first one noted stands (a task stays cancelled)."""
        entry = self.get(tenant_id, space_id, task_id)
        if entry is None:
            # Its creation was forgotten (or it was a plain call): cancelled all the same.
            self._put(tenant_id, (space_id, task_id), TaskEntry(at, None, at))
        elif entry.cancelled_at is None:
            entry.cancelled_at = at

    def get(self, tenant_id: str, space_id: str, task_id: str) -> TaskEntry | None:
        # No reordering: replicas serve different reads, and reads must not make them
        # forget different tasks.
        tasks = self._tenants.get(tenant_id)
        return None if tasks is None else tasks.get((space_id, task_id))

    def task_ids(self, tenant_id: str, space_id: str) -> list[str]:
        """The workspace's task ids, newest first (ties by id, so every read agrees)."""
        tasks = self._tenants.get(tenant_id) or {}
        found = [(entry.created_at, task_id) for (space, task_id), entry in tasks.items() if space == space_id]
        found.sort(reverse=True)
        return [task_id for _, task_id in found]

    def _put(self, tenant_id: str, key: tuple[str, str], entry: TaskEntry) -> None:
        tasks = self._tenants.get(tenant_id)
        if tasks is None:
            tasks = self._tenants[tenant_id] = OrderedDict()
        else:
            self._tenants.move_to_end(tenant_id)
        tasks[key] = entry
        self._size += 1
        if len(tasks) > self._per_tenant:
            tasks.popitem(last=False)
            self._size -= 1
        while self._size > self._capacity:
            oldest, its_tasks = next(iter(self._tenants.items()))
            its_tasks.popitem(last=False)
            self._size -= 1
            if not its_tasks:
                del self._tenants[oldest]

    def __len__(self) -> int:
        return self._size
