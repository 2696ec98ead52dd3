"""Commands any ingress replica accepted recently, read from the commands topic.

A client polls ``GET /v1/commands/{id}`` through a load balancer: the replica that
answers may not be the one that accepted the command. Without this it knew nothing of
the command until its Result arrived, and answered 404 for a command that was running.
Every replica follows the commands topic from ``lookback`` seconds back and remembers,
per command id, the tenant and workspace from the record's headers (the value is never
parsed), in a bounded LRU.
"""

from __future__ import annotations

from typing import Any

from core.settings import Settings
from schemas import Headers

from ._bounded import LRU
from ._follow import Following, TopicFollower

__all__ = ["AcceptedFeed"]


class AcceptedFeed(Following):
    """``command id -> (tenant_id, space_id)`` of the commands accepted lately."""

    def __init__(self, settings: Settings, *, capacity: int = 100_000, lookback: float = 900.0) -> None:
        self._owners: LRU[str, tuple[str, str]] = LRU(capacity)
        self.follower = TopicFollower(
            settings, settings.topics.commands, self.apply, start_at=lookback, name="commands"
        )

    def apply(self, record: Any) -> None:
        found: dict[str, str] = {}
        for key, value in record.headers or ():
            if key in (Headers.TENANT, Headers.SPACE, Headers.COMMAND_ID) and value is not None:
                found[key] = value.decode("utf-8", "replace")
        if len(found) == 3:
            self._owners.put(found[Headers.COMMAND_ID], (found[Headers.TENANT], found[Headers.SPACE]))

    def owner(self, command_id: str) -> tuple[str, str] | None:
        return self._owners.get(command_id)
