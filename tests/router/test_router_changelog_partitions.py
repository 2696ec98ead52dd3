"""A table changelog with fewer partitions than the commands topic is refused at start.

The router writes each dedup and usage entry to the changelog partition numbered like
the command's own (``router._state``). After the commands topic grew outside ``switchyard
topics apply`` (or by an apply that did not manage the changelogs), a command in a new
partition made that write fail (aiokafka's ``AssertionError('Unrecognized partition')``)
after the router had said it was ready; the command stayed uncommitted, so every restart,
and every replica taking the partition, crashed on it again.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest
from _router_support import RouterProcess, command, prepare_topics, publish
from aiokafka.admin import NewPartitions

from core.errors import ConfigurationError
from core.kafka import ensure_topics, keyed_partition, make_admin
from core.settings import Settings, load_settings
from router.app import create_app


def _changelogs(settings: Settings) -> list[str]:
    return [f"{settings.topic_prefix}router-{table}-changelog" for table in ("dedup", "usage")]


async def _grown_commands_only(settings: Settings) -> None:
    """Topics as a deployment of ``settings.topic_partitions - 1`` partitions left them,
    then the commands topic alone grown to ``settings.topic_partitions``."""
    before = settings.model_copy(update={"topic_partitions": settings.topic_partitions - 1})
    await prepare_topics(before)
    changelogs = _changelogs(before)
    compact = {"cleanup.policy": "compact"}
    await ensure_topics(before, changelogs, configs=dict.fromkeys(changelogs, compact))
    admin = make_admin(settings)
    await admin.start()
    try:
        commands = settings.topics.commands
        await admin.create_partitions({commands: NewPartitions(total_count=settings.topic_partitions)})
        async with asyncio.timeout(15):
            while True:
                [described] = await admin.describe_topics([commands])
                if len(described["partitions"]) == settings.topic_partitions:
                    break
                await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def test_the_router_refuses_to_start_on_a_changelog_behind_the_commands_topic(
    own_settings: Settings, tmp_path: Path
) -> None:
    settings = own_settings  # 3 partitions; the changelogs get 2
    await _grown_commands_only(settings)
    # A command in the new partition: the one the router crashed on (its tenant needs no
    # workspace: a refused command gets a dedup entry too).
    tenant = next(
        t
        for t in (f"t{uuid.uuid4().hex[:8]}" for _ in range(1000))
        if keyed_partition(t.encode(), settings.topic_partitions) == settings.topic_partitions - 1
    )
    await publish(settings, [command(tenant)])

    process = RouterProcess(settings, tmp_path).start()
    assert process.proc is not None
    try:
        await asyncio.to_thread(process.proc.wait, 90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the router kept running:\n{process.story()}")
    finally:
        if process.proc.poll() is None:
            process.terminate()
    logs = process.logs()
    assert process.proc.returncode != 0, process.story()
    assert "Unrecognized partition" not in logs, process.story()
    assert "router ready" not in logs and "routing commands" not in logs, process.story()
    refusal = [line for line in logs.splitlines() if "fewer partitions than" in line]
    assert refusal, process.story()
    for name in _changelogs(settings):
        assert f"{name} has 2" in refusal[0], refusal[0]
    assert f"{settings.topics.commands} has 3" in refusal[0], refusal[0]
    assert "switchyard topics apply --increase-partitions" in refusal[0], refusal[0]


async def test_a_refused_start_never_reads_ready(own_settings: Settings, tmp_path: Path) -> None:
    settings = own_settings
    await _grown_commands_only(settings)
    _, runtime = create_app(settings, data_dir=tmp_path)
    try:
        async with asyncio.timeout(60):
            with pytest.raises(ConfigurationError, match="--increase-partitions"):
                await runtime.on_start()
        assert not await runtime._ready()
    finally:
        await runtime.on_stop()


def test_the_tables_changelogs_are_those_topics_apply_manages(tmp_path: Path) -> None:
    settings = load_settings({}, topic_prefix="names.")
    _, runtime = create_app(settings, data_dir=tmp_path)
    faust_names = [runtime._dedup.changelog_topic_name, runtime._usage.changelog_topic_name]
    assert faust_names == settings.topics.router_changelogs == _changelogs(settings)
