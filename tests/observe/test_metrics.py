"""Prometheus metrics: bounded labels, exposition, health server, consumer lag on real Kafka."""

from __future__ import annotations

import asyncio
import gc
import inspect
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiokafka import TopicPartition

from core.health import serve_health, vault_reachable
from core.kafka import ensure_topics, make_consumer, make_producer, start_client
from core.metrics import OTHER, BreakerState, Metrics, TenantLabeler, consumer_lag, lag_by_topic
from core.settings import Settings
from schemas import ErrorCode, ResultStatus

from ._support import make_result, make_routed_command


def test_tenant_labeler_admits_the_cap_then_maps_the_rest_to_other() -> None:
    labeler = TenantLabeler(cap=3)
    assert [labeler(t) for t in ("a", "b", "a", "c", "d", "e", "b")] == ["a", "b", "a", "c", OTHER, OTHER, "b"]
    assert len(labeler) == 3


def test_a_tenant_called_other_is_not_the_overflow_of_the_cap() -> None:
    labeler = TenantLabeler(cap=1)
    assert [labeler(t) for t in ("other", "acme")] == ["other", OTHER] and OTHER != "other"
    metrics = Metrics("test", tenant_cap=1)
    metrics.watch_breaker("other", "slack", lambda: BreakerState.OPEN)
    assert 'switchyard_circuit_breaker_state{connector="slack",tenant="other"} 2.0' in metrics.exposition().decode()


def test_a_flood_of_100k_new_tenants_does_not_grow_series_or_memory_past_the_cap() -> None:
    metrics = Metrics("test", tenant_cap=200)
    result = make_result("warmup", spans=0)
    # Fill the cap first, then measure what 100k further tenants add.
    for i in range(200):
        metrics.result(result.model_copy(update={"tenant_id": f"seed{i}"}))
        metrics.accepted.labels(*metrics.labels(f"seed{i}", "main")).inc()
    # The first tenant past the cap creates the "other" series once.
    metrics.result(result.model_copy(update={"tenant_id": "overflow"}))
    metrics.accepted.labels(*metrics.labels("overflow", "main")).inc()
    metrics.in_flight.labels(metrics.tenants("overflow")).inc()
    metrics.watch_breaker("overflow", "slack", lambda: BreakerState.OPEN)
    series_at_cap = metrics.series_count()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(100_000):
            tenant = f"flood{i}"
            labels = metrics.labels(tenant, f"space{i}")
            metrics.accepted.labels(*labels).inc()
            metrics.in_flight.labels(metrics.tenants(tenant)).inc()
            metrics.watch_breaker(tenant, "slack", lambda: BreakerState.OPEN)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(metrics.tenants) == 200
    assert metrics.series_count() == series_at_cap
    assert after - before < 256 * 1024, f"grew by {after - before} bytes"
    exposition = metrics.exposition().decode()
    assert "flood" not in exposition and f'tenant="{OTHER}"' in exposition


def test_result_counts_by_status_code_and_observes_latency() -> None:
    metrics = Metrics("worker-slack")
    metrics.result(make_result("acme", latency=0.2))
    metrics.result(make_result("acme", status=ResultStatus.FAILED, code=ErrorCode.UPSTREAM_TIMEOUT))
    metrics.result(make_result("acme", status=ResultStatus.REJECTED, code=ErrorCode.RATE_LIMITED))
    metrics.result(make_result("acme", status=ResultStatus.DEAD_LETTERED, code=ErrorCode.RETRIES_EXHAUSTED))
    text = metrics.exposition().decode()
    assert 'switchyard_commands_succeeded_total{connector="slack",space="main",tenant="acme"} 1.0' in text
    assert 'switchyard_commands_failed_total{code="upstream_timeout",connector="slack",space="main",tenant="acme"} 1.0' in text
    assert 'switchyard_commands_rejected_total{code="rate_limited",space="main",tenant="acme"} 1.0' in text
    assert 'switchyard_commands_dead_lettered_total{connector="slack",space="main",tenant="acme"} 1.0' in text
    # A dead letter is its own outcome, not a failure too: summed outcomes count it once.
    assert 'code="retries_exhausted"' not in text
    assert 'switchyard_command_latency_seconds_count{connector="slack",tenant="acme"} 4.0' in text


