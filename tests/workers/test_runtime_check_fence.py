"""Between a check for an earlier attempt's effect and the call: the time bound on the
check includes the connector's declared wait, the partition is fenced again before
acting, and a check that fails leaves the doubt as it was. The executor with a stand-in
connector and credentials (no Kafka, no HTTP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import pytest
from test_pool_connectors import _command

from core.errors import RetryableError
from core.vault import TenantSecret
from schemas import ErrorCode, ResultStatus
from schemas.topics import Topics
from workers._breaker import CircuitBreakers
from workers._execute import Abandoned, Executor, Job
from workers._retry import RetryPolicy
from workers.connectors._base import Connector, ConnectorCall, Doubt, Operation


class SlowIndexConnector(Connector):
    """Its check waits ``wait`` seconds (as Jira's does for its index) and finds nothing."""

    name: ClassVar[str] = "slack"
    operations: ClassVar[Mapping[str, Operation]] = {"chat.postMessage": Operation("post", {"type": "object"})}
    finds_done: ClassVar[bool] = True

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.checks = 0
        self.calls = 0

    def check_wait(self, doubt: Doubt) -> float:
        return self.wait

    async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
        self.checks += 1
        await asyncio.sleep(self.wait)
        return None

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        self.calls += 1
        return {"ok": True}


class Secrets:
    async def get(self, tenant_id: str) -> TenantSecret:
        return TenantSecret({"bot_token": "xoxb-test"}, 1)


def _job() -> Job:
    command = _command("slack", "chat.postMessage", "acme", {"channel": "#c", "text": "t"})
    return Job(command, {}, next_tier=0, doubt_settled_at=time.time())  # in doubt: checked first


async def _run(connector: Connector, still_ours: Any, *, call_timeout: float, attempts: int = 1) -> Any:
    async with aiohttp.ClientSession() as session:
        executor = Executor(
            connector, Topics("t."), Secrets(), CircuitBreakers(), session,  # type: ignore[arg-type]
            RetryPolicy(in_process_attempts=attempts, base_delay=0.01, tier_delays=(0.1,)),
            base_url="http://127.0.0.1:9", timeout=call_timeout,
        )  # fmt: skip
        return await executor.run(_job(), still_ours)


async def test_a_check_that_waits_longer_than_the_call_timeout_still_completes() -> None:
    connector = SlowIndexConnector(wait=1.5)

    async def ours() -> bool:
        return True

    outcome = await _run(connector, ours, call_timeout=0.5)  # bound: 0.5 + 1 + the declared 1.5 s

    assert outcome.status is ResultStatus.SUCCEEDED
    assert (connector.checks, connector.calls) == (1, 1)


async def test_a_partition_that_moved_during_the_check_is_left_to_its_new_owner() -> None:
    connector = SlowIndexConnector(wait=0.05)
    asked: list[bool] = []

    async def moved() -> bool:
        asked.append(False)
        return False

    with pytest.raises(Abandoned):
        await _run(connector, moved, call_timeout=2.0)

    assert (connector.checks, connector.calls) == (1, 0)  # checked, then not acted
    assert asked == [False]


class FlakyConnector(SlowIndexConnector):
    """Its first check fails with ``check_error``, or else its first call fails with
    ``call_error``; later checks find nothing and later calls succeed."""

    def __init__(self, *, check_error: BaseException | None = None, call_error: BaseException | None = None) -> None:
        super().__init__(wait=0.0)
        self.check_error, self.call_error = check_error, call_error
        self.doubts: list[Doubt] = []

    async def find_done(self, call: ConnectorCall, doubt: Doubt) -> dict[str, Any] | None:
        self.doubts.append(doubt)
        if self.check_error is not None:
            error, self.check_error = self.check_error, None
            raise error
        return None

    async def execute(self, call: ConnectorCall) -> dict[str, Any]:
        if self.call_error is not None:
            error, self.call_error = self.call_error, None
            raise error
        return await super().execute(call)


@pytest.mark.parametrize(
    "error",
    [
        RetryableError(ErrorCode.UPSTREAM_TIMEOUT, "search: no answer in 10.0s"),
        TimeoutError(),
        aiohttp.ClientConnectionError("reset"),
        ValueError("an odd answer"),
    ],
    ids=["timeout-reply", "timeout", "connection", "odd-answer"],
)
async def test_a_failed_check_sent_nothing_so_the_doubt_keeps_its_end(error: BaseException) -> None:
    connector = FlakyConnector(check_error=error)

    async def ours() -> bool:
        return True

    outcome = await _run(connector, ours, call_timeout=2.0, attempts=2)

    assert outcome.status is ResultStatus.SUCCEEDED
    assert connector.calls == 1
    first, second = connector.doubts  # checked twice
    # The same window: a read begun since the first check still answers the second, and
    # a connector's wait for its index is not started again.
    assert second == first


async def test_a_call_that_failed_ambiguously_moves_the_doubts_end() -> None:
    connector = FlakyConnector(call_error=TimeoutError())

    async def ours() -> bool:
        return True

    outcome = await _run(connector, ours, call_timeout=2.0, attempts=2)

    assert outcome.status is ResultStatus.SUCCEEDED
    first, second = connector.doubts
    # The timed-out call may have taken effect after the first check's read began: only a
    # read begun after it answers the second check.
    assert second.since == first.since and second.settled_at > first.settled_at
