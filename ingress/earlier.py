"""Results older than this replica's lookback, looked up when the router drops a replay.

A replica follows the results topic from ``lookback`` seconds back. A client that
resubmits a key there after that (every replica a deploy started since) gets its
command published again; the router drops it as routed before, so no new Result comes,
and the replica would answer ``pending`` for ever. The router says so on the commands
topic (``schemas.DUPLICATE_KIND``, with when it routed the command first); this looks
for that command's Result on its tenant's results partition from then on, bounded in
records and time, and hands it to the :class:`~ingress.results.ResultsFeed` as if
followed. Lookups are queued (bounded) and one runs at a time: they are rare.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiokafka import TopicPartition

from core.kafka import headers_dict, keyed_partition, make_consumer, start_client, topic_partitions
from core.settings import Settings
from core.tasks import cancel_and_wait
from schemas import Headers

if TYPE_CHECKING:
    from .results import ResultsFeed

__all__ = ["EarlierResults"]

logger = logging.getLogger(__name__)

# Results are stamped by the clock of the host that wrote them: look a little earlier.
_CLOCK_MARGIN_MS = 60_000


class EarlierResults:
    """Finds the Results of commands the router dropped as replays (see the module)."""

    def __init__(
        self,
        settings: Settings,
        feed: ResultsFeed,
        *,
        max_queued: int = 10_000,
        max_records: int = 200_000,
        timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.results
        self._feed = feed
        self._max_queued = max_queued
        self._max_records = max_records
        self._timeout = timeout
        # results partition -> (earliest time to read from, ms; command ids wanted there)
        self._queued: dict[int, tuple[int, set[str]]] = {}
        self._count = 0
        self._wake = asyncio.Event()
        self._partitions = 0  # of the results topic, learnt at start
        self._task: asyncio.Task[None] | None = None
        self.found = 0  # Results found so (for tests and logs)
        # Whether this replica has a use for a command's Result (it re-sent the command,
        # or someone waits for it here); None: every command. Set by the app, so that of
        # N replicas told of a replay only the one asked looks it up.
        self.relevant: Callable[[str], bool] | None = None

    async def start(self) -> None:
        """Learn the results topic's partitions and start looking up.

        Raises:
            KafkaUnavailable: the broker does not answer (nor would the feed's follower).
        """
        self._partitions = len(await topic_partitions(self.settings, self.topic))
        self._task = asyncio.create_task(self._run(), name="earlier-results")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def wanted(self, tenant_id: str, command_id: str, routed_at_ms: int) -> None:
        """Look for ``command_id``'s Result from ``routed_at_ms`` on, unless it is known here."""
        feed = self._feed
        if feed.owner(command_id) is not None or feed.forgotten(command_id) is not None:
            return
        if self.relevant is not None and not self.relevant(command_id):
            return
        if self._count >= self._max_queued or not self._partitions:
            return
        partition = keyed_partition(tenant_id.encode(), self._partitions)
        since, ids = self._queued.get(partition, (routed_at_ms, set()))
        if command_id not in ids:
            ids.add(command_id)
            self._count += 1
        self._queued[partition] = (min(since, routed_at_ms), ids)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            queued, self._queued, self._count = self._queued, {}, 0
            for partition, (since, ids) in queued.items():
                try:
                    await self._search(partition, since - _CLOCK_MARGIN_MS, ids)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a lookup must never end the task (nor stop())
                    logger.warning(
                        "looking up earlier results failed",
                        extra={"fields": {"partition": partition, "error": type(exc).__name__}},
                    )
                if ids:
                    logger.info(
                        "earlier results not found",
                        extra={"fields": {"partition": partition, "missing": len(ids)}},
                    )

    async def _search(self, partition: int, since_ms: int, ids: set[str]) -> None:
        consumer = make_consumer(self.settings, group_id=None, enable_auto_commit=False)
        await start_client(consumer, what="earlier results consumer")
        try:
            tp = TopicPartition(self.topic, partition)
            starts = await consumer.offsets_for_times({tp: max(0, since_ms)})
            end = (await consumer.end_offsets([tp]))[tp]
            if starts.get(tp) is None:
                return  # nothing written since then
            consumer.assign([tp])
            consumer.seek(tp, starts[tp].offset)
            read = 0
            async with asyncio.timeout(self._timeout):
                while ids and read < self._max_records and await consumer.position(tp) < end:
                    batch = await consumer.getmany(tp, timeout_ms=500, max_records=2_000)
                    for record in batch.get(tp, ()):
                        read += 1
                        command_id = headers_dict(record.headers).get(Headers.COMMAND_ID)
                        if command_id in ids:
                            ids.discard(command_id)
                            # Not counted again by the dashboards: it finished long ago.
                            self._feed.apply(record, listeners=False)
                            self.found += 1
        finally:
            await consumer.stop()

