"""Entries kept per scope (a tenant's repository, a tenant's Jira project), oldest first.

Bounded both ways: entries per scope, and scopes overall (the least recently written-to
scope is forgotten first), so the emulator's memory does not grow with traffic.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from typing import Any

__all__ = ["ScopedLog"]


class ScopedLog:
    def __init__(self, *, per_scope: int, max_scopes: int) -> None:
        self._per_scope = per_scope
        self._max_scopes = max_scopes
        self._entries: OrderedDict[Hashable, deque[dict[str, Any]]] = OrderedDict()

    def add(self, scope: Hashable, entry: dict[str, Any]) -> None:
        entries = self._entries.get(scope)
        if entries is None:
            entries = self._entries[scope] = deque(maxlen=self._per_scope)
            if len(self._entries) > self._max_scopes:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(scope)
        entries.append(entry)

    def entries(self, scope: Hashable) -> Sequence[dict[str, Any]]:
        """The scope's entries, oldest first (empty for an unknown scope)."""
        return self._entries.get(scope, ())

    def clear(self) -> None:
        self._entries.clear()
