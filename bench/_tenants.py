"""The benchmarks' tenants: ``daily_summary`` posts to Slack, under limits that never bind."""

from __future__ import annotations

import uuid

from schemas import Limits
from switchyard.demo import DemoTenant

__all__ = ["FAST", "slack_tenant"]

# The bench measures capacity, not the workspace limits.
FAST = Limits(rate_per_second=100_000, burst=1_000_000, concurrency=256)


def slack_tenant(name: str, token: str | None = None) -> DemoTenant:
    """A tenant whose Slack bot token is ``token`` (default: a fresh one)."""
    token = token or f"xoxb-{name}-{uuid.uuid4().hex}"
    return DemoTenant(
        name, "main", "slack", "chat.postMessage",
        {"channel": "#bench", "text": "{{ args.summary }}"}, {"bot_token": token}, token, limits=FAST,
    )  # fmt: skip
