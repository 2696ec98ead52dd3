"""What a pool reports about each command it ends or hands on: metrics, the tenant's log
line and the trace, including for a command whose execution crashed."""

from __future__ import annotations

from typing import Any

import pytest
from _runtime_support import (
    Upstream,
    command,
    eventually,
    pool_running,
    produce,
    put_tenant,
    wait_results,
)

from core.metrics import Metrics
from schemas import ErrorCode, ResultStatus
from workers._pool import PoolOptions

pytestmark = pytest.mark.integration


class TenantLines:
    """Stands in for the tenant log publisher: keeps what the pool publishes."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def publish(self, level: str, message: str, **fields: Any) -> None:
        self.lines.append({"level": level, "message": message, **fields})


async def test_a_crashed_command_is_counted_logged_and_traced_as_failed(settings, vault_admin) -> None:
    upstream, metrics, lines = Upstream(), Metrics("worker-echo"), TenantLines()
    async with upstream.running():
        tenant = f"cr{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        crashing = command(tenant, crash=True)
        async with pool_running(settings, vault_admin, upstream, metrics=metrics) as pool:
            pool.tenant_logs = lines
            await produce(settings, [crashing])
            [result] = (await wait_results(settings, {crashing.command_id}))[crashing.command_id]
            await eventually(lambda: lines.lines)
    assert result.status is ResultStatus.FAILED and result.error is not None
    assert result.error.code is ErrorCode.INTERNAL
    [route] = [s for s in result.spans if s.name == "router.route"]  # still in the command's trace
    assert result.trace_id == route.trace_id
    exposition = metrics.exposition().decode()
    assert f'switchyard_commands_failed_total{{code="internal",connector="echo",space="space1",tenant="{tenant}"}} 1.0' in exposition
    # The pool's own gauges and the call's time are wired to its metrics.
    assert f'switchyard_worker_slots{{connector="echo"}} {float(pool.concurrency)}' in exposition
    assert 'switchyard_waiting_for_credentials{connector="echo"} 0.0' in exposition
    assert 'switchyard_upstream_call_seconds_count{connector="echo",' in exposition
    [line] = lines.lines
    assert (line["status"], line["code"], line["trace_id"]) == ("failed", "internal", result.trace_id)


async def test_a_retry_hand_off_is_logged_with_the_error_that_caused_it(settings, vault_admin) -> None:
    options = PoolOptions(tier_delays=(0.2,), in_process_attempts=1)
    upstream, lines = Upstream(), TenantLines()
    async with upstream.running():
        tenant = f"rt{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        flaky = command(tenant, faults=[503])
        async with pool_running(settings, vault_admin, upstream, options=options) as pool:
            pool.tenant_logs = lines
            await produce(settings, [flaky])
            [result] = (await wait_results(settings, {flaky.command_id}))[flaky.command_id]
            await eventually(lambda: len(lines.lines) == 2)
    handed, final = lines.lines
    assert (handed["status"], handed["code"]) == ("retry_scheduled", "upstream_unavailable")
    assert "503" in handed["message"] or "unavailable" in handed["message"]
    assert handed["trace_id"] == final["trace_id"] == result.trace_id is not None
    assert (final["status"], final["code"]) == ("succeeded", None)
