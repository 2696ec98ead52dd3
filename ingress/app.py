"""The ingress aiohttp application: REST API, admin API, health, and the MCP endpoint.

``create_app(settings)`` wires the parts; Kafka clients start with the app (aiohttp
``cleanup_ctx``) and stop with it. When the package ``ingress.mcp`` exists, its
``setup(app, services)`` adds the MCP endpoint to the same app.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from core.health import add_metrics_route, serve_health
from core.metrics import Metrics
from core.settings import Settings

from . import dashboard, observe
from ._admin_http import add_admin_routes
from ._http import LIMITS, REQUEST_METRICS, Limits, error_middleware, json_response
from ._state import STATE, IngressState
from .accepted import AcceptedFeed
from .admin import ensure_ingress_topics
from .auth import reads_everything
from .contracts import Identity, Services
from .directory import Directory
from .errors import Unauthorized
from .openapi import openapi_document
from .pipeline import KafkaPipeline
from .rest import SERVICES, add_routes
from .results import ResultsFeed

__all__ = ["STATE", "SERVICES", "IngressOptions", "create_app"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngressOptions:
    """Edge tuning of one ingress process (command-line flags of ``switchyard ingress``)."""

    max_body_bytes: int = 2 * 1024 * 1024
    request_timeout: float = 40.0
    # How long a submit waits for the broker's acknowledgement before answering 503, and
    # how long while no publish has been acknowledged since one failed (the broker away).
    publish_timeout: float = 30.0
    failing_publish_timeout: float = 2.0
    # Edge rate limit per tenant (token bucket); the router enforces workspace limits.
    rate_per_second: float = 500.0
    burst: int = 1_000
    results_capacity: int = 100_000
    # Bytes of those Results at most, and of the commands this replica remembers: a
    # Result's output may be 1 MiB and a command's arguments 256 KiB.
    results_max_bytes: int = 256 * 1024 * 1024
    submitted_max_bytes: int = 128 * 1024 * 1024
    results_lookback: float = 900.0
    create_topics: bool = True


def public_origin(public_url: str | None) -> tuple[str, ...]:
    """The browser Origin of the ingress's public URL (scheme://host[:port]), if set."""
    if not public_url:
        return ()
    url = URL(public_url)
    if url.scheme not in ("http", "https") or not url.host:
        return ()
    return (str(url.origin()),)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def _ready_checks(state: IngressState) -> dict[str, Callable[[], bool]]:
    """What ``/readyz`` checks, on the API port and on the metrics port alike."""
    return {
        "producer": lambda: state.pipeline.started,
        "directory": lambda: state.directory.ready.is_set() and state.directory.follower.running,
        "results": lambda: state.results.follower.running,
        "accepted": lambda: state.accepted is not None and state.accepted.follower.running,
    }


async def readyz(request: web.Request) -> web.Response:
    checks = {name: ok() for name, ok in _ready_checks(request.app[STATE]).items()}
    ready = all(checks.values())
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503
    )


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app[STATE].settings.public_url))


def _kafka_context(state: IngressState, options: IngressOptions):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        if options.create_topics:
            await ensure_ingress_topics(state.settings)
        async with contextlib.AsyncExitStack() as stack:
            for part in (state.pipeline, state.results, state.accepted, state.directory):
                assert part is not None
                await part.start()
                stack.push_async_callback(part.stop)
            logger.info("ingress started", extra={"fields": {"prefix": state.settings.topic_prefix}})
            yield
        if state.vault is not None:
            state.vault.close()

    return context


