"""The executor never sends a request after the command's deadline, and a command the
connector refuses before any request has no say in the tenant's breaker. The executor
with the real Slack connector's argument check and a stand-in for its HTTP call (no
Kafka, no HTTP)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from core.errors import RetryableError
from core.vault import TenantSecret
from schemas import ConnectorOptions, ErrorCode, ResultStatus, RoutedCommand
from schemas.topics import Topics
from workers._breaker import CircuitBreakers
from workers._execute import Executor, Job
from workers._retry import RetryPolicy
from workers.connectors._args import validated
from workers.connectors._base import ConnectorCall, CredentialsExpired
from workers.connectors.slack import SlackConnector


def _command(arguments: dict[str, Any], *, deadline_in: float = 120.0) -> RoutedCommand:
    command_id = f"c{uuid.uuid4().hex[:20]}"
    stamp = datetime.now(UTC)
    return RoutedCommand(
        command_id=command_id, tenant_id="acme", space_id="s1", user_id="u1", role="member",
        action="act", idempotency_key=f"k-{command_id}", submitted_at=stamp,
        deadline=stamp + timedelta(seconds=deadline_in), source="rest", connector="slack",
        operation="chat.postMessage", resolved_arguments=arguments, routed_at=stamp,
        connector_options=ConnectorOptions(allowed_hosts=["127.0.0.1:9"]),
    )  # fmt: skip


class RecordingSlack(SlackConnector):
    """Slack's own argument check, then a recorded stand-in for the request: it fails
    with ``errors`` in turn, then succeeds."""

    def __init__(self, *errors: BaseException, oauth: bool = False) -> None:
        super().__init__()
        self.oauth = oauth
        self.sent: list[float] = []
        self.errors = list(errors)

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        validated(self, call)
        self.sent.append(time.time())
        if self.errors:
            raise self.errors.pop(0)
        return {"channel": "C1", "ts": "1.0"}


class SlowSecrets:
    """Credentials whose read and refresh take ``read`` and ``refresh`` seconds."""

    def __init__(self, *, read: float = 0.0, refresh: float = 0.0) -> None:
        self.read, self.refresh_time = read, refresh

    async def get(self, tenant_id: str) -> TenantSecret:
        await asyncio.sleep(self.read)
        return TenantSecret({"bot_token": "xoxb-test"}, 1)

    async def refresh(self, tenant_id: str, stale: TenantSecret) -> TenantSecret:
        await asyncio.sleep(self.refresh_time)
        return TenantSecret({"bot_token": "xoxb-new"}, 2)

    def invalidate(self, tenant_id: str) -> None:
        pass


async def _run(connector: RecordingSlack, command: RoutedCommand, *, secrets: Any = None, breakers: Any = None) -> Any:
    async with aiohttp.ClientSession() as session:
        executor = Executor(
            connector, Topics("t."), SlowSecrets() if secrets is None else secrets,
            CircuitBreakers() if breakers is None else breakers, session,
            RetryPolicy(in_process_attempts=1, base_delay=0.01, tier_delays=(0.1,)),
            base_url="http://127.0.0.1:9", timeout=2.0,
        )  # fmt: skip
        return await executor.run(Job(command, {}, next_tier=0))


ARGS = {"channel": "C0123ABCD", "text": "hi"}


async def test_a_deadline_that_passes_while_credentials_are_read_sends_nothing() -> None:
    connector = RecordingSlack()
    outcome = await _run(connector, _command(ARGS, deadline_in=0.3), secrets=SlowSecrets(read=0.5))

    assert connector.sent == []
    assert outcome.status is ResultStatus.EXPIRED
    assert outcome.result.error.code is ErrorCode.DEADLINE_EXPIRED


async def test_a_deadline_that_passes_during_a_refresh_after_a_401_sends_no_second_request() -> None:
    connector = RecordingSlack(CredentialsExpired("slack chat.postMessage: invalid_auth"), oauth=True)
    command = _command(ARGS, deadline_in=0.3)
    outcome = await _run(connector, command, secrets=SlowSecrets(refresh=0.5))

    assert len(connector.sent) == 1 and connector.sent[0] < command.deadline.timestamp()
    assert outcome.status is ResultStatus.EXPIRED


async def test_an_expiry_keeps_what_the_last_upstream_answer_said() -> None:
    # A 429 asking for 100 s against a 10 s deadline: the worker gives up at once (the
    # next attempt would start past the deadline); the Result said only "deadline passed".
    limited = RetryableError(
        ErrorCode.UPSTREAM_RATE_LIMITED, "slack chat.postMessage: 429", retry_after=100.0, http_status=429
    )
    outcome = await _run(RecordingSlack(limited), _command(ARGS, deadline_in=10.0))
    assert outcome.status is ResultStatus.EXPIRED
    error = outcome.result.error
    assert error.code is ErrorCode.DEADLINE_EXPIRED
    assert (error.http_status, error.retry_after) == (429, 100.0)
    assert "upstream_rate_limited, HTTP 429, retry after 100s" in error.message


async def test_a_probe_the_connector_refuses_before_any_request_leaves_the_breaker_open() -> None:
    now = [0.0]
    breakers = CircuitBreakers(threshold=1, cooldown=5.0, clock=lambda: now[0])
    unavailable = RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, "slack chat.postMessage: 503")
    await _run(RecordingSlack(*[unavailable] * 5), _command(ARGS), breakers=breakers)
    assert breakers.is_open("acme")
    now[0] = 10.0  # cool-down over: the next command is the half-open probe

    # Neither text nor blocks: refused by the connector's own check, nothing sent.
    refused = RecordingSlack()
    outcome = await _run(refused, _command({"channel": "C0123ABCD"}), breakers=breakers)

    assert outcome.result.error.code is ErrorCode.INVALID_ARGUMENTS
    assert refused.sent == []
    assert breakers.is_open("acme")
    # The probe was freed, not kept: the next command is let through and decides.
    outcome = await _run(RecordingSlack(), _command(ARGS), breakers=breakers)
    assert outcome.status is ResultStatus.SUCCEEDED and not breakers.is_open("acme")
