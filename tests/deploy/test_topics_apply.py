"""``switchyard topics apply`` against the real broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from core.errors import ConfigurationError, KafkaUnavailable
from core.kafka import ensure_topics, make_admin
from core.settings import Settings
from ingress.models import MAX_DEADLINE_SECONDS
from schemas import CONNECTORS, RETRY_TIERS
from switchyard.topics import (
    DLQ_RETENTION_MS,
    LOGS_RETENTION_MS,
    RESULTS_RETENTION_MS,
    apply_topics,
    desired_topics,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client that deletes this test's topics afterwards (the broker is shared)."""
    client = make_admin(settings)
    await client.start()
    try:
        yield client
    finally:
        mine = [t for t in await client.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            await client.delete_topics(mine)
        await client.close()


async def _configs(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    [resource] = response.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


async def _set_config(admin: AIOKafkaAdminClient, name: str, configs: dict[str, str]) -> None:
    responses = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)]
    )
    errors = [r for x in responses for r in x.to_object()["resources"] if r["error_code"]]
    assert not errors, errors
    # KRaft brokers apply a config change a little after the controller acknowledges it.
    async with asyncio.timeout(10):
        for _ in range(1000):
            current = await _configs(admin, name)
            if all(current.get(key) == value for key, value in configs.items()):
                return
            await asyncio.sleep(0.02)


async def _partitions(admin: AIOKafkaAdminClient, name: str) -> int:
    [topic] = await admin.describe_topics([name])
    return len(topic["partitions"])


def _changelogs(settings: Settings) -> list[str]:
    """The router's faust table changelogs (``<app id>-<table>-changelog``, app id
    ``<prefix>router``), spelled out: the names faust gives them, not ours."""
    return [f"{settings.topic_prefix}router-{table}-changelog" for table in ("dedup", "usage")]


def test_desired_state_covers_every_topic_with_its_configs(settings: Settings) -> None:
    specs = {s.name: s for s in desired_topics(settings)}
    topics = settings.topics
    # commands, config, results, dlq, logs, cancels, the router's two changelogs; per pool:
    # connector, tiers, parked
    assert len(specs) == 8 + len(CONNECTORS) * (1 + len(RETRY_TIERS) + 1)
    assert set(specs) == set(topics.all_for(CONNECTORS))
    assert specs[topics.config].configs["cleanup.policy"] == "compact"
    assert all(specs[name].configs["cleanup.policy"] == "compact" for name in _changelogs(settings))
    assert specs[topics.results].configs["retention.ms"] == str(RESULTS_RETENTION_MS)
    assert specs[topics.dead_letters].configs["retention.ms"] == str(DLQ_RETENTION_MS)
    assert specs[topics.logs].configs["retention.ms"] == str(LOGS_RETENTION_MS)
    # A cancellation is kept longer than any command's deadline (ingress.models).
    assert int(specs[topics.cancels].configs["retention.ms"]) > MAX_DEADLINE_SECONDS * 1000
    assert RESULTS_RETENTION_MS == 7 * 86_400_000 and DLQ_RETENTION_MS == 14 * 86_400_000
    assert all(s.partitions == settings.topic_partitions for s in specs.values())
    assert all(s.configs["min.insync.replicas"] == "1" for s in specs.values())


def test_min_insync_replicas_is_two_at_most(settings: Settings) -> None:
    for rf, expected in ((1, "1"), (2, "2"), (3, "2"), (5, "2")):
        wide = settings.model_copy(update={"replication_factor": rf})
        assert {s.configs["min.insync.replicas"] for s in desired_topics(wide)} == {expected}
        assert {s.replication_factor for s in desired_topics(wide)} == {rf}


