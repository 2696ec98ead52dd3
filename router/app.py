"""The router's faust app: one agent on the commands topic, two co-partitioned tables.

Settings that matter, and why (lessons of faust-streaming users):

* at-least-once only (no ``processing_guarantee="exactly_once"``: its transactions
  have open bugs with duplicates and fencing crashes on rebalance); effects are made
  idempotent instead (``router._route``).
* ``stream_wait_empty=False``: faust's own wait would also wait for the events queued
  for the batch loop; instead the router's fence (``router._fence``) waits only for the
  batch in flight and drops what was fetched before the rebalance (never committed, so
  the partition's owner re-reads it). A batch cut short withholds its offsets and is
  replayed.
* ``broker_max_poll_records`` bounded, so one poll never holds more than a few batches.
* ``table_standby_replicas=0``: the memory store recovers from the changelog at start;
  standbys would double the changelog reads for little gain on small state.
* Partitions: the commands topic and every table changelog have
  ``settings.topic_partitions`` partitions (``topic_partitions`` below). That number is
  chosen once per deployment: it caps how many router replicas share the work, and
  changing it would move tenants to other partitions, orphaning their changelogged
  dedup and usage state. The default (6) lets up to 6 replicas work at once.
  ``switchyard topics apply`` creates and grows the changelogs with the commands topic;
  the runtime creates a missing one with the commands topic's count and refuses to start
  on one with fewer (``RouterRuntime._refuse_short_changelogs``).
* The memory store: state is small (dedup entries and counters) and rebuilt from the
  changelogs on start, which avoids a RocksDB build dependency.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from faust.exceptions import ConsumerNotStarted
from mode import Service

from core.errors import ConfigurationError
from core.health import serve_health
from core.heap import settle_heap
from core.kafka import ensure_topics, make_consumer, make_producer, start_client, topic_partitions
from core.metrics import Metrics
from core.settings import Settings
from schemas import CONNECTORS, Limits

from ._config_view import ConfigView
from ._fair import FairQueue
from ._route import Router
from ._state import PartitionedState

__all__ = ["RouterRuntime", "create_app", "router_topics"]

logger = logging.getLogger(__name__)

BATCH_MAX = 200
# Commands fetched and waiting for a batch (``router._fair``), and faust's stream buffer
# ahead of them: larger, so that faust does not hold partitions back before it fills.
QUEUE_MAX = 8_192
STREAM_BUFFER = 2 * QUEUE_MAX
# Longest a fetch waits for data; see _shorten_fetch_wait.
FETCH_MAX_WAIT_MS = 100
SWEEP_INTERVAL = 60.0
DEDUP_PER_TENANT = 100_000
# And in all, whatever the number of tenants (an entry is ~0.5 kB in memory).
DEDUP_TOTAL = 500_000
SESSION_TIMEOUT = 10.0
STALL_CHECK = 5.0
# How often the router reports its lag on the commands topic (switchyard_consumer_lag).
LAG_INTERVAL = 10.0
STALL_AFTER = 15.0
# A commands partition with records past its committed offset whose commit has not
# moved for this long is stuck (under steady traffic no quiet period ever comes).
COMMIT_STUCK_AFTER = 30.0
# How long a revocation or shutdown waits for the batch in flight (normally < 1 s).
FENCE_WAIT = 3 * SESSION_TIMEOUT
DONE_FLUSH_WAIT = 5.0


def router_topics(settings: Settings) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The topics the router reads or writes, and the config topic's compaction setting."""
    topics = settings.topics
    names = [topics.commands, topics.config, topics.results]
    names += [topics.connector(name) for name in CONNECTORS]
    return names, {topics.config: {"cleanup.policy": "compact"}}


def _broker_url(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def _credentials(settings: Settings) -> Any:
    if settings.kafka_sasl_mechanism:
        import ssl

        context = None
        if settings.kafka_security_protocol == "SASL_SSL":
            context = ssl.create_default_context(cafile=settings.kafka_ca_file)
        password = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        )
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if settings.kafka_security_protocol == "SSL":
        import ssl

        return ssl.create_default_context(cafile=settings.kafka_ca_file)
    return None


