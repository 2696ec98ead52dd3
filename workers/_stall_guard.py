"""Start no new command after the worker's event loop stalled until the group confirms it.

A process stopped for longer than its consumer session timeout (a VM pause, SIGSTOP, a
swap storm) wakes up with its partitions perhaps given to another worker. Its commits are
fenced (``_fencing``), so no Result is published twice. But aiokafka hands out records it
fetched before the stall, and the pool would start their upstream calls at once, before
aiokafka's own heartbeat tells it that it has left the group; the new owner makes those
calls too, and an API that takes no idempotency key (Slack) sees them twice.

So the loop's pauses are watched: once it has not run for ``threshold`` seconds, nothing
new starts until a heartbeat sent after the pause is accepted with the consumer's
membership at that moment. If the group moved on, aiokafka rejoins meanwhile: the
revocation drops the queued records of the lost partitions, and the first heartbeat of
the new generation lifts the hold. Calls already in flight at the stall are not stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.protocol.group import HeartbeatRequest

from ._fencing import GroupMembership

__all__ = ["StallGuard", "heartbeat_accepted"]

logger = logging.getLogger(__name__)


def _boot_clock() -> float:
    """Seconds since boot, counting time the machine was suspended (which the monotonic
    clock leaves out on Linux): a host resumed from suspend has stalled too."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


_CLOCK = _boot_clock if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


async def heartbeat_accepted(admin: Any, group_id: str, member: GroupMembership) -> bool:
    """Whether the group coordinator still takes ``member``'s heartbeat (its generation is current).

    False on any refusal (a rebalance under way, an old generation, an unknown member) and
    when the coordinator cannot be asked now: the caller asks again.
    """
    try:
        coordinator = await admin.find_coordinator(group_id)
        response = await admin._send_request(
            HeartbeatRequest(group_id, member.generation_id, member.member_id), coordinator
        )
    except (KafkaError, OSError, TimeoutError) as exc:
        logger.debug("heartbeat after a stall not sent: %s", type(exc).__name__)
        return False
    return bool(response.error_code == 0)


class StallGuard:
    """Notices event-loop stalls and holds new work until ``confirm()`` returns True.

    :meth:`ready` is checked before each start; it sees a stall even if the ticker has
    not run since the loop woke up. The hold ends at ``hold_at_most`` whatever the
    answers, as the pool would without the guard: by then a worker that lost its group
    has long heard it from aiokafka.
    """

    def __init__(
        self,
        confirm: Callable[[], Awaitable[bool]],
        *,
        threshold: float = 1.0,
        tick: float = 0.2,
        retry: float = 0.2,
        hold_at_most: float = 30.0,
        clock: Callable[[], float] = _CLOCK,
    ) -> None:
        self._confirm = confirm
        self._threshold = threshold
        self._tick = tick
        self._retry = retry
        self._hold_at_most = hold_at_most
        self._clock = clock
        self._last = clock()
        self._clear = asyncio.Event()
        self._clear.set()
        self._checking: asyncio.Task[None] | None = None
        self._stopped = False
        self.stalls = 0

    def ready(self) -> bool:
        """Whether new work may start now."""
        self._observe()
        return self._clear.is_set()

    async def cleared(self, unless: asyncio.Event | None = None) -> None:
        """Wait until the hold (if any) is lifted, or ``unless`` is set."""
        if unless is None:
            await self._clear.wait()
            return
        waits = {asyncio.ensure_future(self._clear.wait()), asyncio.ensure_future(unless.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def run(self) -> None:
        """Tick until cancelled, so a stall is noticed without any work to start."""
        try:
            while True:
                await asyncio.sleep(self._tick)
                self._observe()
        finally:
            # Stopping: nothing may wait on a check that will not come, and the calls that
            # finish during the shutdown are not held for the ticker's silence.
            self._stopped = True
            if self._checking is not None:
                self._checking.cancel()
            self._clear.set()

    def _observe(self) -> None:
        if self._stopped:
            return
        now = self._clock()
        gap, self._last = now - self._last, now
        if gap > self._threshold:
            self.stalls += 1
            logger.warning(
                "event loop stalled; starting nothing until the group confirms this member",
                extra={"fields": {"stalled_seconds": round(gap, 2)}},
            )
            self._clear.clear()
            if self._checking is not None:
                self._checking.cancel()  # an answer to a heartbeat from before this stall
            self._checking = asyncio.create_task(self._confirmed(), name="stall-guard")

    async def _confirmed(self) -> None:
        try:
            async with asyncio.timeout(self._hold_at_most):
                while not await self._confirm():  # noqa: ASYNC110 - asks the broker again
                    await asyncio.sleep(self._retry)
        except TimeoutError:
            logger.warning("membership not confirmed after a stall; starting commands again")
        except Exception:
            logger.exception("confirming membership after a stall failed; starting commands again")
        self._clear.set()
