"""Final Results, read from the results topic by every replica, and callers waiting for them.

Each replica follows all partitions of the results topic (no consumer group), starting
``lookback`` seconds back (by ``offsets_for_times``) so a restarted replica can still
answer recent polls. It keeps the last ``capacity`` Results (LRU, default 100,000) in
memory; an older result is forgotten by the ingress (a poll answers 404) but stays on
the results topic for downstream consumers until the topic's retention removes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from core.settings import Settings
from schemas import Result

from ._bounded import LRU
from ._follow import TopicFollower
from .errors import ServiceUnavailable

__all__ = ["ResultsFeed"]

logger = logging.getLogger(__name__)

Accept = Callable[[Result], bool]


class ResultsFeed:
    """A bounded cache of final Results plus futures for callers that wait for one."""

    def __init__(
        self,
        settings: Settings,
        *,
        capacity: int = 100_000,
        lookback: float = 900.0,
        max_waiters: int = 50_000,
    ) -> None:
        self._results: LRU[str, Result] = LRU(capacity)
        self._waiters: dict[str, list[tuple[asyncio.Future[Result], Accept]]] = {}
        self._waiting = 0
        self._max_waiters = max_waiters
        # Others that want every parsed Result (the observability aggregator): one
        # consumer and one parse per record instead of one per reader.
        self.listeners: list[Callable[[Result], Any]] = []
        self.follower = TopicFollower(
            settings, settings.topics.results, self.apply, start_at=lookback, name="results"
        )

    async def start(self) -> None:
        """Start following the results topic.

        Raises:
            core.errors.KafkaUnavailable: the broker or topic is unreachable.
        """
        await self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
        for waiters in self._waiters.values():
            for future, _ in waiters:
                future.cancel()
        self._waiters.clear()

    def apply(self, record: Any) -> None:
        if record.value is None:
            return
        try:
            result = Result.from_bytes(record.value)
        except ValidationError as exc:
            logger.warning(
                "ignored an invalid result record",
                extra={"fields": {"partition": record.partition, "offset": record.offset,
                                  "errors": exc.error_count()}},
            )
            return
        for listener in self.listeners:
            listener(result)
        self.add(result)

    def add(self, result: Result) -> None:
        """Remember a final Result and wake the callers waiting for it (first one wins)."""
        if result.command_id in self._results:
            return  # at-least-once delivery upstream: a duplicate changes nothing
        self._results.put(result.command_id, result)
        waiters = self._waiters.get(result.command_id)
        if not waiters:
            return
        keep = []
        for future, accept in waiters:
            if future.done():
                continue
            if accept(result):
                future.set_result(result)
            else:
                keep.append((future, accept))  # someone else's command id: keep waiting
        if keep:
            self._waiters[result.command_id] = keep
        else:
            del self._waiters[result.command_id]

    def get(self, command_id: str, accept: Accept) -> Result | None:
        result = self._results.get(command_id)
        return result if result is not None and accept(result) else None

    async def wait(self, command_id: str, timeout: float, accept: Accept) -> Result | None:  # noqa: ASYNC109
        """The Result of ``command_id`` that ``accept`` allows, waiting up to ``timeout`` s.

        Raises:
            ServiceUnavailable: too many callers are waiting on this replica.
        """
        found = self.get(command_id, accept)
        if found is not None or timeout <= 0:
            return found
        if self._waiting >= self._max_waiters:
            raise ServiceUnavailable("too many waiting requests on this replica", retry_after=1.0)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        entry = (future, accept)
        self._waiters.setdefault(command_id, []).append(entry)
        self._waiting += 1
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return None
        finally:
            self._waiting -= 1
            waiters = self._waiters.get(command_id)
            if waiters is not None and entry in waiters:
                waiters.remove(entry)
                if not waiters:
                    del self._waiters[command_id]

    @property
    def cached(self) -> int:
        return len(self._results)
