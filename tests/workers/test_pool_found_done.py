"""A Slack message an earlier attempt posted is found, not posted again: after another
owner of the partition may have started the command, and after a reply lost in transit.

Real Kafka, OpenBao and the Slack emulator (which keeps what was posted and counts each
post per idempotency key).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

import aiohttp
import pytest
from _runtime_support import all_results, connector_pool_running, eventually, wait_results
from aiokafka import TopicPartition
from test_pool_connectors import _command, _produce

from schemas import ResultStatus, RoutedCommand
from workers._execute import upstream_idempotency_key
from workers._pool import PoolOptions, WorkerPool
from workers.connectors import ConnectorCall
from workers.connectors.slack import SlackConnector
from workers.emulators import RunningEmulator
from workers.emulators.testing import run_emulator

pytestmark = pytest.mark.integration


async def _tenant(settings, vault_admin, emulator: RunningEmulator, name: str) -> tuple[str, str]:
    tenant = f"{name}{settings.topic_prefix[1:9]}"
    token = f"xoxb-{tenant}"
    emulator.state.add_token({"connector": "slack", "token": token, "tenant": tenant})
    await vault_admin.put_credentials(tenant, "slack", {"bot_token": token})
    return tenant, token


def _posts(tenant: str, count: int) -> list[RoutedCommand]:
    return [
        _command("slack", "chat.postMessage", tenant, {"channel": "#daily", "text": f"summary {i}"})
        for i in range(count)
    ]


def _effects(emulator: RunningEmulator, commands: list[RoutedCommand]) -> Counter[int]:
    per_key = emulator.state.effects.get("slack", {})
    return Counter(per_key.get(upstream_idempotency_key(c), 0) for c in commands)


async def test_what_a_previous_owner_posted_is_found_and_not_posted_again(settings, vault_admin) -> None:
    async with run_emulator() as emulator:
        tenant, token = await _tenant(settings, vault_admin, emulator, "fo")
        commands = _posts(tenant, 6)
        # A previous owner posted the first three, then died before their Results committed.
        async with aiohttp.ClientSession() as session:
            earlier = {
                c.command_id: await SlackConnector().execute(ConnectorCall(
                    tenant_id=tenant, operation=c.operation, arguments=c.resolved_arguments,
                    credentials={"bot_token": token}, base_url=emulator.base_url,
                    idempotency_key=upstream_idempotency_key(c), session=session,
                ))  # fmt: skip
                for c in commands[:3]
            }
        await _produce(settings, commands)
        slack = SlackConnector()
        async with connector_pool_running(settings, vault_admin, slack, emulator.base_url, None):
            await wait_results(settings, {c.command_id for c in commands})
        results = await all_results(settings)

        assert Counter(len(results[c.command_id]) for c in commands) == {1: 6}
        assert all(results[c.command_id][0].status is ResultStatus.SUCCEEDED for c in commands)
        for command in commands[:3]:
            assert results[command.command_id][0].output == earlier[command.command_id]
        assert _effects(emulator, commands) == {1: 6}  # each message posted once
        assert slack.lookup.reads == 2  # the channel list and one history page, for all six


async def test_a_reply_lost_in_transit_is_found_before_a_retry_posts_again(settings, vault_admin) -> None:
    options = PoolOptions(tier_delays=(0.2, 0.5), breaker_threshold=1_000, doubt_clock_skew=0.0)
    async with run_emulator() as emulator:
        tenant, _ = await _tenant(settings, vault_admin, emulator, "fl")
        slack = SlackConnector()
        async with connector_pool_running(
            settings, vault_admin, slack, emulator.base_url, None, options=options
        ) as pool:
            await eventually(lambda: bool(pool.consumer.assignment()) and not pool._settling)  # noqa: SLF001
            await asyncio.sleep(0.05)  # commands stamped after the assignment: none in doubt
            plain = _posts(tenant, 3)
            await _produce(settings, plain)
            await wait_results(settings, {c.command_id for c in plain})
            reads_without_doubt = slack.lookup.reads

            emulator.state.add_fault({"connector": "slack", "tenant": tenant, "kind": "lost_reply", "count": 2})
            cut = _posts(tenant, 2)
            await _produce(settings, cut)
            await wait_results(settings, {c.command_id for c in cut})
        results = await all_results(settings)

        assert reads_without_doubt == 0
        assert Counter(len(results[c.command_id]) for c in plain + cut) == {1: 5}
        for command in cut:
            (result,) = results[command.command_id]
            assert result.status is ResultStatus.SUCCEEDED
            assert result.attempts == 2
            assert result.output is not None and result.output["ts"]
        assert _effects(emulator, plain + cut) == {1: 5}
        lost = [c for c in emulator.state.calls if c["summary"].get("reply_lost")]
        assert len(lost) == 2


def test_only_the_first_records_written_before_the_assignment_are_in_doubt() -> None:
    pool = WorkerPool.__new__(WorkerPool)  # only the doubt bookkeeping is exercised
    pool.options = PoolOptions(doubt_clock_skew=1.0)
    tp = TopicPartition("slack", 0)

    def record(written_at: float) -> SimpleNamespace:
        return SimpleNamespace(timestamp=int(written_at * 1000))

    pool._doubtful = {tp: [1000.0, 2.0]}  # settled at 1000 s, two records may be in doubt
    assert pool._doubt_of(tp, record(990.0)) == 1000.0
    assert pool._doubt_of(tp, record(1000.5)) == 1000.0  # within another host's clock skew
    assert pool._doubt_of(tp, record(995.0)) is None  # past the window
    assert tp not in pool._doubtful

    pool._doubtful = {tp: [1000.0, 5.0]}
    assert pool._doubt_of(tp, record(1001.5)) is None  # written after: so is the rest
    assert pool._doubt_of(tp, record(990.0)) is None