def test_upstream_calls_are_timed_per_connector_and_operation() -> None:
    metrics = Metrics("worker-jira")
    for seconds in (0.02, 0.2, 3.0):
        metrics.upstream_call("jira", "issues.create", "ok", seconds)
    metrics.upstream_call("jira", "issues.search", "ok", 0.02)
    text = metrics.exposition().decode()
    assert 'switchyard_upstream_call_seconds_count{connector="jira",operation="issues.create"} 3.0' in text
    assert 'switchyard_upstream_call_seconds_bucket{connector="jira",le="0.25",operation="issues.create"} 2.0' in text
    assert 'switchyard_upstream_call_seconds_count{connector="jira",operation="issues.search"} 1.0' in text


def test_worker_label_cache_counts_each_call_and_stays_bounded_under_new_tenants() -> None:
    metrics = Metrics("worker-slack", tenant_cap=20, hot_cap=50)
    routed = make_routed_command("acme")
    for _ in range(3):
        metrics.command_started(routed, datetime.now(UTC))
    metrics.command_stopped("acme")
    metrics.result(make_result("acme"))
    metrics.result(make_result("acme"))
    metrics.result(make_result("acme", status=ResultStatus.DEAD_LETTERED, code=ErrorCode.RETRIES_EXHAUSTED))
    for i in range(500):
        metrics.result(make_result(f"flood{i}", spans=0))
        metrics.command_started(make_routed_command(f"flood{i}"), datetime.now(UTC))
        metrics.command_stopped(f"flood{i}")
    assert len(metrics._hot_worker) == 50
    text = metrics.exposition().decode()
    assert 'switchyard_in_flight{tenant="acme"} 2.0' in text
    assert 'switchyard_commands_succeeded_total{connector="slack",space="main",tenant="acme"} 2.0' in text
    assert 'switchyard_commands_dead_lettered_total{connector="slack",space="main",tenant="acme"} 1.0' in text
    assert 'switchyard_command_latency_seconds_count{connector="slack",tenant="acme"} 3.0' in text
    assert 'switchyard_stage_latency_seconds_count{connector="slack",stage="routed_to_started"} 503.0' in text
    # Tenants past the label cap share "other", cached or not.
    assert f'switchyard_commands_succeeded_total{{connector="slack",space="{OTHER}",tenant="{OTHER}"}} 481.0' in text
    assert f'switchyard_in_flight{{tenant="{OTHER}"}} 0.0' in text


def test_lag_of_a_topic_no_longer_held_reads_zero_not_its_last_value() -> None:
    metrics = Metrics("worker-slack")
    topics = ["slack", "retry.slack.5s"]
    metrics.set_lag("workers.slack", {"slack": 5, "retry.slack.5s": 3}, topics)
    metrics.set_lag("workers.slack", {"slack": 2}, topics)  # the tier's partition moved away

    def lag(topic: str) -> float | None:
        return metrics.registry.get_sample_value(
            "switchyard_consumer_lag", {"group": "workers.slack", "topic": topic}
        )

    assert (lag("slack"), lag("retry.slack.5s")) == (2, 0)


def test_routed_to_started_times_the_first_attempt_only() -> None:
    metrics = Metrics("worker-slack")
    first = make_routed_command("acme")
    retry = first.model_copy(update={"attempt": 2})  # its wait included tier backoffs
    metrics.command_started(first, first.routed_at + timedelta(seconds=0.2))
    metrics.command_started(retry, retry.routed_at + timedelta(seconds=150))
    labels = {"stage": "routed_to_started", "connector": "slack"}
    assert metrics.registry.get_sample_value("switchyard_stage_latency_seconds_count", labels) == 1
    assert metrics.registry.get_sample_value("switchyard_stage_latency_seconds_sum", labels) == 0.2
    assert metrics.registry.get_sample_value("switchyard_in_flight", {"tenant": "acme"}) == 2


def test_every_metrics_event_is_reported_by_some_process() -> None:
    """An event no process reports leaves its metric, its alert and its panel silent."""
    root = Path(__file__).resolve().parents[2]
    # Not events; and command_routed is the model form of count_routed, which the router calls.
    helpers = {"labels", "connector", "exposition", "series_count", "command_routed"}
    events = [
        name for name, _ in inspect.getmembers(Metrics, inspect.isfunction)
        if not name.startswith("_") and name not in helpers
    ]
    sources = "\n".join(
        path.read_text()
        for package in ("ingress", "router", "workers", "core")
        for path in (root / package).rglob("*.py")
        if path != root / "core" / "metrics.py"
    )
    assert "watch_breaker" in events
    assert [name for name in events if f".{name}(" not in sources] == []


