"""Crash recovery: SIGKILL mid-stream, in-doubt replays, state surviving restarts."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
from _router_support import (
    Outputs,
    RouterProcess,
    apply,
    command,
    prepare_topics,
    publish,
    summary_action,
    workspace,
)
from aiokafka.partitioner import murmur2

from core.kafka import ensure_topics, make_producer
from core.settings import Settings
from schemas import ErrorCode, Limits, RoutedCommand


def _partition(key: str, n: int = 3) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % n


async def test_router_killed_mid_stream_and_restarted_loses_no_command_and_routes_none_twice(
    own_settings: Settings, tmp_path
) -> None:
    s = own_settings
    await prepare_topics(s)
    tenants = {
        f"kt{i}_{uuid.uuid4().hex[:6]}": conn for i, conn in enumerate(("slack", "gmail", "notion"))
    }
    await apply(
        s,
        *[
            workspace(t, [summary_action(c, "op", {"text": "{{ args.summary }}"})])
            for t, c in tenants.items()
        ],
    )
    names = list(tenants)
    cmds = [
        command(names[i % 3], action="nope" if i % 10 == 0 else "daily_summary", key=f"k{i}")
        for i in range(300)
    ]
    outputs = await Outputs(s).start()
    router = RouterProcess(s, tmp_path).start()
    try:
        sent = 0
        # Feed the stream in small chunks until about 100 are out, then kill mid-stream.
        while sent < len(cmds):
            await publish(s, cmds[sent : sent + 10])
            sent += 10
            if len(outputs.items) >= 100:
                break
            await outputs.wait_for(lambda items, n=sent: len(items) >= n - 20, limit=60)
        router.kill()
        at_kill = len(outputs.items)
        # Mid-stream: some routed, and commands left for the restarted router.
        assert 0 < at_kill < len(cmds) and sent < len(cmds), (at_kill, sent)
        await publish(s, cmds[sent:])

        router.start()
        await outputs.wait_ids([c.command_id for c in cmds], limit=90)
        # Replaying already-routed keys after the restart: dedup state came back too.
        await publish(s, cmds[:20])
        marker = command(names[0], key="marker")
        await publish(s, [marker])
        await outputs.wait_ids([marker.command_id])
        items = await outputs.settle()
    finally:
        await outputs.stop()
        code = router.terminate()
    assert code == 0, router.story()

    counts = Counter(o.command_id for o in items)
    duplicates = {cid: n for cid, n in counts.items() if n > 1}
    assert not duplicates, duplicates
    assert all(counts[c.command_id] == 1 for c in cmds)
    rejected = [o for o in items if o.result is not None]
    assert len(rejected) == 30 and all(
        o.result.error.code is ErrorCode.UNKNOWN_ACTION for o in rejected
    )
    routed = [o for o in items if o.routed is not None and o.command_id != marker.command_id]
    assert len(routed) == 270
    for out in routed:
        assert out.topic == s.topics.connector(tenants[out.routed.tenant_id])
    print(f"\nkilled after {at_kill} outputs; {sent} commands were published before the kill")


async def test_in_doubt_replays_are_sent_only_when_their_output_is_missing(
    own_settings: Settings, tmp_path
) -> None:
    """A pending dedup entry left by a crash: check the output partition, not guess; and
    a replayed command whose usage that entry says was counted is not counted again."""
    s = own_settings
    await prepare_topics(s)
    tenant = f"doubt_{uuid.uuid4().hex[:6]}"
    # Two commands counted before the crash; room for two more today.
    quota = Limits(rate_per_second=10_000, burst=10_000, daily_quota=4)
    await apply(
        s,
        workspace(
            tenant, [summary_action("slack", "post_message", {"text": "{{ args.summary }}"})], limits=quota
        ),
    )
    sent_before_crash = command(tenant, key="sent")
    lost_in_crash = command(tenant, key="lost")
    counted_lost = command(tenant, key="counted")
    changelog = f"{s.topic_prefix}router-dedup-changelog"
    usage_changelog = f"{s.topic_prefix}router-usage-changelog"
    compact = {"cleanup.policy": "compact"}
    await ensure_topics(s, [changelog, usage_changelog], configs={changelog: compact, usage_changelog: compact})
    part = _partition(tenant)
    out_topic = s.topics.connector("slack")
    now_ms = int(time.time() * 1000)
    producer = make_producer(s)
    await producer.start()
    try:
        # What a router that died between "output acked" and "done written" leaves behind…
        routed = RoutedCommand.model_validate(
            {
                **sent_before_crash.model_dump(),
                "connector": "slack",
                "operation": "post_message",
                "resolved_arguments": {"text": "all green"},
                "routed_at": datetime.now(UTC),
            }
        )
        await producer.send_and_wait(
            out_topic,
            routed.to_bytes(),
            key=tenant.encode(),
            partition=part,
            headers=[("sy-command-id", sent_before_crash.command_id.encode())],
        )
        # …and ones that died between "pending written" and "output sent", one of them
        # (as routers write them now) saying that its usage is counted.
        for cmd, counted in ((sent_before_crash, False), (lost_in_crash, False), (counted_lost, True)):
            entry = {
                "c": cmd.command_id,
                "s": "p",
                "t": out_topic,
                "p": part,
                "ts": now_ms - 1000,
                "k": part,
                **({"u": 1} if counted else {}),
            }
            await producer.send_and_wait(
                changelog,
                orjson.dumps(entry),
                key=orjson.dumps(f"{tenant}/{cmd.idempotency_key}"),
                partition=part,
            )
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        usage = {"tokens": 10_000.0, "ts": time.time(), "day": day, "used": 2, "k": part}
        await producer.send_and_wait(
            usage_changelog, orjson.dumps(usage), key=orjson.dumps(f"{tenant}/main"), partition=part
        )
    finally:
        await producer.stop()
    await publish(s, [sent_before_crash, lost_in_crash, counted_lost])

    outputs = await Outputs(s).start()
    router = RouterProcess(s, tmp_path).start()
    try:
        marker = command(tenant)
        await publish(s, [marker])
        try:
            await outputs.wait_ids(
                [lost_in_crash.command_id, counted_lost.command_id, marker.command_id], limit=60
            )
        except TimeoutError:
            pytest.fail("router did not route in time; what it logged:\n" + router.story())
        items = await outputs.settle()
    finally:
        await outputs.stop()
        code = router.terminate()
    assert code == 0
    counts = Counter(o.command_id for o in items)
    assert counts[sent_before_crash.command_id] == 1  # only the one written before the "crash"
    assert counts[lost_in_crash.command_id] == 1 and counts[counted_lost.command_id] == 1
    # 2 counted before, the lost one again, the counted one not: the marker is the 4th.
    [marker_output] = [o for o in items if o.command_id == marker.command_id]
    assert marker_output.routed is not None, marker_output.result
    assert '"already_sent":1' in router.logs()
