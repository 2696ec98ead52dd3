"""The running system's Prometheus endpoints: per-tenant, per-connector series from the
router, the worker pools and the ingress, each tenant's series only with its own
connector, and no secret in any metric."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from switchyard.demo import DemoTenant

from .conftest import RunningSystem

EXPECTED = {"acme": "slack", "beta": "gmail", "gamma": "notion", "delta": "jira"}
# The connector label "none" belongs to rejections (they never reach a connector).
NO_CONNECTOR = "none"

Samples = list[tuple[str, dict[str, str], float]]


async def _scrape(session: aiohttp.ClientSession, url: str) -> tuple[str, Samples]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        assert response.status == 200, url
        text = await response.text()
    samples = [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]
    return text, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, have, value in samples
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


async def _scrape_until(
    session: aiohttp.ClientSession,
    urls: dict[str, str],
    done: Callable[[dict[str, Samples]], bool],
    limit: float = 60.0,
) -> dict[str, Samples]:
    """Scrape every endpoint until ``done`` holds (bounded: the router counts after its
    send is acked and a worker after its result is written, both just before or after the
    ingress answers)."""
    scraped: dict[str, Samples] = {}
    async with asyncio.timeout(limit):
        while True:
            scraped = {}
            for name, url in urls.items():
                try:
                    scraped[name] = (await _scrape(session, url))[1]
                except (aiohttp.ClientError, TimeoutError):
                    scraped[name] = []  # a router still starting its health server
            if done(scraped):
                return scraped
            await asyncio.sleep(0.25)


async def _run(
    session: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any]
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.post(f"{url}/v1/commands", json=body, headers=headers) as response:
        assert response.status in (200, 202), await response.text()
        command_id = (await response.json())["command_id"]
    async with session.get(f"{url}/v1/commands/{command_id}?wait=30", headers=headers) as response:
        assert response.status == 200
        return await response.json()


def _summary(text: str, **extra: Any) -> dict[str, Any]:
    return {"action": "daily_summary", "arguments": {"summary": text}, **extra}


async def test_router_worker_and_ingress_metrics_show_each_tenants_own_connector_series(
    running: RunningSystem,
) -> None:
    system = running.system
    url = system.ingress_url
    async with aiohttp.ClientSession() as session:
        for tenant in EXPECTED:
            for i in range(3):
                result = await _run(session, url, running.keys[tenant], _summary(f"{tenant} {i}"))
                assert result["status"] == "succeeded", result
        # A deadline that passes in transit: the router rejects the command by code.
        late = await _run(
            session, url, running.keys["acme"], _summary("too late", deadline_seconds=0.001)
        )
        assert late["status"] == "rejected"
        assert late["result"]["error"]["code"] == "deadline_expired"

        urls = dict(system.metrics_urls)
        workers = {tenant: f"worker-{connector}-1" for tenant, connector in EXPECTED.items()}
        assert {"ingress", "router", *workers.values()} <= set(urls), urls

        def complete(scraped: dict[str, Samples]) -> bool:
            router = scraped["router"]
            return all(
                _value(router, "switchyard_commands_routed_total", tenant=t, connector=c) >= 3
                and _value(
                    scraped[workers[t]],
                    "switchyard_commands_succeeded_total",
                    tenant=t,
                    connector=c,
                )
                >= 3
                and _value(scraped["ingress"], "switchyard_commands_accepted_total", tenant=t) >= 3
                for t, c in EXPECTED.items()
            ) and (
                _value(
                    router,
                    "switchyard_commands_rejected_total",
                    tenant="acme",
                    code="deadline_expired",
                )
                >= 1
            )

        scraped = await _scrape_until(session, urls, complete)
        router = scraped["router"]
        for connector in ("slack", "gmail"):
            stage_count = _value(
                router,
                "switchyard_stage_latency_seconds_count",
                stage="ingress_to_routed",
                connector=connector,
            )
            assert stage_count >= 3, connector
        # The router reports the lag of the commands partitions it holds, as pools do
        # theirs (every 10 s), under its consumer group: what waits to be routed.
        prefix = system.settings.topic_prefix
        # Everything sent is routed: the gauge comes down to 0 once the commits say so.
        await _scrape_until(
            session,
            {"router": urls["router"]},
            lambda s: any(
                name == "switchyard_consumer_lag"
                and labels == {"group": f"{prefix}router", "topic": f"{prefix}commands"}
                and value == 0
                for name, labels, value in s["router"]
            ),
            limit=40.0,
        )
        # The router is ready (Kafka answers, routing started) on its own health server.
        async with session.get(urls["router"].replace("/metrics", "/readyz")) as response:
            assert response.status == 200
            assert (await response.json())["checks"] == {"kafka": True, "router": True}

    # No tenant's series carries another tenant's connector, in any process.
    for name, samples in scraped.items():
        for sample, labels, _ in samples:
            tenant, connector = labels.get("tenant"), labels.get("connector")
            if tenant in EXPECTED and connector is not None:
                assert connector in (EXPECTED[tenant], NO_CONNECTOR), (name, sample, labels)
    # A pool serves only its own connector's tenants: no other tenant appears there at all.
    for tenant, worker in workers.items():
        seen = {labels["tenant"] for _, labels, _ in scraped[worker] if "tenant" in labels}
        assert seen & set(EXPECTED) == {tenant}, (worker, seen)


async def test_a_planted_canary_secret_appears_in_no_metrics_endpoint(
    running: RunningSystem,
) -> None:
    system = running.system
    canary = f"xoxb-canary-{secrets.token_hex(10)}"
    acme = running.tenants["acme"]
    # A tenant whose Vault credential is the canary; the emulator knows another token,
    # so the upstream call is refused and the failure (code, message) goes through
    # the worker's metrics, logs and the Result.
    planted = replace(
        acme,
        tenant_id="canary",
        credentials={"bot_token": canary},
        emulator_token=f"xoxb-{secrets.token_hex(12)}",
    )
    assert isinstance(planted, DemoTenant)
    keys = await system.provision([planted])
    async with aiohttp.ClientSession() as session:
        result = await _run(session, system.ingress_url, keys["canary"], _summary("with canary"))
        assert result["status"] == "failed", result
        code = result["result"]["error"]["code"]
        urls = dict(system.metrics_urls)

        def failed_counted(scraped: dict[str, Samples]) -> bool:
            return (
                _value(
                    scraped["worker-slack-1"],
                    "switchyard_commands_failed_total",
                    tenant="canary",
                    connector="slack",
                    code=code,
                )
                >= 1
            )

        await _scrape_until(session, urls, failed_counted)
        secrets_ = [canary, *keys.values(), *running.keys.values()]
        secrets_ += [
            value
            for t in running.tenants.values()
            for value in t.credentials.values()
            if isinstance(value, str) and len(value) > 12
        ]
        for name, url in urls.items():
            text, _ = await _scrape(session, url)
            leaked = any(secret in text for secret in secrets_)
            assert not leaked, f"a secret appears in the metrics of {name}"
            if name != "ingress":  # the ingress's own /readyz is tested with the ingress
                for path in ("/readyz", "/healthz"):
                    async with session.get(url.replace("/metrics", path)) as response:
                        body = await response.text()
                    assert all(secret not in body for secret in secrets_), (name, path)
