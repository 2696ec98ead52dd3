"""Entries kept per scope (a tenant's repository, Jira project or mailbox), oldest first,
and the opaque page tokens the emulated APIs page them with.

Bounded both ways: entries per scope, and scopes overall (the least recently written-to
scope is forgotten first), so the emulator's memory does not grow with traffic.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from typing import Any

__all__ = ["ScopedLog", "page_start", "page_token"]


def page_token(start: int) -> str:
    """An opaque page token for the page that starts at position ``start``."""
    return base64.urlsafe_b64encode(f"at:{start}".encode()).decode()


def page_start(token: str | None) -> int:
    """Where the page named by ``token`` starts (0 for none).

    Raises:
        ValueError: a token :func:`page_token` did not make.
    """
    if not token:
        return 0
    try:
        label, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("bad page token") from exc
    if label != "at" or not number.isdigit():
        raise ValueError("bad page token")
    return int(number)


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
