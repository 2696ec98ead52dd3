"""What an earlier attempt did upstream (a Slack message, a Gmail message, a GitHub or Jira
issue, a Notion page in a database) is found, not done again: after another owner of the partition may have started
the command, and (Slack) after a reply lost in transit.

Real Kafka, OpenBao and the emulator (which keeps what was posted, sent or created and
counts each side effect per idempotency key).
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

from core.metrics import Metrics
from schemas import ResultStatus, RoutedCommand
from workers._execute import upstream_idempotency_key
from workers._pool import PoolOptions, WorkerPool
from workers.connectors import ConnectorCall, get_connector
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


def _effects(emulator: RunningEmulator, name: str, commands: list[RoutedCommand]) -> Counter[int]:
    per_key = emulator.state.effects.get(name, {})
    return Counter(per_key.get(upstream_idempotency_key(c), 0) for c in commands)


# connector -> (credentials for a token, arguments of command i, upstream reads for all six)
_EFFECTS = {
    "slack": (lambda token: {"bot_token": token},
              lambda i: {"channel": "#daily", "text": f"summary {i}"}, 2),  # list + one page
    "github": (lambda token: {"token": token},
               lambda i: {"owner": "octo", "repo": "hello", "title": f"summary {i}"}, 1),
    "jira": (lambda token: {"access_token": token},
             lambda i: {"project_key": "DAILY", "summary": f"summary {i}"}, 1),
    "gmail": (lambda token: {"access_token": token},
              lambda i: {"to": "team@example.com", "subject": f"summary {i}", "body": "."}, 1 + 3),
    "notion": (lambda token: {"token": token},
               lambda i: {"database_id": "2f26ee68df304251aad48ddc420cba3d", "title": f"summary {i}",
                          "key_property": "Switchyard key"}, 1),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(_EFFECTS))
async def test_what_a_previous_owner_did_is_found_and_not_done_again(settings, vault_admin, name) -> None:
    credentials, arguments, reads = _EFFECTS[name]
    connector = get_connector(name)()
    operation = next(iter(connector.operations))
    async with run_emulator() as emulator:
        tenant = f"fo{name[:2]}{settings.topic_prefix[1:9]}"
        token = f"tok-{tenant}"
        emulator.state.add_token({"connector": name, "token": token, "tenant": tenant})
        await vault_admin.put_credentials(tenant, name, credentials(token))
        commands = [_command(name, operation, tenant, arguments(i)) for i in range(6)]
        # A previous owner made the first three calls, then died before their Results committed.
        async with aiohttp.ClientSession() as session:
            earlier = {
                c.command_id: await connector.execute(ConnectorCall(
                    tenant_id=tenant, operation=operation, arguments=c.resolved_arguments,
                    credentials=credentials(token), base_url=emulator.base_url,
                    idempotency_key=upstream_idempotency_key(c), session=session,
                ))  # fmt: skip
                for c in commands[:3]
            }
        await _produce(settings, commands)
        fresh = get_connector(name)()
        async with connector_pool_running(settings, vault_admin, fresh, emulator.base_url, None):
            await wait_results(settings, {c.command_id for c in commands})
        results = await all_results(settings)

        assert Counter(len(results[c.command_id]) for c in commands) == {1: 6}
        assert all(results[c.command_id][0].status is ResultStatus.SUCCEEDED for c in commands)
        for command in commands[:3]:
            assert results[command.command_id][0].output == earlier[command.command_id]
        assert _effects(emulator, name, commands) == {1: 6}  # each effect once
        assert fresh.reads == reads  # shared by all six commands in doubt


@pytest.mark.parametrize("name", ["slack", "notion", "jira"])  # Notion and Jira wait for their index
async def test_a_reply_lost_in_transit_is_found_before_a_retry_acts_again(settings, vault_admin, name) -> None:
    credentials, arguments, _ = _EFFECTS[name]
    options = PoolOptions(tier_delays=(0.2, 0.5), breaker_threshold=1_000, doubt_clock_skew=0.0)
    async with run_emulator() as emulator:
        tenant = f"fl{name[:2]}{settings.topic_prefix[1:9]}"
        token = f"tok-{tenant}"
        emulator.state.add_token({"connector": name, "token": token, "tenant": tenant})
        await vault_admin.put_credentials(tenant, name, credentials(token))
        connector = get_connector(name)()
        operation = next(iter(connector.operations))
        async with connector_pool_running(
            settings, vault_admin, connector, emulator.base_url, None, options=options
        ) as pool:
            await eventually(lambda: bool(pool.consumer.assignment()) and not pool._settling)  # noqa: SLF001
            await asyncio.sleep(0.05)  # commands stamped after the assignment: none in doubt
            plain = [_command(name, operation, tenant, arguments(i)) for i in range(3)]
            await _produce(settings, plain)
            await wait_results(settings, {c.command_id for c in plain})
            reads_without_doubt = connector.reads

            pool.metrics = Metrics("worker")
            emulator.state.add_fault({"connector": name, "tenant": tenant, "kind": "lost_reply", "count": 2})
            cut = [_command(name, operation, tenant, arguments(i)) for i in range(3, 5)]
            await _produce(settings, cut)
            await wait_results(settings, {c.command_id for c in cut})
        results = await all_results(settings)

        assert reads_without_doubt == 0
        assert Counter(len(results[c.command_id]) for c in plain + cut) == {1: 5}
        for command in cut:
            (result,) = results[command.command_id]
            assert result.status is ResultStatus.SUCCEEDED
            assert result.attempts == 2
            assert result.output  # what the lost reply would have said, found upstream
        assert _effects(emulator, name, plain + cut) == {1: 5}
        lost = [c for c in emulator.state.calls if c["summary"].get("reply_lost")]
        assert len(lost) == 2
        found = pool.metrics.registry.get_sample_value(
            "switchyard_effects_found_total", {"tenant": tenant, "space": "s1", "connector": name}
        )
        assert found == 2


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


async def test_a_command_handed_to_a_retry_tier_in_doubt_checks_again_there(settings, vault_admin) -> None:
    async with run_emulator() as emulator:
        tenant, token = await _tenant(settings, vault_admin, emulator, "ft")
        (command,) = _posts(tenant, 1)
        async with aiohttp.ClientSession() as session:
            earlier = await SlackConnector().execute(ConnectorCall(
                tenant_id=tenant, operation=command.operation, arguments=command.resolved_arguments,
                credentials={"bot_token": token}, base_url=emulator.base_url,
                idempotency_key=upstream_idempotency_key(command), session=session,
            ))  # fmt: skip
        # Both in-process checks are rate limited (not ambiguous): the record goes to a tier,
        # whose run must still check rather than post.
        emulator.state.add_fault({"connector": "slack", "tenant": tenant, "kind": "429", "count": 2})
        await _produce(settings, [command])
        # No clock margin: the tier record, written after the assignment, is not in doubt
        # by its time, only by what the hand-off carries.
        options = PoolOptions(tier_delays=(0.2, 0.5), breaker_threshold=1_000, doubt_clock_skew=0.0)
        async with connector_pool_running(
            settings, vault_admin, SlackConnector(), emulator.base_url, None, options=options
        ):
            await wait_results(settings, {command.command_id})
        (result,) = (await all_results(settings))[command.command_id]

        assert result.status is ResultStatus.SUCCEEDED
        assert result.output == earlier
        assert result.attempts == 3  # two rate-limited checks here, the found one on the tier
        assert _effects(emulator, "slack", [command]) == {1: 1}
