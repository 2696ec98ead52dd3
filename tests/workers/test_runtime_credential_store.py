"""A credential store (Vault) that does not answer costs a command no attempt: the
executor waits for it, up to the command's deadline. The executor with a stand-in
connector and the real ``Credentials`` over a Vault stand-in (no Kafka, no HTTP)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from test_pool_connectors import _command
from test_runtime_check_fence import FlakyConnector

from core.errors import VaultUnavailable
from core.metrics import BreakerState
from core.vault import TenantSecret
from schemas import ResultStatus
from schemas.topics import Topics
from workers._breaker import CircuitBreakers
from workers._credentials import Credentials
from workers._execute import Abandoned, Executor, Job
from workers._retry import RetryPolicy


class DownVault:
    """Unreachable for its first ``down_for`` reads (as a stopped OpenBao is)."""

    def __init__(self, down_for: int) -> None:
        self.down_for = down_for
        self.reads = 0

    async def read(self, tenant_id: str) -> TenantSecret:
        self.reads += 1
        if self.reads <= self.down_for:
            raise VaultUnavailable("read acme/slack: Vault unreachable (ConnectionRefusedError)")
        return TenantSecret({"bot_token": "xoxb-test"}, 1)


async def _run(
    vault: DownVault, *, deadline_s: float = 120.0, still_ours: Any = None, watch: list[int] | None = None
) -> tuple[Any, Executor, list[str], CircuitBreakers]:
    command = _command("slack", "chat.postMessage", "acme", {"channel": "#c", "text": "t"})
    command = command.model_copy(update={"deadline": command.submitted_at + timedelta(seconds=deadline_s)})
    breakers = CircuitBreakers(threshold=1)
    outcomes: list[str] = []
    async with aiohttp.ClientSession() as session:
        executor = Executor(
            FlakyConnector(), Topics("t."), Credentials(vault), breakers, session,  # type: ignore[arg-type]
            RetryPolicy(in_process_attempts=2, base_delay=0.01, tier_delays=(0.1, 0.2)),
            base_url="http://127.0.0.1:9", timeout=2.0,
        )  # fmt: skip
        executor.credential_wait_max = 0.02
        executor.on_call = lambda outcome, operation, seconds: outcomes.append(outcome)

        async def sample() -> None:
            while True:
                if watch is not None:
                    watch.append(executor.waiting_for_credentials)
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        try:
            outcome = await executor.run(Job(command, {}, next_tier=0), still_ours)
        finally:
            sampler.cancel()
    return outcome, executor, outcomes, breakers


async def test_a_command_waits_out_a_credential_store_outage_without_spending_attempts() -> None:
    # Twelve failed reads: more than the in-process retries and every tier together,
    # which is how a pool used to dead-letter its commands a few minutes into an outage.
    vault = DownVault(down_for=12)
    watched: list[int] = []
    outcome, executor, outcomes, breakers = await _run(vault, watch=watched)

    assert outcome.status is ResultStatus.SUCCEEDED
    assert outcome.result is not None
    assert outcome.result.attempts == 1 and outcome.result.error is None
    assert vault.reads == 13
    assert outcomes == ["ok"]  # one call of the API, made once the store answered
    assert breakers.state_of("acme") is BreakerState.CLOSED  # not the tenant's API failing
    # Counted as waiting while it did, and no more once it ran.
    assert max(watched) == 1 and executor.waiting_for_credentials == 0


async def test_a_command_whose_deadline_passes_in_the_outage_expires() -> None:
    started = time.monotonic()
    outcome, executor, outcomes, _ = await _run(DownVault(down_for=10_000), deadline_s=0.3)

    assert outcome.status is ResultStatus.EXPIRED
    assert outcomes == [] and executor.waiting_for_credentials == 0
    assert time.monotonic() - started < 5.0  # ended at its deadline, not after the outage


async def test_a_command_whose_partition_moved_during_the_outage_is_left_to_its_new_owner() -> None:
    async def not_ours() -> bool:
        return False

    with pytest.raises(Abandoned):
        await _run(DownVault(down_for=10_000), still_ours=not_ours)
