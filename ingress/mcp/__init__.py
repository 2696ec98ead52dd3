"""MCP server over Streamable HTTP: tools are a workspace's actions, calls are Kafka commands.

Mount with :func:`setup`; ``ingress.app`` does so when this package is importable.

    POST/GET/DELETE /mcp              workspace from the ``X-Switchyard-Space`` header
    POST/GET/DELETE /mcp/{space_id}   workspace from the URL

Protocol revisions: 2025-03-26, 2025-06-18 and 2025-11-25 (initialize handshake, signed stateless
session ids, tasks on 2025-11-25) and 2026-07-28 (stateless, per-request ``_meta``,
``server/discover``). Authentication is the API key (``Authorization: Bearer``).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from mcp_types import Implementation

from ingress.contracts import Services

from ._dispatch import HANDSHAKE_VERSIONS, MODERN_VERSIONS, Dispatcher
from ._http import McpEndpoint
from ._options import McpOptions
from ._session import SessionSigner, derive_session_key
from ._tasks import TaskBook
from ._tools import ToolRunner

__all__ = ["HANDSHAKE_VERSIONS", "MODERN_VERSIONS", "McpOptions", "setup"]

logger = logging.getLogger(__name__)


def _app_settings(app: web.Application) -> Any:
    """The process settings ``ingress.app`` keeps in the app state, if it does."""
    try:
        from ingress._state import STATE
    except ImportError:
        return None
    state = app.get(STATE)
    return getattr(state, "settings", None)


def setup(
    app: web.Application,
    services: Services,
    *,
    options: McpOptions | None = None,
    settings: Any = None,
) -> McpEndpoint:
    """Add the MCP routes to ``app``.

    Args:
        app: the ingress application.
        services: authenticator, catalog and pipeline shared with the REST API.
        options: endpoint tunables; built from ``settings`` when omitted.
        settings: ``core.settings.Settings``, whose admin token (or
            ``mcp_session_secret``) keys the session ids so every replica accepts them;
            read from ``ingress.app``'s state when omitted.

    Returns:
        The endpoint (tests reach its handlers through the app, not this object).
    """
    if settings is None:
        settings = _app_settings(app)
    if options is None:
        options = McpOptions.from_settings(settings) if settings is not None else McpOptions()
    key, shared = derive_session_key(options.session_secret)
    if not shared:
        logger.warning(
            "MCP session ids are signed with a random per-process key: set "
            "SWITCHYARD_MCP_SESSION_SECRET (or an admin token) so that every ingress replica "
            "accepts every session"
        )
    tools = ToolRunner(services, page_size=options.page_size, call_timeout=options.call_timeout)
    tasks = TaskBook(
        services,
        ttl_ms=options.task_ttl_ms,
        poll_interval_ms=options.task_poll_interval_ms,
        result_timeout=options.task_result_timeout,
    )
    dispatcher = Dispatcher(
        tools,
        tasks,
        server_info=Implementation(name=options.server_name, version=options.server_version),
        page_size=options.page_size,
    )
    endpoint = McpEndpoint(
        services,
        dispatcher,
        SessionSigner(key, max_age=options.session_max_age),
        max_body_bytes=options.max_body_bytes,
    )
    # A server shutting down cuts the calls still waiting: that is no client's cancellation.
    app.on_shutdown.append(endpoint.shutting_down)
    for path in ("/mcp", "/mcp/{space_id}"):
        app.router.add_post(path, endpoint.post)
        # add_get would also add HEAD; the spec only speaks of GET.
        app.router.add_route("GET", path, endpoint.get)
        app.router.add_delete(path, endpoint.delete)
        app.router.add_route("OPTIONS", path, endpoint.options)
    return endpoint
