"""The demo tenants: the product's "daily summary" routed to a different app per tenant.

A (acme) → Slack message, B (beta) → Gmail email, C (gamma) → Notion page,
D (delta) → Jira issue. Each tenant gets its own workspace, API key, credentials in
Vault and tokens at the API emulators. Credentials are random per run.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from schemas import ActionConfig, ConnectorOptions, Limits, WorkspaceConfig

__all__ = ["DemoTenant", "demo_tenants", "DAILY_SUMMARY_SCHEMA"]

DAILY_SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "minLength": 1, "maxLength": 4000, "description": "The summary text"},
        "date": {"type": "string", "maxLength": 32, "description": "Day the summary covers"},
    },
    "required": ["summary"],
    "additionalProperties": False,
}
_DESCRIPTION = "Send the team's daily summary to where this workspace wants it."


@dataclass(frozen=True)
class DemoTenant:
    tenant_id: str
    space_id: str
    connector: str
    operation: str
    mapping: dict[str, Any]
    credentials: dict[str, Any] = field(repr=False)
    # The token the emulator must accept for this tenant (never printed).
    emulator_token: str = field(repr=False, default="")
    limits: Limits = field(default_factory=lambda: Limits(rate_per_second=200, burst=1_000, concurrency=16))

    def workspace(self) -> WorkspaceConfig:
        return WorkspaceConfig(
            tenant_id=self.tenant_id,
            space_id=self.space_id,
            display_name=f"{self.tenant_id} demo workspace",
            actions=[
                ActionConfig(
                    name="daily_summary",
                    description=_DESCRIPTION,
                    input_schema=DAILY_SUMMARY_SCHEMA,
                    connector=self.connector,
                    operation=self.operation,
                    arguments=self.mapping,
                )
            ],
            connectors={self.connector: ConnectorOptions()},
            limits=self.limits,
        )


def demo_tenants(emulator_url: str) -> list[DemoTenant]:
    """Four tenants, four apps, fresh random credentials."""

    def token(prefix: str) -> str:
        return f"{prefix}{secrets.token_urlsafe(18)}"

    slack, gmail, notion, jira = token("xoxb-"), token("ya29."), token("secret_"), token("jira-")
    return [
        DemoTenant(
            "acme", "main", "slack", "chat.postMessage",
            {"channel": "#daily", "text": "Daily summary {{ args.date | default('today') }}: {{ args.summary }}"},
            {"bot_token": slack}, slack,
        ),
        DemoTenant(
            "beta", "main", "gmail", "users.messages.send",
            {"to": "team@beta.example", "subject": "Daily summary {{ args.date | default('today') }}",
             "body": "{{ args.summary }}"},
            {
                "access_token": gmail,
                "refresh_token": token("1//"),
                "client_id": "demo-client",
                "client_secret": token("cs-"),
                "token_url": f"{emulator_url}/oauth/token",
                "expires_at": int(time.time()) + 3600,
            },
            gmail,
        ),
        DemoTenant(
            "gamma", "main", "notion", "pages.create",
            {"database_id": "5c6a28216bb14a7eb6e1c50111515c3d", "key_property": "Switchyard key",
             "title": "Daily summary {{ args.date | default('today') }}", "content": "{{ args.summary }}"},
            {"token": notion}, notion,
        ),
        DemoTenant(
            "delta", "main", "jira", "issues.create",
            {"project_key": "OPS", "summary": "Daily summary {{ args.date | default('today') }}",
             "description": "{{ args.summary }}", "issue_type": "Task"},
            {"email": "bot@delta.example", "api_token": jira}, jira,
        ),
    ]
