"""What the executor tells the pool's metrics about each call of a connector's operation,
and that a half-open probe is never left taken. The executor with a stand-in connector
and credentials (no Kafka, no HTTP)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from test_pool_connectors import _command
from test_runtime_check_fence import FlakyConnector, Secrets

from core.errors import RetryableError
from core.metrics import BreakerState
from schemas import ErrorCode, ResultStatus
from schemas.topics import Topics
from workers._breaker import CircuitBreakers
from workers._execute import Executor, Job
from workers._retry import RetryPolicy


def _job(*, in_doubt: bool = False) -> Job:
    command = _command("slack", "chat.postMessage", "acme", {"channel": "#c", "text": "t"})
    return Job(command, {}, next_tier=0, doubt_settled_at=time.time() if in_doubt else None)


async def _run(
    connector: FlakyConnector, *, breakers: CircuitBreakers | None = None, attempts: int = 2, in_doubt: bool = False
) -> tuple[Any, list[str]]:
    outcomes: list[str] = []
    async with aiohttp.ClientSession() as session:
        executor = Executor(
            connector, Topics("t."), Secrets(), CircuitBreakers() if breakers is None else breakers, session,  # type: ignore[arg-type]
            RetryPolicy(in_process_attempts=attempts, base_delay=0.01, tier_delays=(0.1,)),
            base_url="http://127.0.0.1:9", timeout=2.0,
        )  # fmt: skip
        timed: list[tuple[str, float]] = []

        def called(outcome: str, operation: str, seconds: float) -> None:
            outcomes.append(outcome)
            timed.append((operation, seconds))

        executor.on_call = called
        outcome = await executor.run(_job(in_doubt=in_doubt))
    # Every call counted by outcome is timed too, under its operation.
    assert [operation for operation, _ in timed] == ["chat.postMessage"] * len(outcomes)
    assert all(0 <= seconds < 5 for _, seconds in timed)
    return outcome, outcomes


async def test_each_call_is_counted_once_by_outcome_and_a_check_is_not_a_call() -> None:
    failing = FlakyConnector(
        check_error=RetryableError(ErrorCode.UPSTREAM_TIMEOUT, "the read timed out"),
        call_error=RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, "503"),
    )
    # In doubt: the first check fails (not a call), the retry's check finds nothing, its
    # call answers 503, the third attempt's call succeeds.
    outcome, outcomes = await _run(failing, attempts=3, in_doubt=True)

    assert outcome.status is ResultStatus.SUCCEEDED
    assert outcomes == ["upstream_unavailable", "ok"]


async def test_a_fault_in_the_connector_counts_as_internal_and_frees_the_probe() -> None:
    now = [0.0]
    breakers = CircuitBreakers(threshold=1, cooldown=5.0, clock=lambda: now[0])
    breakers.failure("acme")  # open
    now[0] = 10.0  # cool-down over: the next command is the probe

    with pytest.raises(RuntimeError):
        await _run(FlakyConnector(call_error=RuntimeError("a bug")), breakers=breakers)

    assert breakers.state_of("acme") is not BreakerState.HALF_OPEN
    # The next command is let through as the probe, and its success closes the breaker.
    outcome, _ = await _run(FlakyConnector(), breakers=breakers)
    assert outcome.status is ResultStatus.SUCCEEDED and not breakers.is_open("acme")


async def test_the_outcome_of_a_crashed_call_is_internal() -> None:
    outcomes: list[str] = []
    async with aiohttp.ClientSession() as session:
        executor = Executor(
            FlakyConnector(call_error=RuntimeError("a bug")), Topics("t."), Secrets(),  # type: ignore[arg-type]
            CircuitBreakers(), session, RetryPolicy(in_process_attempts=1, tier_delays=(0.1,)),
            base_url="http://127.0.0.1:9",
        )  # fmt: skip
        executor.on_call = lambda outcome, operation, seconds: outcomes.append(outcome)
        with pytest.raises(RuntimeError):  # the pool turns it into an internal failure
            await executor.run(_job())
    assert outcomes == ["internal"]


class BrokenError(RetryableError):
    """An error whose handling itself fails (as a status ErrorInfo refused once did)."""

    def to_info(self) -> Any:
        raise ValueError("cannot describe this error")


async def test_a_fault_while_handling_the_probes_error_still_frees_the_probe() -> None:
    now = [0.0]
    breakers = CircuitBreakers(threshold=1, cooldown=5.0, clock=lambda: now[0])
    breakers.failure("acme")
    now[0] = 10.0

    with pytest.raises(ValueError):
        await _run(FlakyConnector(call_error=BrokenError(ErrorCode.UPSTREAM_UNAVAILABLE, "5xx")), breakers=breakers)

    assert breakers.state_of("acme") is not BreakerState.HALF_OPEN


async def test_an_upstream_status_outside_http_is_described_not_raised() -> None:
    error = RetryableError(ErrorCode.UPSTREAM_UNAVAILABLE, "HTTP 600", http_status=600, retry_after=-1.0)
    info = error.to_info()
    assert (info.http_status, info.retry_after) == (None, 0.0)


async def test_a_metric_that_fails_does_not_change_the_result() -> None:
    async with aiohttp.ClientSession() as session:
        executor = Executor(
            FlakyConnector(), Topics("t."), Secrets(), CircuitBreakers(), session,  # type: ignore[arg-type]
            RetryPolicy(in_process_attempts=1, tier_delays=(0.1,)), base_url="http://127.0.0.1:9",
        )  # fmt: skip

        def broken(outcome: str, operation: str, seconds: float) -> None:
            raise RuntimeError("metrics are down")

        executor.on_call = broken
        outcome = await executor.run(_job())
    assert outcome.status is ResultStatus.SUCCEEDED


class GatedConnector(FlakyConnector):
    """Its calls wait until the gate opens."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def execute(self, call: Any) -> dict[str, Any]:
        self.entered.set()
        await self.gate.wait()
        return await super().execute(call)


async def test_a_command_let_in_before_the_opening_does_not_end_a_later_probe() -> None:
    now = [0.0]
    breakers = CircuitBreakers(threshold=1, cooldown=5.0, clock=lambda: now[0])
    connector = GatedConnector()
    early = asyncio.create_task(_run(connector, breakers=breakers))
    await asyncio.wait_for(connector.entered.wait(), 5)
    breakers.failure("acme")  # another command's failure opens the breaker meanwhile
    now[0] = 10.0
    assert breakers.allow("acme")  # and a probe goes out after the cool-down
    connector.gate.set()

    outcome, _ = await asyncio.wait_for(early, 5)

    assert outcome.status is ResultStatus.SUCCEEDED
    assert breakers.state_of("acme") is BreakerState.HALF_OPEN  # the probe still decides
