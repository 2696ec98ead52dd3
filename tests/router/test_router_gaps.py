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
from aiokafka.errors import KafkaTimeoutError
from faust.types import TP
from faust.types.tuples import Message

from core.kafka import ensure_topics, make_admin, make_consumer, start_client
from core.settings import Settings, load_settings
from router._route import SEEKS_PER_GAP, Router
from router.app import (
    COMMIT_STUCK_AFTER,
    _pin_start_offsets,
    commands_lag,
    create_app,
    note_commits,
    stuck_partitions,
)


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


def test_a_gap_is_sought_again_before_it_is_taken_as_real(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("router._route.time", SimpleNamespace(monotonic=lambda: clock[0]))
    router = Router(load_settings({}), None, None, None)  # type: ignore[arg-type]
    router.consumer = SimpleNamespace(
        app=SimpleNamespace(consumer_generation_id=1),
        _committed_offset={TP("gaps.commands", 0): 5, TP("gaps.commands", 1): None},
    )

    def sighting() -> tuple[list[int], list[int]]:
        kept, held = router._in_order([_event(8), _event(9)])
        router.skipped.clear()
        router._next.clear()  # what recover_skipped's seek does
        return [e.message.offset for e in kept], [e.message.offset for e in held]

    # Events fetched before a seek show the gap again at once: that uses no budget.
    for _ in range(3 * SEEKS_PER_GAP):
        assert sighting() == ([], [8, 9])
    for _ in range(SEEKS_PER_GAP - 1):
        clock[0] += 1.0
        assert sighting() == ([], [8, 9])
    clock[0] += 1.0
    assert sighting() == ([8, 9], [])


async def test_no_commit_skips_the_first_command_not_routed(tmp_path: Any) -> None:
    # faust alone commits past a one-record hole at the head, and past any hole when
    # the committed offset is 0 (it keeps 0 as "none").
    settings = load_settings({}, topic_prefix=f"floor{uuid.uuid4().hex[:6]}.")
    app, runtime = create_app(settings, data_dir=tmp_path)
    consumer = app.consumer
    at_ten, at_zero, never, moved_in = (TP(settings.topics.commands, p) for p in range(4))
    sought: list[dict[Any, int]] = []

    async def seek_to_committed() -> dict[Any, int]:
        # aiokafka's: it seeks only partitions committed above 0 (and reports None
        # for one with nothing committed), the others stay where they were fetched to.
        return {at_ten: 10, at_zero: 0, never: None}

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return {tp: {at_zero: 0, never: 7}[tp] for tp in tps}

    async def seek_wait(offsets: dict[Any, int]) -> None:
        sought.append(dict(offsets))

    consumer.seek_to_committed = seek_to_committed
    # Assigned after aiokafka read the commits: not its to seek, whatever it holds.
    consumer.assignment = lambda: {at_ten, at_zero, never, moved_in}
    consumer.earliest_offsets = earliest_offsets
    consumer.seek_wait = seek_wait
    runtime.router.guard_acks(consumer, settings.topics.commands)
    offsets = await consumer.seek_to_committed()
    # The re-read covers what was fetched and dropped where nothing is committed yet.
    assert sought == [{at_zero: 0, never: 7}]
    assert offsets == {at_ten: 10, at_zero: 0, never: 7}
    consumer._committed_offset[at_ten] = 10
    consumer._acked[at_ten].extend([11, 12])  # 10 was dropped
    consumer._acked[at_zero].extend([1, 2])  # 0 was dropped
    consumer._acked[never].extend([8, 9])  # 7, the first left by retention, was dropped
    assert consumer._new_offset(at_ten) is None and consumer._new_offset(at_zero) is None
    assert consumer._new_offset(never) is None
    # Gap detection starts at the floor where faust keeps no committed offset: a first
    # event past it asks for a seek back instead of being routed.
    first = Message(
        at_zero.topic, 1, 2, 0.0, 0, None, b"t", b"{}", None, tp=at_zero, generation_id=1
    )  # fmt: skip
    kept, held = runtime.router._in_order([SimpleNamespace(message=first)])
    assert (kept, len(held), runtime.router.skipped[at_zero]) == ([], 1, 0)
    consumer._acked[at_ten].insert(0, 10)
    consumer._acked[at_zero].insert(0, 0)
    consumer._acked[never].insert(0, 7)
    new_offsets = (consumer._new_offset(tp) for tp in (at_ten, at_zero, never))
    assert tuple(new_offsets) == (13, 3, 10)


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


def test_the_watchdog_calls_a_partition_stuck_only_when_its_commit_stays_behind() -> None:
    busy, idle, held = (TP("w.commands", p) for p in range(3))
    tps = [busy, idle, held]
    marks: dict[Any, tuple[int | None, float]] = {}
    ends = {busy: 500, idle: 40, held: 300}
    note_commits(tps, {busy: 100, idle: 40, held: 200}, marks, now=0.0)
    # Commands keep arriving on every partition; busy's commit moves, held's does not.
    note_commits(tps, {busy: 450, idle: 40, held: 200}, marks, now=COMMIT_STUCK_AFTER)
    behind, stuck = stuck_partitions(tps, {busy: 450, idle: 40, held: 200}, ends, marks, COMMIT_STUCK_AFTER)
    assert (behind, stuck) == ([busy, held], [held])  # idle is caught up: not behind
    # A partition at committed 0 (faust keeps it as None) with commands waiting counts too.
    note_commits([busy], {busy: None}, marks, now=100.0)
    assert stuck_partitions([busy], {busy: None}, {busy: 3}, marks, 100.0 + COMMIT_STUCK_AFTER) == ([busy], [busy])


async def test_a_start_that_cannot_be_looked_up_leaves_the_seek_as_aiokafka_made_it(
    tmp_path: Any,
) -> None:
    settings = load_settings({}, topic_prefix=f"nostart{uuid.uuid4().hex[:6]}.")
    app, runtime = create_app(settings, data_dir=tmp_path)
    consumer = app.consumer
    tp = TopicPartition(settings.topics.commands, 0)

    async def seek_to_committed() -> dict[Any, int]:
        return {tp: 0}

    async def earliest_offsets(*tps: Any) -> dict[Any, int]:
        raise KafkaTimeoutError()

    consumer.seek_to_committed = seek_to_committed
    consumer.earliest_offsets = earliest_offsets
    runtime.router.guard_acks(consumer, settings.topics.commands)
    assert await consumer.seek_to_committed() == {tp: 0}  # no crash; the watchdog covers


def test_the_commands_lag_is_what_waits_past_each_committed_offset() -> None:
    a, b, c = (TopicPartition("commands", n) for n in range(3))
    # Never committed: everything there waits; an end behind a fresh commit reads 0.
    assert commands_lag([a, b, c], {a: 450, b: None, c: 90}, {a: 500, b: 7, c: 80}) == 50 + 7
    assert commands_lag([], {}, {}) == 0