class RouterRuntime(Service):
    """Starts what the agent needs (producer, config view) before it routes anything."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        dedup: Any,
        usage: Any,
        metrics: Metrics | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app_ = app
        self.settings = settings
        self.metrics = metrics
        self.config_view = ConfigView(settings)
        self._dedup = dedup
        self._usage = usage
        self.router = Router(
            settings,
            self.config_view,
            PartitionedState(dedup, dedup.changelog_topic_name),
            PartitionedState(usage, usage.changelog_topic_name),
        )
        self.router.metrics = metrics
        self.ready = asyncio.Event()
        self.last_event = time.monotonic()
        self.nudged = False
        # commands partition -> (committed offset as last seen, since when)
        self.commit_marks: dict[Any, tuple[int | None, float]] = {}

    async def on_start(self) -> None:
        if self.metrics is not None:
            # First, so /healthz answers (and /readyz says "not ready") during recovery.
            checks = {"kafka": self._kafka_reachable, "router": self._ready}
            await self.add_async_context(serve_health(self.settings, self.metrics, checks))
        names, configs = router_topics(self.settings)
        await ensure_topics(self.settings, names, configs=configs)
        await self._ensure_faust_topics()
        # aiokafka clients bind to the running loop: made here, not in __init__.
        producer = make_producer(self.settings, linger_ms=self.settings.router_linger_ms)
        await start_client(producer, what="router producer")
        self.router.producer = producer
        for name in names:
            if name in (self.settings.topics.commands, self.settings.topics.config):
                continue
            parts = await producer.partitions_for(name)
            self.router.partitions[name] = sorted(parts)
        await self.config_view.start()
        await _pin_start_offsets(self.settings)
        self.router.guard_acks(self.app_.consumer, self.settings.topics.commands)
        self.last_event = time.monotonic()
        self.ready.set()
        settle_heap()
        logger.info("router ready", extra={"fields": {"workspaces": len(self.config_view)}})

    async def _ready(self) -> bool:
        return self.ready.is_set()

    async def _kafka_reachable(self) -> bool:
        producer = self.router.producer
        if producer is None:
            return False
        # Raises (a failed check) when no broker answers a metadata request.
        await producer.client.fetch_all_metadata()
        return True

    async def _ensure_faust_topics(self) -> None:
        """Create faust's own topics (leader election, table changelogs) before faust does.

        faust creates a missing topic by asking the first broker in its metadata for the
        controller, with no retry: when that broker has just died, the router exits at
        start (NodeNotReadyError) while the rest of the cluster serves. Declaring is
        switched off in faust (``topic_allow_declare=False``), and ``ensure_topics``
        retries transient errors on another broker, so a start during a broker outage
        works.
        """
        commands = self.settings.topics.commands
        partitions = len(await topic_partitions(self.settings, commands))
        compact = {"cleanup.policy": "compact"}
        changelogs = [self._dedup.changelog_topic_name, self._usage.changelog_topic_name]
        await ensure_topics(
            self.settings,
            changelogs,
            partitions=partitions,
            configs=dict.fromkeys(changelogs, compact),
        )
        await self._refuse_short_changelogs(changelogs, commands, partitions)
        leader = f"{self.app_.conf.id}-__assignor-__leader"
        await ensure_topics(self.settings, [leader], partitions=1)

    async def _refuse_short_changelogs(
        self, changelogs: list[str], commands: str, partitions: int
    ) -> None:
        """Refuse to start when a table changelog has fewer partitions than ``commands``.

        A tenant's dedup and usage entries go to the changelog partition numbered like
        its commands partition (``router._state``): a command of a partition the
        changelog lacks fails its state write, stays uncommitted, and fails again at
        every restart, on every replica that takes the partition. Failing here says why
        before any command is read, and the router never reads ready. The router does
        not add the partitions itself: changing a topic's shape is ``switchyard topics
        apply``'s (an operator's) decision, which grows them with the commands topic.

        Raises:
            ConfigurationError: naming the topics, their partition counts and the fix.
        """
        counts = {name: len(await topic_partitions(self.settings, name)) for name in changelogs}
        if all(count >= partitions for count in counts.values()):
            return
        shapes = ", ".join(f"{name} has {count}" for name, count in counts.items())
        message = (
            f"router table changelogs have fewer partitions than the commands topic "
            f"({commands} has {partitions}, {shapes}); a command of a partition they lack "
            "cannot be routed. Run `switchyard topics apply --increase-partitions` "
            "(it grows them with the commands topic), then restart the router"
        )
        logger.error(
            message,
            extra={"fields": {"commands_partitions": partitions, "changelog_partitions": counts}},
        )
        raise ConfigurationError(message)

    async def on_stop(self) -> None:
        await self.config_view.stop()
        if self.router.producer is not None:
            await self.router.producer.stop()
        logger.info(
            "router stopped",
            extra={
                "fields": {
                    "routed": self.router.routed,
                    "rejected": self.router.rejected,
                    "dropped": self.router.dropped,
                    "offset_jumps_refused": self.router.gaps_refused,
                }
            },
        )


def stuck_partitions(
    tps: list[Any],
    committed: Mapping[Any, int | None],
    ends: Mapping[Any, int],
    marks: Mapping[Any, tuple[int | None, float]],
    now: float,
) -> tuple[list[Any], list[Any]]:
    """``(behind, stuck)``: partitions with commands past their committed offset, and
    those of them whose commit has not moved for ``COMMIT_STUCK_AFTER`` (by ``marks``,
    partition -> (committed offset last seen, since when))."""
    behind = [tp for tp in tps if ends.get(tp, 0) > (committed.get(tp) or 0)]
    return behind, [tp for tp in behind if now - marks[tp][1] >= COMMIT_STUCK_AFTER]


def commands_lag(tps: list[Any], committed: Mapping[Any, int | None], ends: Mapping[Any, int]) -> int:
    """Commands past the committed offsets of ``tps``: what waits to be routed there (a
    partition never committed counts from 0, as ``stuck_partitions`` reads it)."""
    return sum(max(0, ends.get(tp, 0) - (committed.get(tp) or 0)) for tp in tps)


def note_commits(
    tps: list[Any],
    committed: Mapping[Any, int | None],
    marks: dict[Any, tuple[int | None, float]],
    now: float,
) -> None:
    """Restart a partition's clock in ``marks`` whenever its committed offset moved."""
    for tp in tps:
        if tp not in marks or marks[tp][0] != committed.get(tp):
            marks[tp] = (committed.get(tp), now)


