"""Every router replica's view of all workspaces, read from the compacted config topic.

Why not a co-partitioned Faust table: commands are keyed by tenant id but config
records by ``workspace:<tenant>:<space>``, so the record a command needs usually sits in
another partition than the command. Why not a Faust ``GlobalTable`` either: the config
topic already is a compacted changelog written by others (admin API, ``switchyard
tenants apply``), faust documents an endless-recovery bug for global tables with several
instances unless ``partitions=1``, and it offers no way to wait until the table has
read up to a given offset. So each replica assigns itself *all* partitions of the config
topic (no consumer group, nothing committed), reads them from the beginning at start
(which is how the configuration survives a restart) and then follows them.

:meth:`ConfigView.sync` gives read-your-writes: before a batch of commands is routed,
it asks the broker for the config topic's end offsets and waits until the view has
applied everything up to them. A configuration change acknowledged before a command was
routed is therefore always seen by that command, without a restart. When every command
of a batch was submitted (ingress clock) more than ``clock_skew`` before the last
completed probe started (router clock), that probe already covers every change
acknowledged before them and the round trip is skipped: a router working through a
backlog pays one probe per change of age, not one per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import TypeAdapter, ValidationError

from core.errors import KafkaUnavailable
from core.kafka import make_consumer, start_client, topic_partitions
from core.settings import Settings
from core.tasks import cancel_and_wait
from core.workspaces import WorkspaceStore
from schemas import ConfigRecord, WorkspaceConfig

__all__ = ["ConfigView"]

logger = logging.getLogger(__name__)

_RECORD: TypeAdapter[ConfigRecord] = TypeAdapter(ConfigRecord)
_WORKSPACE_PREFIX = "workspace:"


class ConfigView:
    """All workspaces, kept current by a background reader of the config topic."""

    def __init__(
        self, settings: Settings, *, sync_timeout: float = 10.0, clock_skew: float = 0.1
    ) -> None:
        self.settings = settings
        self.clock_skew = clock_skew
        # Wall-clock start of the last probe the view has caught up with (0: none yet).
        self._synced_as_of = 0.0
        # Whether the last sync reached the topic's end: a view behind it must not decide
        # anything final (an unknown workspace, stale limits) nor drop usage it has not read.
        self.in_sync = False
        self.probes_skipped = 0
        self.topic = settings.topics.config
        self.sync_timeout = sync_timeout
        # As JSON, parsed when asked for (core.workspaces): every workspace is held here.
        self._workspaces = WorkspaceStore()
        # aiokafka clients bind to the running loop, so the consumer is made in start().
        self._consumer: AIOKafkaConsumer = None  # type: ignore[assignment]
        # End offsets come from a second client that never fetches: on the follower's
        # connection a ListOffsets request would queue behind its long-poll fetch.
        self._probe: AIOKafkaConsumer = None  # type: ignore[assignment]
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self.applied = 0

    def get(self, tenant_id: str, space_id: str) -> WorkspaceConfig | None:
        return self._workspaces.get((tenant_id, space_id))

    def __len__(self) -> int:
        return len(self._workspaces)

    async def start(self) -> None:
        """Assign every config partition, read it to the end, then follow it.

        Raises:
            KafkaUnavailable: when the broker or the topic cannot be reached.
        """
        self._consumer = make_consumer(
            self.settings, group_id=None, isolation_level="read_committed", fetch_max_wait_ms=100
        )
        await start_client(self._consumer, what="router config reader")
        self._probe = make_consumer(self.settings, group_id=None, isolation_level="read_committed")
        try:
            await start_client(self._probe, what="router config probe")
        except KafkaUnavailable:
            await self._consumer.stop()
            raise
        try:
            partitions = await topic_partitions(self.settings, self.topic)
        except KafkaUnavailable:
            await self._consumer.stop()
            await self._probe.stop()
            raise
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._follow(), name="router-config-view")
        # Not ready before the whole topic is read; each sync waits on the follower itself,
        # the sleep only spaces out retries after a broker error.
        while not await self.sync():  # noqa: ASYNC110
            await asyncio.sleep(1.0)
        logger.info("config view ready", extra={"fields": {"workspaces": len(self._workspaces)}})

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for client in (self._consumer, self._probe):
            if client is not None:
                await client.stop()

    async def sync(self, newest_submitted: float | None = None) -> bool:
        """Wait until every record acknowledged so far on the config topic is applied.

        ``newest_submitted`` (Unix seconds): when given and older than the last completed
        probe by more than ``clock_skew``, the view is known to be current enough for
        commands submitted by then, and no probe is sent.

        Returns ``False`` (and logs) when that takes longer than ``sync_timeout``
        (``in_sync`` says the same until a sync succeeds).
        """
        if newest_submitted is not None and newest_submitted + self.clock_skew < self._synced_as_of:
            self.probes_skipped += 1
            return True
        try:
            started = time.time()
            ends = await self._probe.end_offsets(self._partitions)
            async with asyncio.timeout(self.sync_timeout):
                async with self._progress:
                    while not await self._reached(ends):
                        await self._progress.wait()
            self._synced_as_of = max(self._synced_as_of, started)
            self.in_sync = True
            return True
        except (TimeoutError, KafkaError) as exc:
            logger.warning("config view is behind the config topic (%s)", type(exc).__name__)
            self.in_sync = False
            return False

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """End offsets of any partitions, from the probe client (never blocked by fetches)."""
        return dict(await self._probe.end_offsets(tps))

    async def _reached(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return False
        return True

    async def _follow(self) -> None:
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            except KafkaError:
                logger.exception("config view: fetch failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    try:
                        self._apply(record.key, record.value)
                    except Exception:  # one record must not end the view: every sync would wait
                        logger.exception("config view: a record could not be applied; skipped")
            async with self._progress:
                self._progress.notify_all()

    def _apply(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        key = (raw_key or b"").decode("utf-8", "replace")
        if not key.startswith(_WORKSPACE_PREFIX):
            return  # API keys and anything else are the ingress's business.
        parts = key.split(":")
        if len(parts) != 3:
            logger.warning("config view: malformed workspace key skipped")
            return
        ids = (parts[1], parts[2])
        self.applied += 1
        if raw_value is None:
            self._workspaces.pop(ids)
            return
        try:
            record = _RECORD.validate_json(raw_value)
        except ValidationError as exc:
            # Keep the last good configuration: a broken write must not unconfigure a tenant.
            logger.warning(
                "config view: invalid workspace record skipped",
                extra={
                    "fields": {"tenant_id": ids[0], "space_id": ids[1], "errors": exc.error_count()}
                },
            )
            return
        if not isinstance(record, WorkspaceConfig) or (record.tenant_id, record.space_id) != ids:
            logger.warning("config view: record does not match its key; skipped")
            return
        self._workspaces.put(ids, raw_value, record)
