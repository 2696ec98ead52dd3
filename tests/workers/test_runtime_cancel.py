"""A command its caller cancelled ends without another attempt: the executor with the
real Slack connector's argument check and a stand-in for its HTTP call (no Kafka, no
HTTP), and the feed of cancellations a worker process reads (records built as the
ingress publishes them)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp
from test_runtime_deadline import ARGS, RecordingSlack, SlowSecrets, _command

from core.errors import RetryableError
from core.settings import Settings
from schemas import (
    DUPLICATE_KIND,
    TASK_CANCEL_KIND,
    ErrorCode,
    Headers,
    ResultStatus,
    RoutedCommand,
)
from schemas.topics import Topics
from workers._breaker import CircuitBreakers
from workers._cancels import CancelFeed
from workers._execute import Executor, Job
from workers._retry import RetryPolicy


async def _run(connector: RecordingSlack, command: RoutedCommand, cancelled: Any, **policy: Any) -> Any:
    async with aiohttp.ClientSession() as session:
        executor = Executor(
            connector, Topics("t."), SlowSecrets(), CircuitBreakers(), session,
            RetryPolicy(**{"in_process_attempts": 1, "base_delay": 0.01, "tier_delays": (0.1,), **policy}),
            base_url="http://127.0.0.1:9", timeout=2.0,
        )  # fmt: skip
        executor.cancelled = cancelled
        return await executor.run(Job(command, {}, next_tier=0))


async def test_a_cancelled_command_is_rejected_without_a_request() -> None:
    connector = RecordingSlack()
    command = _command(ARGS)
    outcome = await _run(connector, command, lambda c: c.command_id == command.command_id)

    assert connector.sent == []
    result = outcome.result
    assert (result.status, result.attempts) == (ResultStatus.REJECTED, 0)
    assert result.error.code is ErrorCode.CANCELLED and not result.error.retryable
    assert [record.topic for record in outcome.records] == ["t.results"]


async def test_a_command_cancelled_between_in_process_attempts_fails_naming_the_last_error() -> None:
    unavailable = RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, "slack chat.postMessage: 503", http_status=503)
    connector = RecordingSlack(unavailable)
    # Cancelled once the first attempt has been sent: asked again before the second.
    outcome = await _run(connector, _command(ARGS), lambda c: bool(connector.sent), in_process_attempts=3)

    assert len(connector.sent) == 1
    result = outcome.result
    assert (result.status, result.attempts) == (ResultStatus.FAILED, 1)
    assert result.error.code is ErrorCode.CANCELLED and result.error.http_status == 503
    assert "after 1 failed attempt(s) (last error: upstream_unavailable, HTTP 503)" in result.error.message


async def test_a_retried_command_cancelled_before_its_next_tier_ran_fails_and_sends_nothing() -> None:
    earlier = RetryableError(ErrorCode.UPSTREAM_RATE_LIMITED, "429", http_status=429).to_info()
    command = _command(ARGS).model_copy(update={"errors": [earlier], "attempt": 2})
    connector = RecordingSlack()
    outcome = await _run(connector, command, lambda c: True)

    assert connector.sent == []
    assert outcome.status is ResultStatus.FAILED and outcome.result.attempts == 1
    assert outcome.result.error.code is ErrorCode.CANCELLED


async def test_a_command_not_cancelled_runs() -> None:
    connector = RecordingSlack()
    outcome = await _run(connector, _command(ARGS), lambda c: False)
    assert outcome.status is ResultStatus.SUCCEEDED and len(connector.sent) == 1


def _record(kind: str, tenant: str, command_id: str) -> Any:
    headers = Headers.for_command(tenant, "s1", command_id, kind=kind, schema="1")
    return SimpleNamespace(headers=headers, topic="t.cancels", partition=0, offset=0)


def test_the_feed_knows_a_cancellation_for_its_own_tenant_only() -> None:
    feed = CancelFeed(Settings(topic_prefix="t."), capacity=100)
    feed.apply(_record(TASK_CANCEL_KIND, "acme", "c1"))
    feed.apply(_record(DUPLICATE_KIND, "acme", "c2"))  # not a cancellation
    feed.apply(SimpleNamespace(headers=[], topic="t.cancels", partition=0, offset=1))

    assert feed.cancelled("acme", "c1")
    assert not feed.cancelled("globex", "c1")  # ids are per tenant; never another's
    assert not feed.cancelled("acme", "c2")
    assert len(feed) == 1


def test_one_tenants_flood_of_cancellations_keeps_anothers() -> None:
    feed = CancelFeed(Settings(topic_prefix="t."), capacity=100)
    feed.apply(_record(TASK_CANCEL_KIND, "quiet", "mine"))
    for index in range(1_000):
        feed.apply(_record(TASK_CANCEL_KIND, "loud", f"c{index}"))

    assert feed.cancelled("quiet", "mine")
    assert len(feed) <= 100
