"""A pool assigned partitions whose previous owner stalled in the middle of its commit
waits for that commit, however long it takes, before it runs anything of them.

Real Kafka, OpenBao and HTTP upstream. The "stalled owner" is a transactional producer
that sent its offsets into a transaction and has not ended it; the pool must not read
past the pending commit (it would redo what the owner finished), and must keep its
group membership meanwhile (the wait runs beside the consumer, which heartbeats).
"""

from __future__ import annotations

import asyncio

import pytest
from _runtime_support import (
    CONNECTOR,
    Upstream,
    all_results,
    command,
    pool_running,
    produce,
    put_tenant,
    wait_results,
)
from aiokafka import TopicPartition

from core.kafka import make_producer, start_client
from tests.conftest import unique

pytestmark = pytest.mark.integration

# Longer than the old in-callback bound (5 s) the pool read past a pending commit after.
HELD = 7.0


async def test_the_new_owner_waits_out_a_stalled_owners_open_commit(settings, vault_admin) -> None:
    upstream = Upstream()
    async with upstream.running():
        tenant = f"ss{settings.topic_prefix[1:9]}"
        await put_tenant(vault_admin, upstream, tenant)
        finished = [command(tenant) for _ in range(4)]  # done by the stalled owner
        rest = [command(tenant) for _ in range(3)]
        await produce(settings, finished + rest, partition=0)
        tp = TopicPartition(settings.topics.connector(CONNECTOR), 0)
        group = f"{settings.topic_prefix}workers.{CONNECTOR}"
        stalled = make_producer(settings, transactional_id=unique("stalled-owner"))
        await start_client(stalled, what="stalled owner")
        try:
            await stalled.begin_transaction()
            await stalled.send_offsets_to_transaction({tp: len(finished)}, group)
            async with pool_running(settings, vault_admin, upstream) as pool:
                await asyncio.sleep(HELD)
                assert upstream.calls == []  # nothing of the partition ran meanwhile
                assert pool.consumer.assignment()  # and the pool is still in its group
                await stalled.commit_transaction()
                await wait_results(settings, {c.command_id for c in rest})
            results = await all_results(settings)
        finally:
            await stalled.stop()
    assert all(not upstream.calls_for(c.command_id) for c in finished)
    assert all(len(upstream.calls_for(c.command_id)) == 1 for c in rest)
    assert all(c.command_id not in results for c in finished)