def _limits_of(config: ConfigView) -> Callable[[str, str], Limits | None]:
    def limits(tenant_id: str, space_id: str) -> Limits | None:
        workspace = config.get(tenant_id, space_id)
        return None if workspace is None else workspace.limits

    return limits


def _shorten_fetch_wait(app: faust.App) -> None:
    """Let the router's fetches wait at most ``FETCH_MAX_WAIT_MS`` for data (faust fixes 1.5 s).

    aiokafka keeps one fetch in flight per broker, and leaves out of it the partitions
    whose fetched records are not consumed yet. Under a flood that fetch often holds only
    idle partitions, so the broker parks it for the whole wait while the busy partitions
    queue up behind it: a quiet tenant's commands arrived in clumps up to 2 s old.
    faust builds the consumer itself without the option, so it is set on its fetcher.
    """
    try:
        fetcher = app.consumer._thread._ensure_consumer()._fetcher
        fetcher._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    except (AttributeError, ConsumerNotStarted):  # another layout, or not started yet
        logger.warning("could not shorten the router consumer's fetch wait")


async def _pin_start_offsets(settings: Settings) -> None:
    """Commit the earliest offset for commands partitions the group never committed,
    or committed below the earliest offset still in the log.

    faust seeks to the *committed* offsets after recovery; for a partition without one
    it keeps whatever position its fetcher reached meanwhile, so commands fetched and
    dropped while recovery paused the flow would be skipped until a restart. A pinned
    start offset above 0 makes that seek well defined; aiokafka skips a seek to 0, which
    ``Router._commit_from_floor`` does itself. One below
    the log's start (retention deleted commands the group never read) would read as a
    gap, which the router never lets faust commit past (``Router._refuse_gaps``). Only
    an empty group accepts the commit; when other replicas run, they have committed.
    """
    topic = settings.topics.commands
    consumer = make_consumer(settings, group_id=settings.topics.router_app)
    await start_client(consumer, what="router offset pin")
    try:
        partitions = await topic_partitions(settings, topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        committed = {tp: await consumer.committed(tp) for tp in tps}
        starts = await consumer.beginning_offsets(tps)
        behind = {
            tp: starts[tp] for tp in tps if committed[tp] is None or committed[tp] < starts[tp]
        }
        if behind:
            await consumer.commit(behind)
    except KafkaError as exc:
        logger.info("start offsets not pinned (%s); the group is active", type(exc).__name__)
    finally:
        await consumer.stop()


def create_app(
    settings: Settings, *, data_dir: Path | None = None, metrics: Metrics | None = None
) -> tuple[faust.App, RouterRuntime]:
    """Build the router app for ``settings``; run it with ``faust.Worker(app, runtime)``.

    The app id is ``<prefix>router`` so deployments (and tests) with different topic
    prefixes never share a consumer group or changelog topics. With ``metrics``, the
    runtime counts routed and rejected commands and serves ``/metrics``, ``/healthz``
    and ``/readyz`` on ``settings.metrics_port`` (when set).
    """
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="switchyard-router-"))
    app = faust.App(
        settings.topics.router_app,
        broker=_broker_url(settings.kafka_bootstrap),
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(data_dir),
        autodiscover=False,
        web_enabled=False,
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,
        stream_wait_empty=False,
        # The runtime creates every topic faust uses (RouterRuntime._ensure_faust_topics,
        # retrying on another broker); faust's own declaration asks the broker its
        # metadata names as controller, once, and a start during a broker outage died.
        topic_allow_declare=False,
        broker_max_poll_records=500,
        stream_buffer_maxsize=STREAM_BUFFER,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=1.0,
        # A replica killed without leaving the group holds its partitions until the
        # session times out; faust's 60 s default stalls those tenants for a minute.
        broker_session_timeout=SESSION_TIMEOUT,
        broker_heartbeat_interval=SESSION_TIMEOUT / 4,
        worker_redirect_stdouts=False,
    )
    commands = app.topic(
        settings.topics.commands,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    dedup = app.Table("dedup", partitions=settings.topic_partitions)
    usage = app.Table("usage", partitions=settings.topic_partitions)
    runtime = RouterRuntime(app, settings, dedup, usage, metrics)
    router = runtime.router

    # faust calls this when a rebalance's recovery has resumed the flow; see
    # Router.reread_after_rebalance for the command its recovery can drop.
    rebalance_end = app.on_rebalance_end

    def on_rebalance_end() -> None:
        rebalance_end()
        router.reread_after_rebalance()

    app.on_rebalance_end = on_rebalance_end  # type: ignore[method-assign]

    async def drain(queue: FairQueue, source: Any) -> None:
        try:
            await route_batches(queue, source)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("router batch loop failed; stopping the router")
            await app.crash(exc)

    async def route_batches(queue: FairQueue, source: Any) -> None:
        await runtime.ready.wait()
        logger.info("routing commands")
        while True:
            batch = await queue.get_batch(BATCH_MAX)
            try:
                await router.handle_batch(batch)
            except Exception as exc:
                # The batch's offsets are withheld; stop so the partition is replayed
                # (by this router after a restart or by another replica) instead of
                # committing past it.
                logger.exception("routing a batch failed; stopping the router")
                await app.crash(exc)
                return
            for event in batch:
                await source.ack(event)  # a no-op for events handle_batch held back
            await router.recover_skipped(app.consumer, app.flow_control.is_active())

    async def close_fence(why: str) -> None:
        # Before this replica gives partitions up (revocation; at shutdown, before the
        # consumer leaves the group): no batch may route them once another owner can
        # (issue 8), so wait for the one in flight and drop what was fetched before.
        if not await router.fence.close(app.consumer_generation_id, FENCE_WAIT):
            logger.warning(
                "a batch was still routing when partitions were given up",
                extra={"fields": {"why": why, "waited_s": FENCE_WAIT}},
            )
        # The next owner then finds ``done`` entries instead of ``pending`` ones it
        # would have to check against the output partitions (correct either way).
        try:
            await router.flush_done(within=DONE_FLUSH_WAIT)
        except (KafkaError, TimeoutError) as exc:
            logger.warning("done entries not flushed (%s)", type(exc).__name__)

    @app.on_partitions_revoked.connect
    async def fence_on_revoke(sender: Any, revoked: Any, **kwargs: Any) -> None:
        await close_fence("rebalance")

    @app.on_before_shutdown.connect
    async def fence_on_shutdown(sender: Any, **kwargs: Any) -> None:
        await close_fence("shutdown")

    @app.agent(commands, name="route")
    async def route(stream: faust.StreamT[bytes]) -> None:
        # Batching by hand rather than with ``take_events``: its buffer hand-off can
        # drop an event that arrives while a batch is being consumed (seen here as
        # commands that were neither routed nor acked). The stream only fills a
        # queue shared fairly by the partitions (``router._fair``); one task routes what
        # has queued up and acks it afterwards.
        source = stream.noack()
        queue = FairQueue(capacity=QUEUE_MAX, key=lambda event: event.message.tp)
        worker = asyncio.create_task(drain(queue, source), name="router-batches")
        received = 0
        try:
            async for event in source.events():
                if worker.done():
                    break
                runtime.last_event = time.monotonic()
                received += 1
                if received == 1:
                    _shorten_fetch_wait(app)
                    logger.info(
                        "first command received",
                        extra={
                            "fields": {
                                "partition": event.message.partition,
                                "offset": event.message.offset,
                            }
                        },
                    )
                await queue.put(event)
        finally:
            worker.cancel()

    @app.timer(1.0)
    async def reread_skipped() -> None:
        # Also after the last batch: a command skipped at the end of a burst has no
        # later batch to trigger the seek back.
        if runtime.ready.is_set():
            await router.recover_skipped(app.consumer, app.flow_control.is_active())
            # ``done`` entries wait for the next batch's state write; when no batch
            # comes, this writes them.
            try:
                await router.flush_done()
            except KafkaError as exc:
                # They stay ``pending`` in the changelog: a replay checks the output.
                logger.warning("done entries not flushed (%s)", type(exc).__name__)

    @app.timer(STALL_CHECK)
    async def watch_for_stall() -> None:
        # Seen at starts after recovering a non-empty changelog: faust reported "Worker
        # ready" yet its stream never delivered a command (the commands fetched during
        # the recovery were dropped and, committed at 0, its seek back did not move;
        # ``Router._commit_from_floor`` now seeks such partitions to their start).
        # For whatever else stalls the stream: nudge the consumer once (resume and seek
        # to committed, as its recovery would); if that does not help, crash so the
        # supervisor restarts the router — the guarded commits make the restart lose
        # nothing.
        # Also when commands keep arriving but one partition's commit stays behind for
        # COMMIT_STUCK_AFTER: commands the router never got (a hole it could not seek
        # back to) wait there, and the commit, which never passes them, says so.
        if not runtime.ready.is_set():
            return
        consumer = app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic == settings.topics.commands]
        if not tps:
            return
        now = time.monotonic()
        committed = getattr(consumer, "_committed_offset", {})
        marks = runtime.commit_marks
        note_commits(tps, committed, marks, now)
        quiet = now - runtime.last_event >= STALL_AFTER
        if not quiet and all(now - marks[tp][1] < COMMIT_STUCK_AFTER for tp in tps):
            return  # commands arrive and every partition's commit moved lately
        try:
            ends = await runtime.config_view.end_offsets(tps)
        except KafkaError:
            return  # the broker is away; nothing to judge yet
        behind, stuck = stuck_partitions(tps, committed, ends, marks, now)
        if not behind or not (quiet or stuck):
            runtime.last_event = now  # idle, not stalled
            runtime.nudged = False
            return
        if not runtime.nudged:
            logger.warning(
                "commands are waiting but none arrived; nudging the consumer"
                if quiet
                else "a commands partition's commit is stuck; nudging the consumer",
                extra={"fields": {"stuck_partitions": sorted(tp.partition for tp in stuck)}},
            )
            runtime.nudged = True
            runtime.last_event = time.monotonic()
            for tp in stuck:  # the re-read gets as long again to move the commit
                marks[tp] = (marks[tp][0], now)
            try:
                consumer.resume_partitions(tps)
                consumer.resume_flow()
                app.flow_control.resume()
                await consumer.perform_seek()
            except IllegalStateError:
                # A rebalance took partitions away meanwhile: it re-seeks what stays
                # assigned itself, which is the nudge's purpose; judge again later.
                logger.info("nudge skipped: partitions changed during a rebalance")
                runtime.nudged = False
            return
        logger.error("the consumer stays stalled; stopping so the router is restarted")
        await app.crash(RuntimeError("faust consumer stalled"))

    @app.timer(LAG_INTERVAL)
    async def report_lag() -> None:
        # The lag of the commands partitions this replica holds, as workers report
        # theirs: what waits to be routed (the chart's lag alert and dashboard sum it).
        if metrics is None or not runtime.ready.is_set():
            return
        consumer = app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic == settings.topics.commands]
        committed = getattr(consumer, "_committed_offset", {})
        try:
            ends = await runtime.config_view.end_offsets(tps) if tps else {}
        except KafkaError:
            return
        metrics.set_lag(app.conf.id, {settings.topics.commands: commands_lag(tps, committed, ends)})

    @app.timer(SWEEP_INTERVAL)
    async def sweep_dedup() -> None:
        if router.producer is None:
            return
        dropped = router.dedup.sweep_dedup(router.dedup_window_ms, DEDUP_PER_TENANT, DEDUP_TOTAL)
        await router.dedup.flush(router.producer)
        if dropped:
            logger.info("dedup entries expired", extra={"fields": {"dropped": dropped}})
        if not router.config.in_sync:
            return  # a view behind its topic would drop the usage of workspaces it has not read
        idle = router.usage.sweep_usage(_limits_of(router.config))
        await router.usage.flush(router.producer)
        if idle:
            logger.info("idle usage entries dropped", extra={"fields": {"dropped": idle}})

    return app, runtime
