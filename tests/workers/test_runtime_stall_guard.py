"""After the event loop stood still, a worker starts nothing until the group confirms it.

The guard's logic runs on a hand-driven clock; the heartbeat that confirms membership is
asked of the real broker's group coordinator.
"""

from __future__ import annotations

import asyncio

from _runtime_support import group_member

from core.kafka import ensure_topics, make_admin, start_client
from core.settings import Settings
from tests.conftest import unique
from workers._fencing import consumer_membership
from workers._stall_guard import StallGuard, heartbeat_accepted


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Answers:
    """A confirm() that answers from a list, then True; counts its calls."""

    def __init__(self, *answers: bool) -> None:
        self._answers = list(answers)
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self._answers.pop(0) if self._answers else True


def _guard(confirm: _Answers, clock: _Clock, **kwargs: float) -> StallGuard:
    return StallGuard(confirm, threshold=1.0, retry=0.01, clock=clock, **kwargs)


async def test_without_a_stall_work_starts_and_nothing_is_asked() -> None:
    clock, confirm = _Clock(), _Answers()
    guard = _guard(confirm, clock)
    for _ in range(5):
        clock.now += 0.5  # the loop keeps running: each gap under the threshold
        assert guard.ready()
    await asyncio.sleep(0)
    assert confirm.calls == 0 and guard.stalls == 0


async def test_a_stall_holds_work_until_a_heartbeat_after_it_is_accepted() -> None:
    clock, confirm = _Clock(), _Answers(False, False)
    guard = _guard(confirm, clock)
    clock.now += 12.0  # SIGSTOP past the session timeout
    assert not guard.ready()  # noticed at the first check, before any ticker ran
    async with asyncio.timeout(5):
        await guard.cleared()
    assert confirm.calls == 3  # refused twice (rejoining), then accepted
    assert guard.ready() and guard.stalls == 1


async def test_the_hold_is_bounded_when_membership_is_never_confirmed() -> None:
    clock, confirm = _Clock(), _Answers(*([False] * 10_000))
    guard = _guard(confirm, clock, hold_at_most=0.2)
    clock.now += 5.0
    assert not guard.ready()
    async with asyncio.timeout(5):
        await guard.cleared()
    assert confirm.calls > 1


async def test_a_second_stall_asks_again() -> None:
    gate = asyncio.Event()
    calls = 0

    async def confirm() -> bool:
        nonlocal calls
        calls += 1
        await gate.wait()  # the first answer is still on its way when the loop stalls again
        return True

    clock = _Clock()
    guard = StallGuard(confirm, threshold=1.0, retry=0.01, clock=clock)
    clock.now += 3.0
    assert not guard.ready()
    await asyncio.sleep(0.01)
    clock.now += 3.0
    assert not guard.ready()
    gate.set()
    async with asyncio.timeout(5):
        await guard.cleared()
    assert calls == 2 and guard.stalls == 2


async def test_the_ticker_notices_a_stall_with_no_work_waiting() -> None:
    clock, confirm = _Clock(), _Answers(False)
    guard = StallGuard(confirm, threshold=1.0, tick=0.01, retry=0.01, clock=clock)
    ticking = asyncio.create_task(guard.run())
    try:
        clock.now += 2.0
        async with asyncio.timeout(5):
            while confirm.calls < 2:  # noqa: ASYNC110 - bounded; the ticker's own pace
                await asyncio.sleep(0.01)
        assert guard.stalls == 1
    finally:
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)


async def test_the_coordinator_accepts_a_current_member_and_refuses_one_the_group_left_behind(
    settings: Settings,
) -> None:
    topic, group = unique("stall-src"), unique("stall-group")
    await ensure_topics(settings, [topic], partitions=1)
    admin = make_admin(settings)
    await start_client(admin, what="test admin")
    try:
        async with group_member(settings, topic, group) as first:
            before = consumer_membership(first)
            assert before is not None
            assert await heartbeat_accepted(admin, group, before)
        # The member is gone (as a session timeout removes a stalled one); a successor owns
        # the partition.
        async with group_member(settings, topic, group) as successor:
            current = consumer_membership(successor)
            assert current is not None
            assert not await heartbeat_accepted(admin, group, before)
            assert await heartbeat_accepted(admin, group, current)
    finally:
        await admin.close()