def _awaitable(ok: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return ok()

    return check


def _metrics_context(settings: Settings, metrics: Metrics, state: IngressState):  # type: ignore[no-untyped-def]
    # The metrics port's /readyz says what the API port's does (a probe pointed there,
    # as for the router and workers, was always answered ready).
    checks = {name: _awaitable(ok) for name, ok in _ready_checks(state).items()}

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with serve_health(settings, metrics, checks):
            yield

    return context


def _setup_mcp(app: web.Application, services: Services) -> None:
    try:
        mcp = importlib.import_module("ingress.mcp")
    except ModuleNotFoundError as exc:
        if exc.name != "ingress.mcp":
            raise  # the MCP package exists but a dependency is missing: fail loudly
        logger.info("ingress.mcp is not installed: no MCP endpoint")
        return
    mcp.setup(app, services)


def _renewing_vault_token(settings: Settings):  # type: ignore[no-untyped-def]
    """Keep the admin API's Vault token alive while the app runs (a periodic token expires
    unless renewed; a root token needs nothing and the task ends at once)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        from core.vault import VaultAdmin

        assert settings.vault_token is not None
        admin = VaultAdmin(
            settings.vault_addr, settings.vault_token.get_secret_value(),
            mount=settings.vault_kv_mount, ca_file=settings.vault_ca_file,
        )  # fmt: skip
        task = asyncio.create_task(admin.keep_renewed(), name="vault-token-renewal")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            admin.close()

    return context


def _reads_everything(settings: Settings) -> Callable[[web.Request], None]:
    def check(request: web.Request) -> None:
        if not reads_everything(settings, request.headers):
            raise Unauthorized("the admin or observer token is required")

    return check


async def _private_answers(request: web.Request, response: web.StreamResponse) -> None:
    """API and MCP answers carry one tenant's data (or a key shown once): no cache, shared
    or the browser's, keeps them; and none is read as anything but its declared type."""
    if request.path.startswith(("/v1/", "/mcp")):
        response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


async def create_app(settings: Settings, options: IngressOptions | None = None) -> web.Application:
    """Build the ingress app for ``settings`` (its Kafka clients start with the app).

    Raises:
        core.errors.KafkaUnavailable: at app startup, when Kafka cannot be reached.
    """
    options = options or IngressOptions()
    app = web.Application(
        client_max_size=options.max_body_bytes, middlewares=[error_middleware]
    )
    app.on_response_prepare.append(_private_answers)
    if settings.vault_token is not None:
        app.cleanup_ctx.append(_renewing_vault_token(settings))
    results = ResultsFeed(
        settings,
        capacity=options.results_capacity,
        max_bytes=options.results_max_bytes,
        lookback=options.results_lookback,
    )
    pipeline = KafkaPipeline(
        settings,
        results,
        rate_per_second=options.rate_per_second,
        burst=options.burst,
        send_timeout=options.publish_timeout,
        failing_send_timeout=options.failing_publish_timeout,
        remember_bytes=options.submitted_max_bytes,
    )
    directory = Directory(settings)
    accepted = AcceptedFeed(settings, capacity=options.results_capacity, lookback=options.results_lookback)
    results.on_gone.append(accepted.forget)
    accepted.on_duplicate = results.earlier.wanted
    # Of the replicas told of a dropped replay, the one that re-sent it (or where someone
    # waits for it) looks up its Result.
    results.earlier.relevant = lambda command_id: pipeline.remembers(command_id) or results.waited_for(command_id)
    state = IngressState(
        settings=settings, directory=directory, results=results, pipeline=pipeline, accepted=accepted
    )
    services = Services(
        auth=directory,
        catalog=directory,
        pipeline=pipeline,
        allowed_origins=tuple(settings.ingress_allowed_origins) + public_origin(settings.public_url),
        tasks=accepted.tasks,
    )

    def check_new_command(identity: Identity, command_id: str, action: str, arguments: dict[str, Any]) -> None:
        # A command another replica accepted is a replay here: the router answers it
        # (routed once), whatever became of its action since.
        if accepted.owner(command_id) != (identity.tenant_id, identity.space_id):
            services.actions.check(identity, action, arguments)

    pipeline.check_action = check_new_command
    app[STATE] = state
    app[SERVICES] = services
    app[LIMITS] = Limits(max_body_bytes=options.max_body_bytes, request_timeout=options.request_timeout)
    app.cleanup_ctx.append(_kafka_context(state, options))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    add_routes(app)
    add_admin_routes(app)
    _setup_mcp(app, services)
    metrics = Metrics("ingress")
    pipeline.metrics = metrics
    app[REQUEST_METRICS] = metrics
    if settings.metrics_port is None:
        # No port of its own: beside the API, for the admin or observer token only (the
        # labels name every tenant).
        add_metrics_route(app, metrics, check=_reads_everything(settings))
    else:
        # Where Prometheus scrapes every process (the Helm chart's port 9464); not on the
        # public edge, where anyone could read the tenant ids of the labels.
        app.cleanup_ctx.append(_metrics_context(settings, metrics, state))
    # The aggregator reads Results through the feed's consumer (one read, one parse).
    aggregator = observe.ResultsAggregator()
    results.listeners.append(aggregator.add_record)
    observe.setup(app, services, settings, aggregator=aggregator)
    dashboard.setup(app)
    return app
