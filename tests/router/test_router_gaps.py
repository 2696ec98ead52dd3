"""Offset jumps in the commands topic: never committed past, sought again.

faust's fetch loop may still deliver a batch fetched before the router's seek back to
the committed offsets; its first record then looks like a gap in the log, which faust
would count as committed (``Router._refuse_gaps``). Pure logic on faust's real consumer
object; the whole story under load is the router SIGKILL fault scenario.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from _router_support import command, publish
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete
from faust.types import TP
from faust.types.tuples import Message

from core.kafka import ensure_topics, make_admin, make_consumer, start_client
from core.settings import Settings, load_settings
from router._route import SEEKS_PER_GAP, Router
from router.app import _pin_start_offsets, create_app


async def test_an_offset_jump_in_the_commands_topic_never_becomes_committable(tmp_path: Any) -> None:
    settings = load_settings({}, topic_prefix=f"gap{uuid.uuid4().hex[:6]}.")
    app, runtime = create_app(settings, data_dir=tmp_path)
    consumer = app.consumer
    runtime.router.guard_acks(consumer, settings.topics.commands)
    commands = TP(settings.topics.commands, 0)
    other = TP(f"{settings.topic_prefix}dedup-changelog", 0)
    for tp in (commands, other):
        consumer._committed_offset[tp] = 10
        # Right after a seek back to 10, the loop delivers offset 20 of an older batch.
        await consumer._add_gap(tp, 11, 19)
        consumer._acked[tp].append(20)
    assert consumer._new_offset(commands) is None  # 10..19 were never routed
    assert consumer._new_offset(other) == 21  # faust's own rule stays for other topics
    assert runtime.router.gaps_refused == 1


def _event(offset: int) -> Any:
    message = Message(
        "gaps.commands", 0, offset, 0.0, 0, None, b"t", b"{}", None,
        tp=TP("gaps.commands", 0), generation_id=1,
    )  # fmt: skip
    return SimpleNamespace(message=message)


def test_a_gap_is_sought_again_before_it_is_taken_as_real() -> None:
    router = Router(load_settings({}), None, None, None)  # type: ignore[arg-type]
    router.consumer = SimpleNamespace(
        app=SimpleNamespace(consumer_generation_id=1), _committed_offset={TP("gaps.commands", 0): 5}
    )
    for attempt in range(SEEKS_PER_GAP):
        kept, held = router._in_order([_event(8), _event(9)])
        assert (kept, [e.message.offset for e in held]) == ([], [8, 9]), attempt
        assert router.skipped == {TP("gaps.commands", 0): 5}
        router.skipped.clear()
        router._next.clear()  # what recover_skipped's seek does
    kept, held = router._in_order([_event(8), _event(9)])
    assert [e.message.offset for e in kept] == [8, 9] and held == []


@pytest.mark.integration
async def test_start_offsets_below_the_log_start_are_moved_up_to_it(own_settings: Settings) -> None:
    # Retention deleted commands the group never read: the committed offset would read
    # as a gap, which the router never commits past, so the start moves up first.
    s = own_settings
    await ensure_topics(s, [s.topics.commands])
    await publish(s, [command(f"t{n}") for n in range(30)])
    tps = [TopicPartition(s.topics.commands, p) for p in range(s.topic_partitions)]
    group = make_consumer(s, group_id=f"{s.topic_prefix}router")
    await start_client(group, what="test group")
    try:
        group.assign(tps)
        ends = await group.end_offsets(tps)
        await group.commit(dict.fromkeys(tps, 0))
        admin = make_admin(s)
        await admin.start()
        try:
            await admin.delete_records({tp: RecordsToDelete(ends[tp] // 2) for tp in tps})
        finally:
            await admin.close()
    finally:
        await group.stop()
    await _pin_start_offsets(s)
    check = make_consumer(s, group_id=f"{s.topic_prefix}router")
    await start_client(check, what="test check")
    try:
        check.assign(tps)
        assert {tp: await check.committed(tp) for tp in tps} == {tp: ends[tp] // 2 for tp in tps}
    finally:
        await check.stop()
