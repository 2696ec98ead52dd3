"""Emulator state: tokens per tenant, faults to inject, the call log, side-effect counts.

Everything lives in one process's memory and is touched only from the event loop, so
no locks. Collections that grow with traffic are bounded (the emulator serves
benchmarks of millions of calls).
"""

from __future__ import annotations

import itertools
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._github_issues import IssueLog
from ._gmail_mailbox import Mailbox
from ._jira_issues import JiraIssues
from ._notion_pages import NotionPages
from ._slack_history import SlackHistory

__all__ = ["FAULT_KINDS", "EmulatorState", "Fault", "Grant"]

FAULT_KINDS = frozenset(
    {"400", "403", "404", "409", "429", "500", "503", "latency", "expire_token", "lost_reply"}
)
MAX_CALLS = 100_000
MAX_EFFECT_KEYS = 1_000_000
MAX_REPLAYS = 200_000
ACCESS_TOKEN_LIFETIME = 3599


@dataclass(slots=True)
class Fault:
    """Applies to the next ``remaining`` calls matching ``connector`` and ``tenant``."""

    kind: str
    remaining: int = 1
    connector: str | None = None
    tenant: str | None = None
    retry_after: float | None = None
    latency_ms: int = 0

    def matches(self, connector: str, tenant: str | None) -> bool:
        return (self.connector is None or self.connector == connector) and (
            self.tenant is None or self.tenant == tenant
        )

    def public(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "remaining": self.remaining,
            "connector": self.connector,
            "tenant": self.tenant,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
        }


@dataclass(slots=True, frozen=True)
class Grant:
    """What a refresh token stands for at the emulator's OAuth token endpoint."""

    connector: str
    tenant: str
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)


def _text(entry: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = entry.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise ValueError(f"token entry needs a non-empty string {name!r}")
    return value


class EmulatorState:
    """The emulator's memory. ``tokens`` entries: ``{connector, token, tenant}`` plus,
    for OAuth connectors, ``refresh_token``, ``client_id``, ``client_secret``."""

    def __init__(
        self, tokens: Iterable[Mapping[str, Any]] = (), *, dedup: Iterable[str] = ("http",)
    ) -> None:
        self.tokens: dict[str, dict[str, str]] = {}
        self.grants: dict[str, Grant] = {}
        # Connectors whose endpoint honours Idempotency-Key (replays the first reply).
        self.dedup = frozenset(dedup)
        self.faults: list[Fault] = []
        self.calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALLS)
        self.effects: dict[str, dict[str, int]] = {}
        self.effect_keys = 0
        self.replies: OrderedDict[tuple[str, str], tuple[int, bytes, str]] = OrderedDict()
        self.sequence = itertools.count(1)
        self.counters: dict[tuple[str, ...], int] = {}
        self.slack_history = SlackHistory()
        self.github_issues = IssueLog()
        self.jira_issues = JiraIssues()
        self.notion_pages = NotionPages()
        self.gmail_sent = Mailbox()
        for entry in tokens:
            self.add_token(entry)

    # Tokens -----------------------------------------------------------------------------

    def add_token(self, entry: Mapping[str, Any]) -> None:
        """Register a token (and optionally its refresh grant) for a tenant.

        Raises:
            ValueError: when a field is missing or not a string.
        """
        connector = _text(entry, "connector")
        token = _text(entry, "token")
        tenant = _text(entry, "tenant")
        assert connector and token and tenant
        self.tokens.setdefault(connector, {})[token] = tenant
        refresh = _text(entry, "refresh_token", required=False)
        if refresh:
            self.grants[refresh] = Grant(
                connector,
                tenant,
                _text(entry, "client_id", required=False),
                _text(entry, "client_secret", required=False),
            )

    def tenant_for(self, connector: str, token: str | None) -> str | None:
        if not token:
            return None
        return self.tokens.get(connector, {}).get(token)

    def revoke(self, connector: str, token: str | None) -> None:
        if token:
            self.tokens.get(connector, {}).pop(token, None)

    def issue_access_token(self, grant: Grant) -> str:
        token = f"ya29.emu-{secrets.token_urlsafe(24)}"
        self.tokens.setdefault(grant.connector, {})[token] = grant.tenant
        return token

    # Faults -----------------------------------------------------------------------------

    def add_fault(self, spec: Mapping[str, Any]) -> Fault:
        """Queue a fault from its JSON description.

        Raises:
            ValueError: for an unknown kind or a bad count/latency.
        """
        kind = str(spec.get("kind", ""))
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
        count = spec.get("count", 1)
        latency = spec.get("latency_ms", 0)
        retry_after = spec.get("retry_after")
        if not isinstance(count, int) or not 1 <= count <= 10_000_000:
            raise ValueError("count must be an integer from 1")
        if not isinstance(latency, int | float) or not 0 <= latency <= 600_000:
            raise ValueError("latency_ms must be between 0 and 600000")
        if retry_after is not None and (
            not isinstance(retry_after, int | float) or not 0 <= retry_after <= 86_400
        ):
            raise ValueError("retry_after must be seconds between 0 and 86400")
        fault = Fault(
            kind=kind,
            remaining=count,
            connector=spec.get("connector") or None,
            tenant=spec.get("tenant") or None,
            retry_after=retry_after,
            latency_ms=int(latency),
        )
        self.faults.append(fault)
        return fault

    def take_fault(self, connector: str, tenant: str | None) -> Fault | None:
        """The first queued fault matching this call, consuming one of its uses."""
        for index, fault in enumerate(self.faults):
            if fault.matches(connector, tenant):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self.faults[index]
                return fault
        return None

    # Calls and effects ------------------------------------------------------------------

    def record(self, call: dict[str, Any]) -> None:
        call["seq"] = next(self.sequence)
        self.calls.append(call)

    def count_effect(self, connector: str, key: str | None) -> None:
        per = self.effects.setdefault(connector, {})
        name = key or ""
        if name not in per:
            if self.effect_keys >= MAX_EFFECT_KEYS:
                name = "<untracked>"
            else:
                self.effect_keys += 1
        per[name] = per.get(name, 0) + 1

    def replay(self, connector: str, key: str) -> tuple[int, bytes, str] | None:
        return self.replies.get((connector, key))

    def remember(self, connector: str, key: str, status: int, body: bytes, ctype: str) -> None:
        self.replies[(connector, key)] = (status, body, ctype)
        if len(self.replies) > MAX_REPLAYS:
            self.replies.popitem(last=False)

    def next_number(self, *scope: str) -> int:
        value = self.counters.get(scope, 0) + 1
        self.counters[scope] = value
        return value

    def reset(self, *, tokens: bool = False) -> None:
        """Forget calls, effects, replays, faults and counters (and tokens if asked)."""
        self.faults.clear()
        self.calls.clear()
        self.effects.clear()
        self.effect_keys = 0
        self.replies.clear()
        self.counters.clear()
        self.slack_history.clear()
        self.github_issues.clear()
        self.jira_issues.clear()
        self.notion_pages.clear()
        self.gmail_sent.clear()
        if tokens:
            self.tokens.clear()
            self.grants.clear()
