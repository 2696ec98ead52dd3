"""Commands any ingress replica accepted recently, read from the commands topic.

A client polls ``GET /v1/commands/{id}`` through a load balancer: the replica that
answers may not be the one that accepted the command. Without this it knew nothing of
the command until its Result arrived, and answered 404 for a command that was running.
Every replica follows the commands topic from ``lookback`` seconds back and remembers,
per command id, the tenant and workspace from the record's headers (the value is never
parsed), in a bounded LRU. MCP tasks and their cancellations, which travel on the same
topic, go to a :class:`TaskLedger` (``ingress.task_ledger``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core.follow import Following, TopicFollower
from core.settings import Settings
from schemas import DUPLICATE_KIND, TASK_CANCEL_KIND, Headers

from ._bounded import LRU
from .task_ledger import DEFAULT_TASK_CAPACITY, TaskLedger

__all__ = ["AcceptedFeed"]

_READ = (Headers.TENANT, Headers.SPACE, Headers.COMMAND_ID, Headers.KIND, Headers.TASK_TTL, Headers.ROUTED_AT)


def _record_time(record: Any) -> datetime:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


class AcceptedFeed(Following):
    """``command id -> (tenant_id, space_id)`` of the commands accepted lately."""

    def __init__(
        self,
        settings: Settings,
        *,
        capacity: int = 100_000,
        lookback: float = 900.0,
        task_capacity: int = DEFAULT_TASK_CAPACITY,
    ) -> None:
        # Past a tenth, a tenant makes room from its own: another's flood cannot make a running
        # command of yours read as unknown here.
        self._owners: LRU[str, tuple[str, str]] = LRU(capacity, owner=lambda owner: owner[0])
        self.tasks = TaskLedger(task_capacity)
        # Told of each replay the router dropped: (tenant, command id, first routed at, ms).
        self.on_duplicate: Callable[[str, str, int], None] | None = None
        self.follower = TopicFollower(
            settings, settings.topics.commands, self.apply, start_at=lookback, name="commands"
        )

    def apply(self, record: Any) -> None:
        found: dict[str, str] = {}
        for key, value in record.headers or ():
            if key in _READ and value is not None:
                found[key] = value.decode("utf-8", "replace")
        try:
            tenant, space, command_id = (
                found[Headers.TENANT],
                found[Headers.SPACE],
                found[Headers.COMMAND_ID],
            )
        except KeyError:
            return
        if found.get(Headers.KIND) == TASK_CANCEL_KIND:
            self.tasks.cancelled(tenant, space, command_id, _record_time(record))
            return
        if found.get(Headers.KIND) == DUPLICATE_KIND:
            routed_at = found.get(Headers.ROUTED_AT, "")
            if self.on_duplicate is not None and routed_at.isdigit():
                self.on_duplicate(tenant, command_id, int(routed_at))
            return
        self._owners.put(command_id, (tenant, space))
        ttl = found.get(Headers.TASK_TTL)
        if ttl is not None and ttl.isdigit():
            self.tasks.created(tenant, space, command_id, _record_time(record), int(ttl))

    def owner(self, command_id: str) -> tuple[str, str] | None:
        return self._owners.get(command_id)

    def forget(self, command_id: str) -> None:
        """A finished command whose Result even the forgotten list let go of."""
        self._owners.pop(command_id)
