"""Tunables of the MCP endpoint, and where its session key comes from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["McpOptions"]


@dataclass(frozen=True, slots=True)
class McpOptions:
    """MCP endpoint settings. Defaults suit tests and small deployments.

    ``session_secret`` is the deployment secret session ids are signed with; every
    replica behind one load balancer must share it. None means a random key per
    process: fine for one replica, but a client moved to another replica then gets
    404 and has to initialize again.
    """

    session_secret: str | bytes | None = None
    # How long a tools/call waits for its Result before answering "still running".
    call_timeout: float = 30.0
    # How long tasks/result blocks (it must block until the task ends; bounded here
    # below the ingress request timeout of 40 s).
    task_result_timeout: float = 25.0
    page_size: int = 100
    max_body_bytes: int = 1024 * 1024
    # Long: clients such as Cursor stay connected for days, and the Python SDK does not
    # initialize again on the 404 an expired session gets. The API key is checked on
    # every request regardless.
    session_max_age: float = 30 * 24 * 3600
    # Retention advertised for tasks (ms); the results topic's retention bounds it too.
    task_ttl_ms: int = 3_600_000
    task_poll_interval_ms: int = 1_000
    server_name: str = "switchyard"
    server_version: str = "0.1.0"

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> McpOptions:
        """Options for a process: the session key from settings.

        Uses ``settings.mcp_session_secret`` when the settings define it, else the admin
        token (a per-deployment secret every replica already shares); the key is
        derived from it, never the token itself.
        """
        secret = getattr(settings, "mcp_session_secret", None) or getattr(
            settings, "admin_token", None
        )
        if secret is not None and hasattr(secret, "get_secret_value"):
            secret = secret.get_secret_value()
        values: dict[str, Any] = {"session_secret": secret or None}
        values.update(overrides)
        return cls(**values)