def test_breaker_gauge_reads_the_breaker_when_scraped_and_leaves_out_tenants_past_the_cap() -> None:
    metrics = Metrics("worker-slack", tenant_cap=1)
    state = [BreakerState.OPEN]
    metrics.watch_breaker("acme", "slack", lambda: state[0])
    metrics.watch_breaker("beyond-the-cap", "slack", lambda: BreakerState.OPEN)

    def gauge(tenant: str) -> float | None:
        return metrics.registry.get_sample_value(
            "switchyard_circuit_breaker_state", {"tenant": tenant, "connector": "slack"}
        )

    assert gauge("acme") == BreakerState.OPEN
    state[0] = BreakerState.CLOSED  # e.g. its partitions moved on and it was forgotten
    assert gauge("acme") == BreakerState.CLOSED
    assert gauge(OTHER) is None


def test_two_metrics_objects_have_separate_registries() -> None:
    first, second = Metrics("a"), Metrics("b")
    first.accepted.labels("acme", "main").inc()
    assert "acme" in first.exposition().decode() and "acme" not in second.exposition().decode()


async def test_health_server_serves_metrics_liveness_and_readiness(settings: Settings) -> None:
    metrics = Metrics("router")
    metrics.accepted.labels(*metrics.labels("acme", "main")).inc()
    healthy = {"value": False}

    async def flag() -> bool:
        return healthy["value"]

    checks = {"started": flag, "vault": vault_reachable(settings)}
    async with serve_health(settings, metrics, checks, host="127.0.0.1", port=0) as port, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"
        async with http.get(f"{base}/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            assert 'switchyard_commands_accepted_total{space="main",tenant="acme"} 1.0' in await r.text()
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
        async with http.get(f"{base}/readyz") as r:
            assert r.status == 503 and (await r.json())["checks"] == {"started": False, "vault": True}
        healthy["value"] = True
        async with http.get(f"{base}/readyz") as r:
            assert r.status == 200


async def test_serve_health_serves_nothing_without_a_port(settings: Settings) -> None:
    async with serve_health(settings, Metrics("x")) as port:
        assert port is None and settings.metrics_port is None


async def test_consumer_lag_is_highwater_minus_committed_on_real_kafka(settings: Settings) -> None:
    topic = settings.topics.connector("slack")
    await ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    await start_client(producer, what="test producer")
    consumer = make_consumer(settings, topic, group_id=f"{settings.topic_prefix}workers.slack")
    try:
        for i in range(10):
            await producer.send_and_wait(topic, value=b"x", key=str(i).encode())
        await start_client(consumer, what="test consumer")
        async with asyncio.timeout(30):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)  # join the group (bounded)
        tp = TopicPartition(topic, 0)
        consumer.seek_to_beginning(tp)
        got = 0
        async with asyncio.timeout(30):
            while got < 4:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=4 - got)
                got += sum(len(v) for v in batch.values())
        await consumer.commit({tp: 4})
        lag = await consumer_lag(consumer)
        assert lag == {(topic, 0): 6}
        metrics = Metrics("worker-slack")
        metrics.set_lag("workers.slack", lag_by_topic(lag))  # as the worker reports it
        assert f'switchyard_consumer_lag{{group="workers.slack",topic="{topic}"}} 6.0' in metrics.exposition().decode()
        # Paused (a pool under backpressure), the partition is not fetched: its cached
        # watermark stood still while records kept coming, and the lag read 6.
        consumer.pause(tp)
        for i in range(50):
            await producer.send_and_wait(topic, value=b"y", key=str(i).encode())
        for _ in range(3):
            await consumer.getmany(timeout_ms=200)  # the pool keeps polling its other partitions
        assert await consumer_lag(consumer) == {(topic, 0): 56}
    finally:
        await consumer.stop()
        await producer.stop()


def test_stage_latencies_are_observed_from_stage_times() -> None:
    metrics = Metrics("worker")
    result = make_result("acme", latency=1.0)
    times = result.times.model_copy(
        update={"routed_at": result.times.submitted_at + timedelta(seconds=0.1),
                "started_at": result.times.submitted_at + timedelta(seconds=0.3)}
    )
    metrics.result(result.model_copy(update={"times": times}))
    text = metrics.exposition().decode()
    assert 'switchyard_stage_latency_seconds_count{connector="slack",stage="started_to_finished"} 1.0' in text
