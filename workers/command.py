"""``switchyard worker --connector NAME``: one connector's worker pool process.

Run any number of these per connector; they share the consumer group
``<prefix>workers.<connector>`` and split its partitions. SIGTERM (or Ctrl-C) stops
fetching, lets in-flight commands finish for ``--shutdown-grace`` seconds, commits and
exits 0; whatever did not finish stays uncommitted and is redone by another process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiokafka.errors import KafkaError

from core._metrics_lag import consumer_lag, lag_by_topic
from core.errors import ConfigurationError, KafkaUnavailable, PermanentError
from core.event_loop import use_event_loop
from core.health import kafka_reachable, serve_health, vault_reachable
from core.heap import settle_heap
from core.logs import configure_logging
from core.metrics import Metrics
from core.settings import Settings, connector_env, load_settings
from core.telemetry import setup_tracing
from core.tenant_logs import TenantLogPublisher
from core.vault import AppRoleCredentials, PoolVault, TokenFile
from schemas import CONNECTORS, RETRY_TIERS

from ._pool import OAuthRefresh, PoolOptions, WorkerPool
from .connectors._base import Connector

__all__ = ["add_arguments", "oauth_refresher", "run", "serve"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connector", required=True, choices=CONNECTORS, help="connector this pool runs")
    parser.add_argument("--concurrency", type=int, default=None, help="commands in flight (all tenants)")
    parser.add_argument(
        "--tenant-concurrency", type=int, default=None, help="commands in flight per tenant"
    )
    parser.add_argument(
        "--shutdown-grace", type=float, default=10.0, help="seconds in-flight work may finish on SIGTERM"
    )
    parser.add_argument(
        "--shutdown-within",
        type=float,
        default=50.0,
        help="seconds the whole stop may take, commit and token write-backs included (below the "
        "termination grace, 60 s in the chart)",
    )
    parser.add_argument(
        "--instance-id",
        default=None,
        help="stable id of this process (e.g. the pod name; else SWITCHYARD_INSTANCE_ID): a "
        "restart with the same id fences the previous incarnation's open Kafka transaction "
        "immediately",
    )
    parser.add_argument(
        "--retry-tier-delays",
        default=None,
        help=f"comma-separated seconds per retry tier (default {','.join(map(str, RETRY_TIERS))}; "
        "shorter values are for tests and demos)",
    )


def _tier_delays(raw: str | None) -> tuple[float, ...]:
    if not raw:
        return tuple(float(d) for d in RETRY_TIERS)
    try:
        delays = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigurationError("--retry-tier-delays takes comma-separated seconds") from exc
    if not delays or len(delays) > len(RETRY_TIERS) or min(delays) < 0:
        raise ConfigurationError(f"--retry-tier-delays takes 1 to {len(RETRY_TIERS)} non-negative values")
    return delays


def _instance(args: argparse.Namespace, settings: Settings) -> dict[str, str]:
    """The pool's ``instance_id`` option: ``--instance-id``, else SWITCHYARD_INSTANCE_ID
    (the chart's pod name), else none (the pool draws a random one)."""
    instance_id = args.instance_id or settings.instance_id
    return {"instance_id": instance_id} if instance_id else {}


def oauth_refresher(connector: Connector, base_url: str) -> OAuthRefresh | None:
    """The refresh function of an OAuth connector: the shared RFC 6749 helper.

    The token endpoint comes from ``oauth.token_url_for`` (the emulator's when the base URL
    is overridden, else the stored or the connector's default token URL).
    """
    if not connector.oauth:
        return None
    from .connectors import oauth

    kind = type(connector)

    async def refresh(session: aiohttp.ClientSession, credentials: Mapping[str, Any]) -> Mapping[str, Any]:
        url = oauth.token_url_for(kind, base_url, credentials)
        return await oauth.refresh(session, url, credentials, json_body=kind.token_request_json)

    return refresh


async def _report_lag(pool: WorkerPool, metrics: Metrics) -> None:
    """Consumer lag of this pool's partitions, every 10 s (for the metrics endpoint)."""
    while True:
        await asyncio.sleep(10)
        consumer = getattr(pool, "consumer", None)
        if consumer is None:
            continue
        try:
            lag = await consumer_lag(consumer)
        except (KafkaError, OSError, AssertionError):
            continue
        metrics.set_lag(pool.group_id, lag_by_topic(lag), pool.source_topics)


async def serve(pool: WorkerPool, metrics: Metrics | None = None) -> int:
    """Run ``pool`` until SIGTERM/SIGINT; returns the process exit code.

    With ``metrics``, serves ``/metrics``, ``/healthz`` and ``/readyz`` on
    ``SWITCHYARD_METRICS_PORT`` (when set) while the pool runs.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pool.request_stop)
    metrics = metrics or Metrics(f"worker-{pool.connector.name}")
    pool.metrics = metrics
    checks = {"kafka": pool_ready(pool), "vault": vault_reachable(pool.settings)}
    lag_task = asyncio.create_task(_report_lag(pool, metrics))
    tenant_logs = TenantLogPublisher(pool.settings, metrics=metrics)
    try:
        await tenant_logs.start()
        pool.tenant_logs = tenant_logs
    except KafkaUnavailable as exc:
        logger.warning("tenant log topic unavailable, continuing without it: %s", exc)
    try:
        async with serve_health(pool.settings, metrics, checks):
            settle_heap()
            await pool.run()
    except KafkaUnavailable as exc:
        logger.error("worker pool stopped: %s", exc)
        return 1
    finally:
        lag_task.cancel()
        if pool.tenant_logs is not None:
            await tenant_logs.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        close = getattr(pool.vault, "close", None)
        if close is not None:
            close()
    return 0


def pool_ready(pool: WorkerPool) -> Callable[[], Awaitable[bool]]:
    """Readiness: the pool consumes, is not stopping, and a broker answers it now (a
    metadata request: a frozen or unreachable cluster fails the check within its timeout)."""

    async def check() -> bool:
        if getattr(pool, "consumer", None) is None or pool._stopping.is_set():
            return False
        return await kafka_reachable(pool.admin)

    return check


def _pool_vault(settings: Settings, connector: str) -> PoolVault:
    """The pool's Vault: its AppRole, or else the token the Vault Agent keeps in a file."""
    role_id = connector_env(None, connector, "SWITCHYARD_VAULT_ROLE_ID")
    secret_id = connector_env(None, connector, "SWITCHYARD_VAULT_SECRET_ID")
    token_file = connector_env(None, connector, "SWITCHYARD_VAULT_TOKEN_FILE")
    login: AppRoleCredentials | TokenFile
    if role_id and secret_id:
        login = AppRoleCredentials(role_id=role_id, secret_id=secret_id)
    elif token_file:
        login = TokenFile(token_file)
    else:
        raise ConfigurationError(
            f"set SWITCHYARD_VAULT_ROLE_ID_{connector.upper()} and SWITCHYARD_VAULT_SECRET_ID_{connector.upper()}, "
            "or SWITCHYARD_VAULT_TOKEN_FILE (a token the Vault Agent keeps fresh)"
        )
    return PoolVault(
        settings.vault_addr, connector, login, mount=settings.vault_kv_mount, ca_file=settings.vault_ca_file
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    use_event_loop(settings.event_loop)
    configure_logging(f"worker-{args.connector}", settings.log_level)
    setup_tracing(f"switchyard-worker-{args.connector}", settings.otlp_endpoint)
    try:
        from .connectors import get_connector

        connector = get_connector(args.connector)()
        options = PoolOptions(
            concurrency=args.concurrency,
            tenant_concurrency=args.tenant_concurrency,
            shutdown_grace=args.shutdown_grace,
            shutdown_within=args.shutdown_within,
            tier_delays=_tier_delays(args.retry_tier_delays),
            **_instance(args, settings),
        )
        vault = _pool_vault(settings, args.connector)
        base_url = settings.connector_base_url or getattr(connector, "default_base_url", "")
        pool = WorkerPool(
            settings, connector, vault, options=options, refresher=oauth_refresher(connector, base_url)
        )
    except (ConfigurationError, ImportError, PermanentError) as exc:
        print(f"switchyard worker: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(pool))
