"""A small metrics and health server: ``/metrics``, ``/healthz``, ``/readyz``.

The router and worker processes serve it on ``Settings.metrics_port`` (the Helm chart
probes port 9464 there); so does the ingress when that port is set (else it adds
``/metrics`` to its own app with :func:`add_metrics_route`). Readiness is a list of named async checks, each bounded in
time: a check that raises or takes too long counts as not ready, so a hung dependency
cannot hang the probe.

Typical use in a process's ``run``::

    metrics = Metrics("worker-slack")
    checks = {"kafka": lambda: kafka_reachable(pool.admin), "vault": vault_reachable(settings)}
    async with serve_health(settings, metrics, checks):
        await pool.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from .metrics import CONTENT_TYPE_LATEST, Metrics
from .settings import Settings

__all__ = [
    "METRICS",
    "ReadinessCheck",
    "add_metrics_route",
    "answers_ok",
    "health_app",
    "kafka_reachable",
    "serve_health",
    "vault_reachable",
]

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
METRICS = web.AppKey("switchyard_metrics", Metrics)
_CHECKS = web.AppKey("switchyard_readiness_checks", dict)
_CHECK_TIMEOUT = 2.0


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    # CONTENT_TYPE_LATEST carries its own charset parameter; aiohttp wants it in headers.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _run_check(name: str, check: ReadinessCheck) -> bool:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            return bool(await check())
    except TimeoutError:
        logger.warning("readiness check %s timed out", name)
    except Exception:
        logger.exception("readiness check %s failed", name)
    return False


async def _readyz(request: web.Request) -> web.Response:
    checks: dict[str, ReadinessCheck] = request.app[_CHECKS]
    names = list(checks)
    verdicts = await asyncio.gather(*(_run_check(name, checks[name]) for name in names))
    results = dict(zip(names, verdicts, strict=True))
    ready = all(verdicts)
    return _json(
        {"status": "ready" if ready else "not_ready", "checks": results}, status=200 if ready else 503
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def add_metrics_route(
    app: web.Application,
    metrics: Metrics,
    path: str = "/metrics",
    *,
    check: Callable[[web.Request], object] | None = None,
) -> None:
    """Serve ``metrics`` on ``path`` of an existing app (the ingress's); ``check(request)``
    runs first and refuses by raising (an HTTP error)."""
    app[METRICS] = metrics
    if check is None:
        app.router.add_get(path, _metrics)
        return

    async def checked(request: web.Request) -> web.Response:
        check(request)
        return await _metrics(request)

    app.router.add_get(path, checked)


def health_app(metrics: Metrics, checks: Mapping[str, ReadinessCheck] | None = None) -> web.Application:
    """An app with ``/metrics``, ``/healthz`` (process alive) and ``/readyz`` (all checks pass)."""
    app = web.Application()
    add_metrics_route(app, metrics)
    app[_CHECKS] = dict(checks or {})
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


@contextlib.asynccontextmanager
async def serve_health(
    settings: Settings,
    metrics: Metrics,
    checks: Mapping[str, ReadinessCheck] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
) -> AsyncIterator[int | None]:
    """Serve :func:`health_app` on ``port`` (default ``settings.metrics_port``) while inside.

    Yields the bound port (useful with port 0), or None when no port is configured, in
    which case nothing is served.

    Raises:
        OSError: the port cannot be bound.
    """
    port = settings.metrics_port if port is None else port
    host = settings.metrics_host if host is None else host
    if port is None:
        yield None
        return
    runner = web.AppRunner(health_app(metrics, checks), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        addresses = runner.addresses
        bound = addresses[0][1] if addresses else port
        logger.info("metrics and health on %s:%s", host, bound)
        yield int(bound)
    finally:
        await runner.cleanup()


async def kafka_reachable(admin: Any) -> bool:
    """Readiness check: a started aiokafka admin client can fetch cluster metadata."""
    await admin.describe_cluster()
    return True


def vault_reachable(settings: Settings, *, timeout: float = 2.0) -> ReadinessCheck:  # noqa: ASYNC109
    """A readiness check that Vault answers ``/v1/sys/health`` as usable: active or a
    standby counts as up; sealed (503) or not initialised (501) does not.

    No token is sent: the health endpoint is unauthenticated, so the probe holds no secret.
    """
    url = settings.vault_addr.rstrip("/") + "/v1/sys/health?standbyok=true&perfstandbyok=true"
    # Vault's certificate checked against the CA the Vault clients use (core.vault.tls_verify).
    tls = ssl.create_default_context(cafile=settings.vault_ca_file) if settings.vault_ca_file else True

    async def check() -> bool:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.get(url, ssl=tls) as response,
        ):
            # 200 active, 429 standby, 472/473 DR/perf standby: reachable. 501/503: not ready.
            return response.status in (200, 429, 472, 473)

    return check


async def answers_ok(session: aiohttp.ClientSession, url: str, *, within: float = 2.0) -> bool:
    """Whether ``url`` answers 200 within ``within`` seconds (for a caller polling readiness)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=within)) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False
