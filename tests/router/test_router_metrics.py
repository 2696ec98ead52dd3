"""The router's metrics: counted when an output is acked, once, with bounded labels."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from _router_support import (
    apply,
    command,
    in_process_router,
    prepare_topics,
    stream_events,
    summary_action,
    workspace,
)
from prometheus_client.parser import text_string_to_metric_families

from core.metrics import OTHER, Metrics
from core.settings import Settings
from router._route import Router
from router._state import PartitionedState
from schemas import ErrorCode, ErrorInfo, Result, ResultStatus, RoutedCommand, StageTimes


def _table() -> Any:
    return SimpleNamespace(data={})


def _samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _all_samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # Without the *_created timestamps, which differ between two registries.
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): round(sample.value, 6)
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return _samples(metrics, name).get(tuple(sorted(labels.items())), 0.0)


async def test_the_router_counts_routed_commands_by_connector_and_rejections_by_code_once(
    own_settings: Settings,
) -> None:
    settings = own_settings
    await prepare_topics(settings)
    acme, beta = f"acme_{uuid.uuid4().hex[:6]}", f"beta_{uuid.uuid4().hex[:6]}"
    ghost = f"ghost_{uuid.uuid4().hex[:6]}"
    await apply(
        settings,
        workspace(acme, [summary_action("slack", "post_message", {"text": "{{ args.summary }}"})]),
        workspace(beta, [summary_action("gmail", "send_email", {"body": "{{ args.summary }}"})]),
    )
    async with in_process_router(settings) as router:
        router.metrics = metrics = Metrics("router")
        repeated = command(acme)
        batch = [
            *(command(acme) for _ in range(3)),
            repeated,
            repeated,  # same idempotency key in one batch: dropped, not counted
            *(command(beta) for _ in range(2)),
            command(acme, deadline=timedelta(seconds=-1)),
            command(ghost),
        ]
        await router.handle_batch(stream_events(settings, batch))

        routed = "switchyard_commands_routed_total"
        rejected = "switchyard_commands_rejected_total"
        assert _value(metrics, routed, tenant=acme, space="main", connector="slack") == 4
        assert _value(metrics, routed, tenant=beta, space="main", connector="gmail") == 2
        assert _value(metrics, rejected, tenant=acme, space="main", code="deadline_expired") == 1
        assert _value(metrics, rejected, tenant=ghost, space="main", code="unknown_workspace") == 1
        # Each tenant's series name only its own connector.
        assert {
            dict(k)["connector"] for k in _samples(metrics, routed) if dict(k)["tenant"] == acme
        } == {"slack"}
        assert {
            dict(k)["connector"] for k in _samples(metrics, routed) if dict(k)["tenant"] == beta
        } == {"gmail"}
        stage = "switchyard_stage_latency_seconds_count"
        assert _value(metrics, stage, stage="ingress_to_routed", connector="slack") == 4
        assert _value(metrics, stage, stage="ingress_to_routed", connector="gmail") == 2
        latency = "switchyard_command_latency_seconds_count"
        assert _value(metrics, latency, tenant=acme, connector="none") == 1
        assert (router.routed, router.rejected) == (6, 2)

        # The same commands again (a replay after a crash): dropped by dedup, counted never.
        await router.handle_batch(stream_events(settings, batch, first_offset=len(batch)))
        assert _value(metrics, routed, tenant=acme, space="main", connector="slack") == 4
        assert _value(metrics, rejected, tenant=ghost, space="main", code="unknown_workspace") == 1


class _StaticConfig:
    def __init__(self, *workspaces: Any) -> None:
        self._by_key = {(w.tenant_id, w.space_id): w for w in workspaces}

    async def sync(self, *_: Any) -> bool:
        return True

    def get(self, tenant_id: str, space_id: str) -> Any:
        return self._by_key.get((tenant_id, space_id))


class _RefusingProducer:
    """Acks changelog writes, fails every output send (a broker that refuses the topic)."""

    def __init__(self, outputs: set[str]) -> None:
        self.outputs = outputs

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic in self.outputs:
            future.set_exception(ConnectionError("output refused"))
        else:
            future.set_result(None)
        return future


async def test_a_batch_whose_outputs_are_not_acked_counts_nothing(settings: Settings) -> None:
    acme = workspace(
        "acme", [summary_action("slack", "post_message", {"text": "{{ args.summary }}"})]
    )
    topics = settings.topics
    router = Router(
        settings,
        _StaticConfig(acme),  # type: ignore[arg-type]
        PartitionedState(_table(), "dedup"),
        PartitionedState(_table(), "usage"),
    )
    router.partitions = {topics.connector("slack"): [0, 1, 2], topics.results: [0, 1, 2]}
    router.producer = _RefusingProducer({topics.connector("slack"), topics.results})  # type: ignore[assignment]
    router.metrics = metrics = Metrics("router")
    events = stream_events(
        settings, [command("acme"), command("acme", deadline=timedelta(seconds=-1))]
    )
    with pytest.raises(ConnectionError):
        await router.handle_batch(events)
    assert _samples(metrics, "switchyard_commands_routed_total") == {}
    assert _samples(metrics, "switchyard_commands_rejected_total") == {}
    assert all(e.message.acked for e in events)  # withheld from commit, to be replayed


def test_the_fast_counters_give_the_same_series_as_the_model_based_ones() -> None:
    now = datetime.now(UTC)
    cmd = command("acme").model_copy(update={"submitted_at": now - timedelta(seconds=0.2)})
    routed = RoutedCommand.model_validate(
        {
            **cmd.model_dump(),
            "connector": "slack",
            "operation": "post_message",
            "resolved_arguments": {},
            "routed_at": now,
        }
    )
    by_model, fast = Metrics("router"), Metrics("router")
    by_model.command_routed(routed)
    fast.count_routed("acme", "main", "slack", 0.2)
    rejection = Result(
        command_id=cmd.command_id,
        tenant_id="acme",
        space_id="main",
        user_id=cmd.user_id,
        action=cmd.action,
        idempotency_key=cmd.idempotency_key,
        status=ResultStatus.REJECTED,
        error=ErrorInfo(code=ErrorCode.RATE_LIMITED, message="slow down"),
        attempts=0,
        times=StageTimes(submitted_at=cmd.submitted_at, finished_at=now),
    )
    by_model.result(rejection)
    fast.count_rejected("acme", "main", ErrorCode.RATE_LIMITED.value, 0.2)
    samples = _all_samples(fast)
    assert samples == _all_samples(by_model)
    routed_key = (("connector", "slack"), ("space", "main"), ("tenant", "acme"))
    assert samples[("switchyard_commands_routed_total", routed_key)] == 1
    rejected_key = (("code", "rate_limited"), ("space", "main"), ("tenant", "acme"))
    assert samples[("switchyard_commands_rejected_total", rejected_key)] == 1
    assert (
        samples[
            ("switchyard_command_latency_seconds_sum", (("connector", "none"), ("tenant", "acme")))
        ]
        == 0.2
    )


def test_a_flood_of_new_tenants_keeps_the_fast_label_cache_and_series_bounded() -> None:
    metrics = Metrics("router", tenant_cap=50, hot_cap=100)
    for i in range(200):
        metrics.count_routed(f"seed{i}", "main", "slack", 0.01)
        metrics.count_rejected(f"seed{i}", "main", "rate_limited", 0.01)
    series = metrics.series_count()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(50_000):
            metrics.count_routed(f"flood{i}", f"space{i}", "slack", 0.01)
            metrics.count_rejected(f"flood{i}", f"space{i}", "rate_limited", 0.01)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(metrics._hot) == 100 and len(metrics._hot_rejected) == 100
    assert metrics.series_count() == series
    assert after - before < 256 * 1024, f"grew by {after - before} bytes"
    text = metrics.exposition().decode()
    assert "flood" not in text and f'tenant="{OTHER}"' in text
    assert (
        _value(
            metrics,
            "switchyard_commands_routed_total",
            tenant=OTHER,
            space=OTHER,
            connector="slack",
        )
        == 150 + 50_000
    )