async def test_first_apply_creates_every_topic_and_second_apply_is_a_noop(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    first = await apply_topics(settings)
    assert {a.action for a in first.actions} == {"create"}
    assert len(first.actions) == len(settings.topics.all_for(CONNECTORS))

    existing = set(await admin.list_topics())
    assert set(settings.topics.all_for(CONNECTORS)) <= existing
    assert (await _configs(admin, settings.topics.config))["cleanup.policy"] == "compact"
    logs = await _configs(admin, settings.topics.logs)
    assert logs["retention.ms"] == str(LOGS_RETENTION_MS)
    assert await _partitions(admin, settings.topics.commands) == settings.topic_partitions
    assert await _partitions(admin, settings.topics.config) == settings.topic_partitions

    second = await apply_topics(settings)
    assert second.is_noop, second.render()
    assert {a.action for a in second.actions} == {"ok"}


async def test_a_changed_retention_is_altered_back_and_unmanaged_configs_are_kept(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    await apply_topics(settings, connectors=("slack",))
    results = settings.topics.results
    await _set_config(
        admin, results, {"retention.ms": "3600000", "max.message.bytes": "2000000"}
    )

    plan = await apply_topics(settings, connectors=("slack",))

    [change] = plan.changes
    assert change.name == results and change.action == "alter"
    assert change.config_changes == {"retention.ms": ["3600000", str(RESULTS_RETENTION_MS)]}
    after = await _configs(admin, results)
    assert after["retention.ms"] == str(RESULTS_RETENTION_MS)
    assert after["max.message.bytes"] == "2000000"
    assert (await apply_topics(settings, connectors=("slack",))).is_noop


async def test_dry_run_prints_the_plan_and_changes_nothing(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    empty = await apply_topics(settings, dry_run=True, connectors=("slack",))
    assert {a.action for a in empty.actions} == {"create"}
    assert not [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]

    await apply_topics(settings, connectors=("slack",))
    await _set_config(admin, settings.topics.dead_letters, {"retention.ms": "60000"})
    planned = await apply_topics(settings, dry_run=True, connectors=("slack",))

    assert [a.name for a in planned.changes] == [settings.topics.dead_letters]
    assert "alter" in planned.render() and "would change" in planned.render()
    assert (await _configs(admin, settings.topics.dead_letters))["retention.ms"] == "60000"


async def test_partitions_grow_only_when_asked_and_never_shrink(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    await apply_topics(settings, connectors=("slack",))
    commands = settings.topics.commands
    wider = settings.model_copy(update={"topic_partitions": settings.topic_partitions + 1})

    unasked = await apply_topics(wider, connectors=("slack",))
    assert unasked.is_noop
    assert any("--increase-partitions" in w for w in unasked.by_name()[commands].warnings)
    assert await _partitions(admin, commands) == settings.topic_partitions

    asked = await apply_topics(wider, connectors=("slack",), increase_partitions=True)
    assert asked.by_name()[commands].action == "alter"
    assert await _partitions(admin, commands) == wider.topic_partitions

    narrower = await apply_topics(settings, connectors=("slack",), increase_partitions=True)
    assert narrower.is_noop
    assert any("never decreased" in w for w in narrower.by_name()[commands].warnings)
    assert await _partitions(admin, commands) == wider.topic_partitions


async def test_router_changelogs_are_compacted_and_grow_with_the_commands_topic(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    # A changelog with fewer partitions than the commands topic crashes the router on the
    # first command of a partition it lacks (its dedup write names that partition).
    changelogs = _changelogs(settings)
    created = await apply_topics(settings, connectors=("slack",))
    for name in changelogs:
        assert created.by_name()[name].action == "create"
        assert (await _configs(admin, name))["cleanup.policy"] == "compact"
        assert await _partitions(admin, name) == settings.topic_partitions

    wider = settings.model_copy(update={"topic_partitions": settings.topic_partitions + 1})
    planned = await apply_topics(wider, connectors=("slack",), increase_partitions=True, dry_run=True)
    render = planned.render()
    for name in (settings.topics.commands, *changelogs):
        assert planned.by_name()[name].action == "alter"
        assert f"{name} partitions: {settings.topic_partitions} -> {wider.topic_partitions}" in render
        assert await _partitions(admin, name) == settings.topic_partitions

    grown = await apply_topics(wider, connectors=("slack",), increase_partitions=True)
    for name in (settings.topics.commands, *changelogs):
        assert grown.by_name()[name].to_dict()["current_partitions"] == settings.topic_partitions
        assert await _partitions(admin, name) == wider.topic_partitions
    assert (await apply_topics(wider, connectors=("slack",))).is_noop


async def test_missing_changelogs_get_the_commands_topics_count_not_the_settings(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    # faust co-partitions only topics of equal counts: a changelog created wider than the
    # commands topic would be recovered apart from the partition it serves.
    await ensure_topics(settings, [settings.topics.commands])
    # Created on the controller; seen by the broker that answers the apply's describe a
    # moment later (CI once planned "create" for it, with no warning).
    async with asyncio.timeout(10):
        for _ in range(1000):
            if await _partitions(admin, settings.topics.commands) == settings.topic_partitions:
                break
            await asyncio.sleep(0.05)
    wider = settings.model_copy(update={"topic_partitions": settings.topic_partitions + 1})
    plan = await apply_topics(wider, connectors=("slack",))
    assert any("--increase-partitions" in w for w in plan.by_name()[settings.topics.commands].warnings)
    for name in _changelogs(settings):
        assert plan.by_name()[name].action == "create"
        assert plan.by_name()[name].partitions == settings.topic_partitions
        assert await _partitions(admin, name) == settings.topic_partitions


async def test_changelogs_follow_a_commands_topic_grown_outside_topics_apply(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    # The state an apply of before left behind (commands grown, changelogs not), or a
    # `kafka-topics --alter`: the changelogs are brought to the commands topic's count even
    # when the settings still name the old one (partitions are never decreased).
    await apply_topics(settings, connectors=("slack",))
    commands = settings.topics.commands
    await admin.create_partitions({commands: NewPartitions(total_count=settings.topic_partitions + 1)})
    async with asyncio.timeout(10):
        for _ in range(1000):
            if await _partitions(admin, commands) == settings.topic_partitions + 1:
                break
            await asyncio.sleep(0.05)

    unasked = await apply_topics(settings, connectors=("slack",))
    for name in _changelogs(settings):
        assert any("--increase-partitions" in w for w in unasked.by_name()[name].warnings)
        assert await _partitions(admin, name) == settings.topic_partitions

    asked = await apply_topics(settings, connectors=("slack",), increase_partitions=True)
    for name in _changelogs(settings):
        assert asked.by_name()[name].action == "alter"
        assert await _partitions(admin, name) == settings.topic_partitions + 1
    assert (await apply_topics(settings, connectors=("slack",), increase_partitions=True)).is_noop


async def test_a_replication_factor_above_the_broker_count_is_refused_clearly(
    settings: Settings, admin: AIOKafkaAdminClient
) -> None:
    impossible = settings.model_copy(update={"replication_factor": 7})
    with pytest.raises(ConfigurationError, match="InvalidReplicationFactor"):
        await apply_topics(impossible, connectors=("slack",))


async def test_cli_dry_run_prints_a_json_plan(
    settings: Settings, stack_env: dict[str, str], admin: AIOKafkaAdminClient
) -> None:
    env = {**stack_env, "SWITCHYARD_TOPIC_PREFIX": settings.topic_prefix, "PATH": "/usr/bin:/bin"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchyard.cli", "topics", "apply", "--dry-run", "--json",
        "--partitions", "2", "--logs-retention-hours", "1",
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    plan = json.loads(out)
    assert plan["dry_run"] is True
    assert plan["changes"] == len(settings.topics.all_for(CONNECTORS))
    by_name = {t["topic"]: t for t in plan["topics"]}
    assert by_name[settings.topics.logs]["action"] == "create"
    assert by_name[settings.topics.logs]["config_changes"]["retention.ms"] == [None, "3600000"]
    assert by_name[settings.topics.commands]["partitions"] == 2
    for name in _changelogs(settings):
        assert by_name[name]["action"] == "create"
        assert by_name[name]["partitions"] == 2
        assert by_name[name]["config_changes"]["cleanup.policy"] == [None, "compact"]
    assert not [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]


async def test_an_unreachable_broker_is_reported_as_kafka_unavailable(settings: Settings) -> None:
    nowhere = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        await apply_topics(nowhere, dry_run=True)


class _LaggingAdmin:
    """An admin whose broker answering describe_configs does not know topic "b" yet, as a
    broker of a 3-node cluster answers right after the controller created it."""

    async def list_topics(self) -> list[str]:
        return ["a", "b"]

    async def describe_topics(self, names: list[str]) -> list[dict[str, object]]:
        return [{"error_code": 0, "topic": n, "partitions": [{"replicas": [1]}]} for n in names]

    async def describe_configs(self, resources: list[ConfigResource]) -> list[object]:
        class Response:
            def to_object(self) -> dict[str, object]:
                return {"resources": [
                    {"error_code": 3 if r.name == "b" else 0, "error_message": None, "resource_name": r.name,
                     "config_entries": []}
                    for r in resources
                ]}  # fmt: skip

        return [Response()]


async def test_a_topic_a_broker_does_not_know_yet_reads_absent_while_settling_only() -> None:
    from switchyard.topics import _describe

    settling = await _describe(_LaggingAdmin(), ["a", "b"], settling=True)
    assert set(settling) == {"a"}  # "b" is still pending: asked again
    with pytest.raises(ConfigurationError, match="UnknownTopicOrPartition"):
        await _describe(_LaggingAdmin(), ["a", "b"])
