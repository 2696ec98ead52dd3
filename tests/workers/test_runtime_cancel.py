"""A command its caller cancelled ends without another attempt: the executor with the
real Slack connector's argument check and a stand-in for its HTTP call (no Kafka, no
HTTP), and the feed of cancellations a worker process reads (records built as the
ingress publishes them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import aiohttp
from test_runtime_deadline import ARGS, RecordingSlack, SlowSecrets, _command

from core.errors import PermanentError, RetryableError
from core.metrics import BreakerState
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
from workers._credentials import CredentialStoreDown
from workers._execute import Executor, Job
from workers._retry import RetryPolicy
from workers.connectors._base import ConnectorCall, Doubt


async def _run(
    connector: RecordingSlack,
    command: RoutedCommand,
    cancelled: Any,
    *,
    secrets: Any = None,
    breakers: CircuitBreakers | None = None,
    doubt_settled_at: float | None = None,
    **policy: Any,
) -> Any:
    async with aiohttp.ClientSession() as session:
        executor = Executor(
            connector, Topics("t."), secrets or SlowSecrets(), breakers or CircuitBreakers(), session,
            RetryPolicy(**{"in_process_attempts": 1, "base_delay": 0.01, "tier_delays": (0.1,), **policy}),
            base_url="http://127.0.0.1:9", timeout=2.0,
        )  # fmt: skip
        executor.cancelled = cancelled
        return await executor.run(Job(command, {}, next_tier=0, doubt_settled_at=doubt_settled_at))


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


NOW = datetime.now(UTC)


def _record(kind: str, tenant: str, command_id: str, at: datetime = NOW) -> Any:
    headers = Headers.for_command(tenant, "s1", command_id, kind=kind, schema="1")
    return SimpleNamespace(
        headers=headers, topic="t.cancels", partition=0, offset=0, timestamp=int(at.timestamp() * 1000)
    )


def test_the_feed_knows_a_cancellation_for_its_own_tenant_only() -> None:
    feed = CancelFeed(Settings(topic_prefix="t."), capacity=100)
    feed.apply(_record(TASK_CANCEL_KIND, "acme", "c1"))
    feed.apply(_record(DUPLICATE_KIND, "acme", "c2"))  # not a cancellation
    feed.apply(SimpleNamespace(headers=[], topic="t.cancels", partition=0, offset=1, timestamp=0))

    submitted = NOW - timedelta(seconds=5)
    assert feed.cancelled("acme", "c1", submitted)
    assert not feed.cancelled("globex", "c1", submitted)  # ids are per tenant; never another's
    assert not feed.cancelled("acme", "c2", submitted)
    assert len(feed) == 1


def test_a_cancellation_does_not_end_a_later_command_with_the_same_id() -> None:
    # An idempotency key used again after the dedup window gives the same command id to
    # a new command: the old cancellation is not its.
    feed = CancelFeed(Settings(topic_prefix="t."), capacity=100)
    feed.apply(_record(TASK_CANCEL_KIND, "acme", "c1", at=NOW - timedelta(days=2)))
    assert not feed.cancelled("acme", "c1", NOW)
    # Two replicas' clocks apart by seconds: still the command cancelled.
    feed.apply(_record(TASK_CANCEL_KIND, "acme", "c2", at=NOW))
    assert feed.cancelled("acme", "c2", NOW + timedelta(seconds=10))


def test_one_tenants_flood_of_cancellations_keeps_anothers() -> None:
    feed = CancelFeed(Settings(topic_prefix="t."), capacity=100)
    feed.apply(_record(TASK_CANCEL_KIND, "quiet", "mine"))
    for index in range(1_000):
        feed.apply(_record(TASK_CANCEL_KIND, "loud", f"c{index}"))

    assert feed.cancelled("quiet", "mine", NOW)
    assert len(feed) <= 100


class Effects(RecordingSlack):
    """Slack whose requests may take effect although their answer is lost (``lost``:
    errors raised after the effect), and whose check for an earlier effect finds them;
    ``during(name)`` runs inside ``execute`` or ``find_done``."""

    def __init__(
        self, *errors: BaseException, lost: bool = False, during: Callable[[str], None] = lambda _: None
    ) -> None:
        super().__init__(*errors)
        self.lost, self.during, self.checks = lost, during, 0

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        self.during("execute")
        if self.lost and self.errors:
            self.sent.append(time.time())
            self.effect = {"channel": "C1", "ts": "9.0"}
            raise self.errors.pop(0)
        return await super().execute(call)

    async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
        self.checks += 1
        self.during("find_done")
        return getattr(self, "effect", None)


UNAVAILABLE = RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, "slack chat.postMessage: 503", http_status=503)


async def test_a_cancel_after_an_attempt_whose_answer_was_lost_reports_the_effect_it_finds() -> None:
    # The 503 came after the message was posted; cancelled during that attempt. Ending it
    # "failed" would tell the agent the message was not sent, and it would send it again.
    flag: list[bool] = []
    connector = Effects(UNAVAILABLE, lost=True, during=lambda where: flag.append(True))
    outcome = await _run(connector, _command(ARGS), lambda c: bool(flag))

    assert len(connector.sent) == 1 and connector.checks == 1
    assert outcome.status is ResultStatus.SUCCEEDED
    assert outcome.result.output == {"channel": "C1", "ts": "9.0"}


async def test_a_cancel_after_an_attempt_whose_effect_is_not_found_fails_without_a_retry_tier() -> None:
    flag: list[bool] = []
    connector = Effects(UNAVAILABLE, during=lambda where: flag.append(True))
    outcome = await _run(connector, _command(ARGS), lambda c: bool(flag))

    # Looked for (the 503 may have hidden an effect), none found: ended now, not handed
    # on. A connector's "none found" may also mean "could not tell" (a Notion database
    # without a key property, a Slack channel not listed): the doubt stays in the Result.
    assert connector.checks == 1 and len(connector.sent) == 1
    assert [record.topic for record in outcome.records] == ["t.results"]
    result = outcome.result
    assert (result.status, result.error.code) == (ResultStatus.FAILED, ErrorCode.CANCELLED)
    assert result.error.message.endswith("an earlier attempt may have taken effect")


async def test_a_cancel_while_credentials_are_read_sends_nothing() -> None:
    started = time.time()
    connector = RecordingSlack()
    outcome = await _run(
        connector, _command(ARGS), lambda c: time.time() > started + 0.1, secrets=SlowSecrets(read=0.3)
    )
    assert connector.sent == []
    assert (outcome.status, outcome.result.error.code) == (ResultStatus.REJECTED, ErrorCode.CANCELLED)


async def test_a_cancel_while_an_earlier_effect_is_looked_for_sends_nothing() -> None:
    # A retry of a command whose last attempt timed out looks for its effect first; the
    # cancellation arrives meanwhile: the request is not sent.
    timed_out = RetryableError(ErrorCode.UPSTREAM_TIMEOUT, "no answer").to_info()
    command = _command(ARGS).model_copy(update={"errors": [timed_out], "attempt": 2})
    flag: list[bool] = []
    connector = Effects(during=lambda where: flag.append(where == "find_done"))
    outcome = await _run(connector, command, lambda c: any(flag))

    assert connector.sent == [] and connector.checks == 1
    result = outcome.result
    assert (result.status, result.error.code, result.attempts) == (ResultStatus.FAILED, ErrorCode.CANCELLED, 1)
    assert result.error.message.endswith("an earlier attempt may have taken effect")


async def test_a_cancel_of_a_command_in_doubt_that_cannot_be_checked_says_so() -> None:
    timed_out = RetryableError(ErrorCode.UPSTREAM_TIMEOUT, "no answer").to_info()
    command = _command(ARGS).model_copy(update={"errors": [timed_out], "attempt": 2})

    class Unreadable(RecordingSlack):
        async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
            raise RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, "history unavailable")

    connector = Unreadable()
    outcome = await _run(connector, command, lambda c: True)
    assert connector.sent == []
    assert outcome.status is ResultStatus.FAILED
    assert outcome.result.error.message.endswith("an earlier attempt may have taken effect")


async def test_a_cancel_during_a_credential_store_outage_ends_the_wait() -> None:
    class Down(SlowSecrets):
        async def get(self, tenant_id: str) -> Any:
            raise CredentialStoreDown()

    started = time.time()
    connector = RecordingSlack()
    async with asyncio.timeout(5):
        outcome = await _run(connector, _command(ARGS), lambda c: time.time() > started + 0.2, secrets=Down())
    assert connector.sent == [] and outcome.status is ResultStatus.REJECTED


async def test_a_cancel_while_an_upstream_refuses_the_look_for_an_effect_keeps_the_doubt() -> None:
    # The look is refused (a missing read scope): the request would be sent as it would
    # have been; cancelled meanwhile, it is not sent, and nothing says the first did not run.
    timed_out = RetryableError(ErrorCode.UPSTREAM_TIMEOUT, "no answer").to_info()
    command = _command(ARGS).model_copy(update={"errors": [timed_out], "attempt": 2})
    flag: list[bool] = []

    class Refusing(RecordingSlack):
        async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
            flag.append(True)
            raise PermanentError(ErrorCode.UPSTREAM_REJECTED, "missing_scope")

    connector = Refusing()
    outcome = await _run(connector, command, lambda c: bool(flag))
    assert connector.sent == []
    assert outcome.status is ResultStatus.FAILED
    assert outcome.result.error.message.endswith("an earlier attempt may have taken effect")


async def test_a_command_handed_on_in_doubt_and_cancelled_never_reads_as_not_run() -> None:
    # Its previous owner was killed mid-request; nothing found (or nothing the connector
    # could tell): it must not end "rejected ... before it ran", or its caller redoes it.
    connector = Effects()
    outcome = await _run(connector, _command(ARGS), lambda c: True, doubt_settled_at=time.time())
    assert connector.checks == 1 and connector.sent == []
    assert outcome.status is ResultStatus.FAILED
    assert outcome.result.error.message == "cancelled by its caller; an earlier attempt may have taken effect"


async def test_a_cancel_between_attempts_frees_the_half_open_probe_before_looking() -> None:
    now = [0.0]
    breakers = CircuitBreakers(threshold=1, cooldown=5.0, clock=lambda: now[0])
    breakers.failure("acme")
    now[0] = 10.0  # cool-down over: this command is the half-open probe
    flag: list[bool] = []
    probes: list[str] = []

    def during(where: str) -> None:
        flag.append(True)
        if where == "find_done":  # the look runs with the probe already freed
            probes.append(breakers.state_of("acme"))

    connector = Effects(UNAVAILABLE, during=during)
    outcome = await _run(connector, _command(ARGS), lambda c: bool(flag), breakers=breakers, in_process_attempts=3)
    assert outcome.status is ResultStatus.FAILED and connector.checks == 1
    assert probes == [BreakerState.CLOSED]  # not held through the look: the tenant's next command may probe


async def test_a_cancelled_command_behind_an_open_breaker_is_not_looked_for() -> None:
    breakers = CircuitBreakers(threshold=1, cooldown=60.0)
    breakers.failure("acme")  # open: the upstream is failing
    timed_out = RetryableError(ErrorCode.UPSTREAM_TIMEOUT, "no answer").to_info()
    command = _command(ARGS).model_copy(update={"errors": [timed_out], "attempt": 2})
    connector = Effects()
    asked: list[bool] = []
    # Not cancelled at the start, cancelled by the time the breaker refuses it.
    outcome = await _run(connector, command, lambda c: asked.append(True) or len(asked) > 1, breakers=breakers)
    assert connector.checks == 0 and connector.sent == []
    assert outcome.status is ResultStatus.FAILED and outcome.result.error.code is ErrorCode.CANCELLED
