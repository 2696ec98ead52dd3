"""Follow every partition of one topic without a consumer group.

Every ingress replica must see every record of the config and results topics (any
replica serves any tenant), and every worker process every cancellation (any process
may hold the command), so nothing is shared through a group: each follower assigns
itself all partitions, starts at the beginning or at a time, and keeps reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from core.errors import KafkaUnavailable
from core.kafka import make_consumer, start_client, topic_partitions
from core.settings import Settings
from core.tasks import cancel_and_wait

__all__ = ["Following", "TopicFollower"]

logger = logging.getLogger(__name__)


class TopicFollower:
    """Reads all partitions of ``topic`` forever and hands each record to ``handle``.

    ``start_at`` is ``"beginning"`` or a number of seconds to look back from now (the
    first offset at or after that time; the end where there is none). :attr:`caught_up`
    is set once the follower has read up to the end offsets seen at start.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        handle: Callable[[Any], None],
        *,
        start_at: str | float = "beginning",
        name: str = "follower",
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.name = name
        self._handle = handle
        self._start_at = start_at
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions: dict[int, int] = {}
        self._start_ends: dict[int, int] = {}
        self._moved = asyncio.Condition()
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        """Assign all partitions, seek, and start the reading task.

        Raises:
            KafkaUnavailable: the broker or the topic is not reachable.
        """
        partitions = await topic_partitions(self.settings, self.topic)
        consumer = make_consumer(
            self.settings, group_id=None, enable_auto_commit=False, retry_backoff_ms=20
        )
        await start_client(consumer, what=f"{self.name} consumer")
        self._consumer = consumer
        tps = [TopicPartition(self.topic, p) for p in partitions]
        try:
            # Ask for offsets before assigning: once assigned, the consumer's long-poll
            # fetches occupy the connection and each offset request waits ~fetch_max_wait.
            ends = await consumer.end_offsets(tps)
            if self._start_at == "beginning":
                starts = await consumer.beginning_offsets(tps)
            else:
                since_ms = int((time.time() - float(self._start_at)) * 1000)
                found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
                starts = {tp: ends[tp] if found.get(tp) is None else found[tp].offset for tp in tps}
        except KafkaError as exc:
            await self.stop()
            raise KafkaUnavailable(f"{self.name}: cannot read offsets ({type(exc).__name__})") from exc
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        self._start_ends = {tp.partition: offset for tp, offset in ends.items()}
        await self._update_positions()
        self._task = asyncio.create_task(self._run(), name=f"{self.name}:{self.topic}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError, RuntimeError):
                await self._consumer.stop()
            self._consumer = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_for(self, partition: int, offset: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the record at ``offset`` of ``partition`` has been handled."""
        try:
            async with asyncio.timeout(timeout), self._moved:
                await self._moved.wait_for(lambda: self._positions.get(partition, -1) > offset)
        except TimeoutError:
            return False
        return True

    async def _update_positions(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            # position() also moves past transaction markers and compacted-away offsets.
            self._positions[tp.partition] = await self._consumer.position(tp)
        if not self.caught_up.is_set() and all(
            self._positions.get(p, 0) >= end for p, end in self._start_ends.items()
        ):
            self.caught_up.set()
        async with self._moved:
            self._moved.notify_all()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=2_000)
                for records in batches.values():
                    for record in records:
                        self._handle_one(record)
                await self._update_positions()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: reading %s failed; retrying", self.name, self.topic)
                await asyncio.sleep(1.0)  # back off so a broken broker does not spin the loop

    def _handle_one(self, record: Any) -> None:
        try:
            self._handle(record)
        except Exception:
            # One bad record must not stop the replica from following the topic.
            logger.exception(
                "%s: skipped a record at %s[%d]@%d",
                self.name,
                record.topic,
                record.partition,
                record.offset,
            )


class Following:
    """A reader whose records come from its :attr:`follower`, started and stopped with it."""

    follower: TopicFollower

    async def start(self) -> None:
        """Start following the topic (returns before it has caught up).

        Raises:
            core.errors.KafkaUnavailable: the broker or topic is unreachable.
        """
        await self.follower.start()

    async def stop(self) -> None:
        await self.follower.stop()
