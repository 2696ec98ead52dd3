"""Routing a batch of commands: decide, make state durable, send, and only then ack.

Order of effects for one batch (what makes "no command lost, none routed twice" hold
without Kafka transactions):

1. Decide every command (config lookup, checks, limits) in memory.
2. Write a ``pending`` dedup entry per command (naming the output's topic and
   partition) plus the usage counters to the changelogs, and **wait for the acks**.
3. Send the outputs (RoutedCommand or rejected Result) and **wait for the acks**.
4. Buffer ``done`` dedup entries (sent with the next batch's step 2, or when idle;
   acks not awaited) and return, which acks the batch's events to faust; faust
   commits acked offsets periodically.

A crash before 2 completes replays commands that left no trace. A crash between 2 and 4
replays commands whose entry is ``pending``: the router then reads the named output
partition (``router._verify``) and drops those already sent; one not sent is decided
again without counting its usage twice (the entry says it was counted). A crash after 3 replays
commands whose entry says ``done`` (or ``pending`` with the output present): dropped.

Outputs and changelog writes go through our own idempotent, ``acks=all`` producer
(``core.kafka``) rather than faust's (not idempotent outside exactly-once mode, and its
send buffer gives no dependable per-record ack); the batch awaits the acks explicitly,
so the at-least-once story does not depend on faust's producer or commit flush. If the
batch fails or is cancelled (SIGTERM mid-batch), its messages are marked handled
*without* telling the consumer, so faust never commits their offsets, and the router
stops: the next owner of the partition replays them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from core.errors import KafkaUnavailable
from core.kafka import keyed_partition
from core.metrics import Metrics
from core.settings import Settings
from schemas import DUPLICATE_KIND, TASK_CANCEL_KIND, Command, Headers

from ._config_view import ConfigView
from ._decide import Decisions, Outgoing, headers_list
from ._fence import RebalanceFence
from ._resolve import ActionCache
from ._state import PartitionedState, dedup_keys
from ._verify import InDoubt, find_sent

__all__ = ["Outgoing", "Router"]

logger = logging.getLogger(__name__)

_CANCEL_HEADER = (Headers.KIND, TASK_CANCEL_KIND.encode())
_DUPLICATE_HEADER = (Headers.KIND, DUPLICATE_KIND.encode())
# Syncs of the config view (each bounded by its sync_timeout) a batch waits for at most.
_CONFIG_SYNC_TRIES = 3
# Seeks back to one gap in a partition's offsets before it is taken as real, counted at
# most one per GAP_RESEEK_INTERVAL seconds.
SEEKS_PER_GAP = 5
GAP_RESEEK_INTERVAL = 1.0


class Router(Decisions):
    """Decides and publishes batches of commands; owned by the faust app (``router.app``)."""

    def __init__(
        self,
        settings: Settings,
        config: ConfigView,
        dedup: PartitionedState,
        usage: PartitionedState,
        producer: AIOKafkaProducer | None = None,
        *,
        dedup_window: float = 24 * 3600.0,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.config = config
        self.dedup = dedup
        self.usage = usage
        self.producer = producer
        self.dedup_window_ms = int(dedup_window * 1000)
        self.cache = ActionCache()
        # topic -> sorted partition ids; filled at start for results and every connector.
        self.partitions: dict[str, list[int]] = {}
        self.routed = 0
        self.rejected = 0
        self.dropped = 0
        # Set by the runtime when the process exposes metrics (core.metrics.Metrics).
        self.metrics: Metrics | None = None
        # ids of faust messages this router finished; see ``guard_acks``.
        self._finished: set[int] = set()
        # (topic, partition) -> offset to re-read: faust skipped or dropped it.
        self.skipped: dict[Any, int] = {}
        self.gaps_refused = 0
        # A rebalance ended: re-read once from the committed offsets (reread_after_rebalance).
        self._reread = False
        # Gap detection (see ``_in_order``): next offset expected per partition.
        self.consumer: Any = None
        self._generation: Any = None
        self._next: dict[Any, int] = {}
        # Commit floors per commands partition, from the last seek to committed (see
        # ``_commit_from_floor``); also where gap detection starts when faust has no
        # committed offset for a partition (it keeps 0 as "none").
        self._floors: dict[Any, int] = {}
        # gap -> (seeks counted for it, when the last counted one was asked for)
        self._sought: dict[tuple[Any, int], tuple[int, float]] = {}
        # Keeps batches and rebalances apart (issue 8); closed by ``router.app``.
        self.fence = RebalanceFence()

    def partition_for(self, topic: str, key: bytes) -> int:
        # The Java/aiokafka default partitioner, so a tenant's records land where any
        # keyed producer would put them — and the dedup entry can name the partition
        # before the send.
        parts = self.partitions[topic]
        return parts[keyed_partition(key, len(parts))]

    async def handle_batch(self, events: Sequence[Any]) -> None:
        """Route ``events`` (faust events of the commands topic) with the order above.

        Events fetched before the latest rebalance are left to the partition's owner
        (``router._fence``): handled here, never acked, so their offsets stay
        uncommitted and are read again.

        Raises:
            KafkaUnavailable: or any aiokafka error when state or outputs cannot be
                written; the batch's offsets are then withheld from commit.
        """
        async with self.fence.routing:
            generation = None
            if self.consumer is not None:
                generation = getattr(self.consumer.app, "consumer_generation_id", None)
            events, stale = self.fence.split(events, generation)
            for event in stale:
                event.message.acked = True  # never committed: the owner re-reads it
            if stale:
                logger.info(
                    "commands fetched before a rebalance left to the partition's owner",
                    extra={"fields": {"count": len(stale), "generation": generation}},
                )
            await self._handle_live(events)

    async def _handle_live(self, events: Sequence[Any]) -> None:
        finished = False
        events, held = self._in_order(events)
        for event in held:
            event.message.acked = True  # not processed, never committed: re-read after the seek
        try:
            await self._route(events)
            finished = True
            for event in events:
                self._finished.add(id(event.message))
                tp = event.message.tp
                if self.skipped.get(tp) == event.message.offset:
                    del self.skipped[tp]
        finally:
            if not finished:
                # Mark handled without acking to the consumer: faust's later ack of these
                # events becomes a no-op and their offsets never become committable.
                for event in events:
                    event.message.acked = True

    def _in_order(self, events: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """Split off events that arrive after a gap in their partition's offsets.

        faust can drop fetched messages while a rebalance pauses the flow (its drain
        loop cancels the delivery) without seeking back; the commit then stops at the
        gap (nothing acks it) but this process would never route those commands. A
        gap holds the partition's later events back and asks for a seek to the gap, so
        order is kept and nothing waits for a restart. A seek can lose a race with the
        batch faust is still delivering (see ``_refuse_gaps``), so a gap is sought up
        to ``SEEKS_PER_GAP`` times; a gap still there is accepted as real (retention
        deleted the records) and its commands wait for the stall watchdog's re-read,
        as faust's commit never passes them.
        """
        if self.consumer is None:
            return list(events), []
        generation = getattr(self.consumer.app, "consumer_generation_id", None)
        if generation != self._generation:
            self._generation = generation
            self._next.clear()
        committed = getattr(self.consumer, "_committed_offset", {})  # faust's own view
        keep: list[Any] = []
        held: list[Any] = []
        blocked: set[Any] = set()
        for event in events:
            tp, offset = event.message.tp, event.message.offset
            if tp in blocked:
                held.append(event)
                continue
            expected = self._next.get(tp, committed.get(tp))
            if expected is None:
                expected = self._floors.get(tp)
            seeks, last = self._sought.get((tp, expected), (0, 0.0))
            if expected is not None and offset > expected and seeks < SEEKS_PER_GAP:
                # Gaps already committed past cannot come back: forget them (bounded).
                self._sought = {
                    (t, o): v for (t, o), v in self._sought.items() if o >= (committed.get(t) or 0)
                }
                # Every sighting asks for a seek, but events fetched before the last seek
                # show the same gap again at once: only seeks a second apart count.
                now = time.monotonic()
                counted = now - last >= GAP_RESEEK_INTERVAL
                self._sought[(tp, expected)] = (seeks + 1, now) if counted else (seeks, last)
                self.skipped[tp] = min(expected, self.skipped.get(tp, expected))
                blocked.add(tp)
                held.append(event)
                continue
            keep.append(event)
            self._next[tp] = max(offset + 1, self._next.get(tp, 0))
        return keep, held

    def guard_acks(self, consumer: Any, topic: str) -> None:
        """Let faust commit a commands offset only after this router finished it.

        faust acks — and so may commit — messages its stream *skipped* while a
        rebalance or recovery paused the flow (faust-streaming#216/#221 family); if it
        does not seek back before resuming, such a command is lost. The guard refuses
        those acks and remembers the offset, so the commit stops short of it and
        :meth:`recover_skipped` re-reads from there.
        """
        original = consumer.ack

        def ack(message: Any) -> bool:
            if message.topic == topic and id(message) not in self._finished:
                tp = message.tp
                self.skipped[tp] = min(message.offset, self.skipped.get(tp, message.offset))
                return False
            self._finished.discard(id(message))
            return bool(original(message))

        consumer.ack = ack
        self._refuse_gaps(consumer, topic)
        self._commit_from_floor(consumer, topic)
        self.consumer = consumer

    def _commit_from_floor(self, consumer: Any, topic: str) -> None:
        """Let faust commit ``topic`` only over offsets routed from the committed one on.

        faust's own check misses a hole at the head of what was acked when the hole is
        one record (it compares ``min(acked) - committed > 1``) and any hole when the
        committed offset is 0 (it keeps 0 as "none"): then a command dropped by a
        recovery's queue clear was committed past. The floor is the committed offset as
        the broker reported it at the last seek to committed, or faust's last commit.

        A partition committed at 0 (what ``router.app._pin_start_offsets`` writes for a
        fresh group) or not at all is sought to its first offset: aiokafka's
        ``seek_to_committed`` seeks only offsets above 0 and leaves such a partition
        where its fetch position is, so faust's recovery seek and the re-reads after
        it were no-ops there. Traced on a fresh group under CPU load (2 starts in 25):
        the three commands waiting were fetched during the recovery, dropped by its
        queue clear, and the position stayed past them until the stall watchdog
        stopped the router. What a restart would read (``auto_offset_reset`` is
        earliest) is read again now instead. Only partitions aiokafka just reported
        are sought (the assignment may have changed since). When the start cannot be
        looked up, the seek stays as aiokafka left it and the stall watchdog covers.
        """
        floors = self._floors
        seek_to_committed = consumer.seek_to_committed

        async def seek_and_note() -> Any:
            offsets = dict(await seek_to_committed())
            unread = [
                tp
                for tp, offset in offsets.items()
                if tp.topic == topic and not (isinstance(offset, int) and offset > 0)
            ]
            if unread:
                try:
                    starts = dict(await consumer.earliest_offsets(*unread))
                    await consumer.seek_wait(starts)
                except (KafkaError, TimeoutError) as exc:
                    logger.warning(
                        "commands partitions not sought to their start (%s)",
                        type(exc).__name__,
                    )
                else:
                    offsets.update(starts)
            floors.update(
                (tp, offset)
                for tp, offset in offsets.items()
                if tp.topic == topic and isinstance(offset, int) and offset >= 0
            )
            return offsets

        original = consumer._new_offset

        def new_offset(tp: Any) -> int | None:
            if tp.topic == topic and consumer._acked[tp]:
                floor = consumer._committed_offset.get(tp)
                if floor is None:
                    floor = floors.get(tp)
                if floor is not None and min(consumer._acked[tp]) > floor:
                    return None  # the next command to commit was not routed yet
            return cast(int | None, original(tp))

        consumer.seek_to_committed = seek_and_note
        consumer._new_offset = new_offset

    def _refuse_gaps(self, consumer: Any, topic: str) -> None:
        """Never let faust count a jump in ``topic``'s offsets as committed.

        faust's fetch loop treats a record whose offset is more than one past the last
        it read as a gap in the log (transaction markers, compaction) and lets commits
        pass over the gap. The commands topic has neither: its offsets are contiguous.
        A jump there is a race with a seek: the loop was still delivering a batch
        fetched before :meth:`recover_skipped`'s seek back, so the first of those
        records looked like a gap starting at the committed offset (traced under CPU
        load: 3 to 132 commands of 600 committed past, never routed, after a router
        restart). Refused, the commit stops at the first command not routed, and the
        re-read (or the stall watchdog's) brings it back.
        """
        original = consumer._add_gap

        async def add_gap(tp: Any, offset_from: int, offset_to: int) -> None:
            if tp.topic == topic:
                self.gaps_refused += 1
                logger.info(
                    "offset jump in the commands topic not counted as committed",
                    extra={"fields": {"partition": tp.partition, "from": offset_from, "to": offset_to}},
                )
                return
            await original(tp, offset_from, offset_to)

        consumer._add_gap = add_gap

    def reread_after_rebalance(self) -> None:
        """Ask :meth:`recover_skipped` for one re-read from the committed offsets.

        faust's recovery seeks the stream partitions to their committed offsets and only
        then resumes its flow control, and ``FlowControlEvent.resume`` clears every queue
        it manages, the stream's included. A command fetched while that seek was under
        way can be dropped there with its position already past it. Traced in a test
        app (about 1 start in 50 under CPU load): the waiting record was fetched during
        the seek, handed to the stream's queue 1 ms before the resume cleared it, and
        never delivered nor fetched again; the router would wait for its stall watchdog
        (15-20 s). One re-read once the flow is on brings such a command back; one
        routed meanwhile is dropped as a duplicate by the dedup table.
        """
        self._reread = True

    async def recover_skipped(self, consumer: Any, flow_active: bool) -> None:
        """Re-read from the committed offsets after faust skipped commands (see guard_acks).

        Uses faust's own ``perform_seek`` (what its recovery does after a rebalance):
        a plain ``seek`` from this thread races faust's consumer thread. The guard keeps
        every committed offset at or below the first skipped command, so the re-read
        covers it; commands routed since then are dropped by the dedup table.
        """
        if not (self.skipped or self._reread) or not flow_active:
            return
        for tp, offset in self.skipped.items():
            logger.warning(
                "re-reading commands faust skipped",
                extra={"fields": {"partition": tp.partition, "offset": offset}},
            )
        if self._reread:
            logger.info("re-reading commands from the committed offsets after a rebalance")
        self.skipped.clear()
        self._reread = False
        self._next.clear()
        await consumer.perform_seek()

    async def _route(self, events: Sequence[Any]) -> None:
        items: list[tuple[Any, Command]] = []
        unreadable: set[int] = set()  # id() of events holding a command this router cannot read whole
        for event in events:
            headers = headers_list(event.message)
            if _CANCEL_HEADER in headers or _DUPLICATE_HEADER in headers:
                continue  # an MCP task's cancellation or our own notice, for the ingress replicas
            try:
                items.append((event, Command.from_bytes(event.value)))
            except (ValidationError, ValueError, TypeError):
                command = Command.known_part(event.value)
                if command is not None:
                    # A field of a newer ingress, say: the command still gets its one
                    # final Result (rejected), not silence.
                    items.append((event, command))
                    unreadable.add(id(event))
                    continue
                logger.warning(
                    "unparseable command skipped",
                    extra={
                        "fields": {
                            "partition": event.message.partition,
                            "offset": event.message.offset,
                        }
                    },
                )
        newest = max((c.submitted_at.timestamp() for _, c in items), default=None)
        await self._config_in_sync(newest)
        now = time.time()
        now_ms = int(now * 1000)
        now_dt = datetime.fromtimestamp(now, UTC)  # one clock reading for the whole batch
        # (own, other scope's) dedup keys per command, computed once (each costs a hash),
        # and each command's entry as the batch found it.
        keys = [dedup_keys(command) for _, command in items]
        entries = [
            self._entry(command, own, other, now_ms)
            for (_, command), (own, other) in zip(items, keys, strict=True)
        ]
        sent = await self._already_sent(entries)
        outgoing: list[tuple[str, int, Outgoing]] = []
        in_batch: dict[str, str] = {}  # dedup key → command id
        # Replays dropped as routed before, with when: ingress replicas are told (see
        # schemas.DUPLICATE_KIND), so one that never saw the Result can look for it.
        notices: list[tuple[Command, int]] = []
        for (event, command), (_, other), (key, entry, occupant) in zip(items, keys, entries, strict=True):
            partition = event.message.partition
            if key in in_batch:
                self.dropped += 1
                continue
            if entry is not None and (entry.get("s") == "d" or entry.get("c") in sent):
                if entry.get("s") != "d":
                    self.dedup.put(key, {**entry, "s": "d"}, partition)
                self.dropped += 1
                notices.append((command, int(entry.get("ts", now_ms))))
                continue
            in_batch[key] = command.command_id
            # A pending entry of this very command whose output was never sent: a replay
            # after a crash. Its usage was counted with that entry ("u"), not to be again.
            charged = (
                entry is not None and entry.get("c") == command.command_id and entry.get("u") == 1
            )
            used_by = occupant or self._used_in_other_scope(command, other, in_batch, now_ms)
            out = self._decide(
                event, command, now, now_dt, charged=charged, used_by=used_by, unreadable=id(event) in unreadable
            )
            pending = {
                "c": command.command_id,
                "s": "p",
                "t": out.topic,
                "p": out.partition,
                "ts": now_ms,
                "k": partition,
            }
            if out.rejected is None:
                pending["u"] = 1  # admitted: its usage is counted in this same state write
            self.dedup.put(key, pending, partition)
            outgoing.append((key, partition, out))
        assert self.producer is not None, "Router.producer is set when the runtime starts"
        state_acks = await self.dedup.flush(self.producer) + await self.usage.flush(self.producer)
        if state_acks:
            await asyncio.gather(*state_acks)
        sends = [
            await self.producer.send(
                o.topic, o.value, key=o.key, partition=o.partition, headers=o.headers
            )
            for _, _, o in outgoing
        ]
        if sends:
            await asyncio.gather(*sends)
        metrics = self.metrics
        for key, partition, out in outgoing:
            self.dedup.put(
                key,
                {
                    "c": out.command_id,
                    "s": "d",
                    "t": out.topic,
                    "p": out.partition,
                    "ts": now_ms,
                    "k": partition,
                },
                partition,
            )
            # Counted only now that the output is acked: a failed batch is replayed, and
            # counting before the ack would count its commands twice.
            if out.rejected is None:
                self.routed += 1
                if metrics is not None:
                    metrics.count_routed(out.tenant_id, out.space_id, out.connector, out.waited)
            else:
                self.rejected += 1
                if metrics is not None:
                    metrics.count_rejected(
                        out.tenant_id, out.space_id, out.rejected.value, out.waited
                    )
        for command, routed_at in notices:
            await self._notice(command, routed_at)
        # The ``done`` entries stay buffered: the next batch's state write carries them
        # in the same produce request (one request per batch fewer), and the runtime
        # flushes them when idle and before giving partitions up (``flush_done``). If
        # they are lost in a crash, the entries stay ``pending`` and a replay checks the
        # output partition instead.

    async def _config_in_sync(self, newest: float | None) -> None:
        """Wait (bounded) until the config view has read its topic up to now.

        Raises:
            KafkaUnavailable: still behind after a few tries. Deciding with a view that
                is behind would make final what it has not read yet (an "unknown
                workspace" rejection, old roles or limits, for the dedup window); the
                failed batch is replayed instead.
        """
        for _ in range(_CONFIG_SYNC_TRIES):
            if await self.config.sync(newest):
                return
        raise KafkaUnavailable("the router's config view is behind the config topic")

    async def flush_done(self, within: float | None = None) -> None:
        """Write the buffered ``done`` dedup entries; with ``within``, wait for the acks.

        Safe beside a batch: a batch buffers its ``pending`` entries and sends them
        without yielding in between, so this never takes them out of its hands.

        Raises:
            KafkaError: or TimeoutError, only with ``within``, when the acks do not come.
        """
        if self.producer is None:
            return
        futures = await self.dedup.flush(self.producer)
        if within is not None and futures:
            async with asyncio.timeout(within):
                await asyncio.gather(*futures)

    def _fresh(self, key: str, now_ms: int) -> dict[str, Any] | None:
        entry = self.dedup.get(key)
        if entry is None or now_ms - int(entry.get("ts", 0)) > self.dedup_window_ms:
            return None
        return entry

    async def _notice(self, command: Command, routed_at: int) -> None:
        """Publish that ``command`` was a replay of one routed at ``routed_at`` (ms).

        Best effort, after the batch's own outputs: a lost notice costs only an ingress
        replica's lookup of that Result, never the batch (whose outputs are out by now).
        """
        assert self.producer is not None
        headers = Headers.for_command(
            command.tenant_id, command.space_id, command.command_id, kind=DUPLICATE_KIND, schema="1"
        )
        headers.append((Headers.ROUTED_AT, str(routed_at).encode()))
        try:
            # Keyed by tenant as commands are (the producer's partitioner is the same).
            sent = await self.producer.send(
                self.settings.topics.commands, b"", key=command.tenant_id.encode(), headers=headers
            )
        except KafkaError as exc:
            logger.info("duplicate notice not sent (%s)", type(exc).__name__)
            return
        sent.add_done_callback(_quiet)

    def _used_in_other_scope(
        self, command: Command, other: str, in_batch: dict[str, str], now_ms: int
    ) -> str | None:
        """The command that used ``command``'s key in the other scope (its entry
        ``other``), if any: a retry that crossed the upgrade to per-workspace keys, with
        a new command id, must not run its call again."""
        used_by = in_batch.get(other)
        if used_by is None:
            entry = self._fresh(other, now_ms)
            used_by = None if entry is None else str(entry.get("c"))
        return None if used_by == command.command_id else used_by

    def _entry(
        self, command: Command, own: str, other: str, now_ms: int
    ) -> tuple[str, dict[str, Any] | None, str | None]:
        """``(key, entry, occupant)``: ``command``'s dedup key, its fresh entry, and the
        command that holds its own key if another does.

        A router of before per-workspace keys wrote every entry tenant-wide: a command it
        routed during the upgrade is found under that key (``other``) by its own id; and
        a tenant-wide command finds its own key held by such a command's id, which used
        the key first. Its own entry then sits beside that one (a key with two spaces,
        which no other kind of key has).
        """
        entry = self._fresh(own, now_ms)
        if entry is None:
            earlier = self._fresh(other, now_ms)
            if earlier is not None and earlier.get("c") == command.command_id:
                return other, earlier, None
            return own, None, None
        if entry.get("c") == command.command_id:
            return own, entry, None
        beside = f"{own}  {command.command_id}"
        return beside, self._fresh(beside, now_ms), str(entry.get("c"))

    async def _already_sent(self, entries: list[tuple[str, dict[str, Any] | None, str | None]]) -> set[str]:
        in_doubt: set[InDoubt] = set()
        for _, entry, _ in entries:
            if entry is not None and entry.get("s") == "p":
                in_doubt.add((str(entry["c"]), str(entry["t"]), int(entry["p"]), int(entry["ts"])))
        if not in_doubt:
            return set()
        return await find_sent(self.settings, in_doubt)


def _quiet(done: asyncio.Future[Any]) -> None:
    """Retrieve a best-effort send's outcome (no "exception never retrieved")."""
    if not done.cancelled() and done.exception() is not None:
        logger.info("duplicate notice not acknowledged (%s)", type(done.exception()).__name__)
