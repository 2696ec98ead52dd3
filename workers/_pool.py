"""The worker pool of one connector: consume, schedule fairly, execute, commit.

One consumer (group ``<prefix>workers.<connector>``) reads the connector topic, its
retry tier topics and its parked topic. Each record is tracked by offset, parsed, and either queued for its
tenant in the :class:`FairScheduler` or — for a retry tier record whose ``not_before``
is in the future — held in a delay queue. Held records never block their partition for
other records (they are simply not started yet); a tier partition is paused only when
it holds more than ``max_delayed_per_partition`` waiting records, which bounds memory
(:mod:`workers._holding`). One tenant holds at most an eighth of that on a partition:
past it, a record of that tenant due later ends at once with a failed Result saying how
long its retry had to wait (``retry_after``), so an upstream that answers "retry in a
day" cannot pause a partition other tenants' retries share.

Fetching pauses when started + queued commands exceed ``max_buffered`` and resumes at
half of it. A pause stops whole partitions, so one tenant must not be able to cause it:
from half that threshold on, a tenant with ``tenant_backlog`` commands queued has its
further records from the connector topic parked (a topic of their own) until it has room
(:mod:`workers._overflow`) and the partition keeps flowing for the other tenants. Outcomes go through the
transactional :class:`Outbox`, which commits each partition's offset only up to its
lowest unfinished record. Rebalance and shutdown are in :mod:`workers._lifecycle`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from core.errors import ConfigurationError
from core.kafka import (
    ensure_topics,
    headers_dict,
    make_admin,
    make_consumer,
    make_producer,
    start_client,
)
from core.logs import bind
from core.settings import Settings
from core.telemetry import current_trace_id, extract
from schemas import RETRY_TIERS, ErrorCode, ErrorInfo, Headers, ResultStatus, RoutedCommand

from ._breaker import CircuitBreakers
from ._cancels import CancelFeed
from ._credentials import Credentials, VaultLike
from ._execute import IN_DOUBT_HEADER, Abandoned, Executor, Job, Outcome, now
from ._fencing import consumer_membership, fence_offset_commits
from ._holding import Holding
from ._kafka_structs import consumed_position
from ._lifecycle import PoolLifecycle, RebalanceListener
from ._offsets import OffsetTracker
from ._outbox import Outbox
from ._overflow import Overflow
from ._results import KIND_RESULT, build_result, dead_letter_raw, record_for, unreadable_result
from ._retry import RetryPolicy
from ._scheduler import FairScheduler
from ._stall_guard import StallGuard, heartbeat_accepted
from .connectors._addresses import PublicAddressResolver
from .connectors._base import CallHeld, Connector
from .connectors._http import upstream_session

__all__ = ["PoolOptions", "WorkerPool"]

logger = logging.getLogger(__name__)

OAuthRefresh = Callable[[aiohttp.ClientSession, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


# How long a starting pool waits to have read the cancels topic back.
_CANCELS_CATCH_UP = 10.0


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Tuning of one pool process; every field has a production default."""

    concurrency: int | None = None  # default Settings.worker_concurrency
    tenant_concurrency: int | None = None  # default Settings.tenant_concurrency
    tier_delays: tuple[float, ...] = tuple(float(d) for d in RETRY_TIERS)
    in_process_attempts: int = 2
    max_backoff: float = 2.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    request_timeout: float = 10.0
    flush_interval: float = 0.05
    max_buffered: int | None = None  # default 4 x concurrency
    # Queued commands one tenant may hold before its excess is parked (default max_buffered / 8:
    # up to twice that with returning records, so one tenant alone never reaches the pause
    # that would stall the others).
    tenant_backlog: int | None = None
    max_delayed_per_partition: int = 1_000
    revoke_grace: float = 5.0
    shutdown_grace: float = 10.0
    # The whole stop, every stage included, within the chart's 60 s termination grace:
    # with Kafka or Vault frozen, the stages' own bounds added up past it (SIGKILL then).
    shutdown_within: float = 50.0
    credential_cache_ttl: float | None = None  # default Settings.credential_cache_seconds
    transaction_timeout_ms: int = 15_000
    # Records stamped up to this long after a partition's assignment (by the clock of the
    # host that wrote them) may still have been started by its previous owner.
    doubt_clock_skew: float = 5.0
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


@dataclass(frozen=True, slots=True)
class _Item:
    tp: TopicPartition
    offset: int
    generation: int
    job: Job


# The command a task runs, for the hook its requests pass before they are written.
_RUNNING: ContextVar[_Item | None] = ContextVar("switchyard_worker_item", default=None)


class WorkerPool(PoolLifecycle):
    """Runs one connector's commands from Kafka until :meth:`request_stop`."""

    def __init__(
        self,
        settings: Settings,
        connector: Connector,
        vault: VaultLike,
        *,
        options: PoolOptions | None = None,
        refresher: OAuthRefresh | None = None,
        base_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.connector = connector
        self.options = opts = options or PoolOptions()
        self.vault = vault
        self.base_url = base_url or settings.connector_base_url or getattr(connector, "default_base_url", None)
        if not self.base_url:
            raise ConfigurationError(f"no base URL for connector {connector.name}")
        topics = settings.topics
        self.group_id = f"{settings.topic_prefix}workers.{connector.name}"
        self.source_topics = topics.pool_sources(connector.name, len(opts.tier_delays))
        # Where a failure of a record from each topic goes next: tier 0 from the main topic
        # (a parked record's own header says; see Overflow.next_tier).
        self._next_tier = {name: i for i, name in enumerate(self.source_topics[:-1])}
        self.concurrency = opts.concurrency or settings.worker_concurrency
        tenant_cap = min(opts.tenant_concurrency or settings.tenant_concurrency, self.concurrency)
        self.scheduler: FairScheduler[_Item] = FairScheduler(
            global_limit=self.concurrency, tenant_limit=tenant_cap
        )
        self.tracker = OffsetTracker()
        self.breakers = CircuitBreakers(
            threshold=opts.breaker_threshold, cooldown=opts.breaker_cooldown, on_open=self._breaker_opened
        )
        self.policy = RetryPolicy(
            in_process_attempts=opts.in_process_attempts,
            max_delay=opts.max_backoff,
            tier_delays=opts.tier_delays,
        )
        self._refresher = refresher
        self._high = opts.max_buffered or max(64, 4 * self.concurrency)
        self.overflow = Overflow(topics.parked(connector.name), backlog=opts.tenant_backlog or max(1, self._high // 8))
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[TopicPartition, int] = {}
        # Assigned partitions whose committed positions are being read, and their records
        # fetched meanwhile (see _on_assigned).
        self._settling: set[TopicPartition] = set()
        self._unsettled: list[tuple[TopicPartition, ConsumerRecord]] = []
        self._settles: dict[asyncio.Task[None], frozenset[TopicPartition]] = {}
        # Newly assigned partitions whose first records another owner may have started:
        # when their commits settled, and how many more records may be in doubt.
        self._doubtful: dict[TopicPartition, list[float]] = {}
        self._doubt_window = 2 * self._high + 500
        self.holding: Holding[_Item] = Holding(
            limit=opts.max_delayed_per_partition, pause=self._pause_held, resume=self._resume_held
        )
        self._timed_share = max(1, opts.max_delayed_per_partition // 8)
        # Ids cancelled since the last pass over the held retries (_cancel_held).
        self._cancelled_held: set[str] = set()
        self._bp_paused = False
        # Set while partitions are being revoked: what waits on the stall guard gives up.
        self._revoking = asyncio.Event()
        self.completed: dict[str, int] = {}
        # Set by the command when the process exposes metrics (core.metrics.Metrics).
        self.metrics: Any = None
        # Set by the command: per-tenant execution lines to the logs topic (core.tenant_logs).
        self.tenant_logs: Any = None
        self._started = False
        # The HTTP client's resolver when the connector lets tenants choose hosts.
        self.resolver: PublicAddressResolver | None = None

    async def start(self) -> None:
        """Create topics if missing, connect to Kafka, build the executor.

        Raises:
            KafkaUnavailable: the broker cannot be reached.
        """
        s, opts = self.settings, self.options
        await ensure_topics(s, [*self.source_topics, s.topics.results, s.topics.dead_letters, s.topics.cancels])
        # Each request passes the stall guard right before its bytes are written (aiohttp
        # writes a body in a task of its own, a loop turn after the call started): a call
        # that stood frozen before it was written is not sent on waking until the group
        # confirms this member, and not at all once its partition has moved.
        held = aiohttp.TraceConfig()
        held.on_request_headers_sent.append(self._before_writing)  # written next if no body
        held.on_request_chunk_sent.append(self._before_writing)  # each body chunk, before writing
        if self.connector.public_addresses_only:
            self.resolver = PublicAddressResolver(s.http_private_networks)
        self.session = upstream_session(self.concurrency, resolver=self.resolver, trace_configs=[held])
        refresher = None
        if self._refresher is not None:
            bound, session = self._refresher, self.session

            async def refresher(data: Mapping[str, Any]) -> Mapping[str, Any]:
                return await bound(session, data)

        cache_ttl = opts.credential_cache_ttl
        if cache_ttl is None:
            cache_ttl = self.settings.credential_cache_seconds
        self.credentials = Credentials(self.vault, refresher=refresher, cache_ttl=cache_ttl)
        self.executor = Executor(
            self.connector,
            s.topics,
            self.credentials,
            self.breakers,
            self.session,
            self.policy,
            base_url=str(self.base_url),
            timeout=opts.request_timeout,
        )
        self.executor.on_found = self._found_earlier
        self.executor.on_call = self._called
        self.executor.cancelled = self._cancelled
        # Read back (a day of them) before the consumer starts: a cancellation made before
        # this process took a partition over is known when the partition's commands come.
        self.cancels = CancelFeed(s)
        self.cancels.on_cancel = self._cancel_held
        await self.cancels.start()
        try:
            await self._start_clients()
        except BaseException:
            await self.cancels.stop()  # not left reading for a pool that never ran
            raise
        self._started = True

    async def _start_clients(self) -> None:
        """The Kafka clients, once the cancels topic is read back (or 10 s have passed)."""
        s, opts = self.settings, self.options
        try:
            async with asyncio.timeout(_CANCELS_CATCH_UP):
                await self.cancels.follower.caught_up.wait()
        except TimeoutError:
            logger.warning("the cancels topic was not read back in time; starting anyway")
        if self.metrics is not None:
            executor = self.executor
            self.metrics.watch_credential_waits(self.connector.name, lambda: executor.waiting_for_credentials)
            self.metrics.set_worker_slots(self.connector.name, self.concurrency)
        # A restarted process with the same instance id fences its predecessor's open
        # transaction at once; otherwise the broker aborts it after the transaction timeout,
        # and read_committed readers wait at most that long behind it.
        self.admin = make_admin(s)
        await start_client(self.admin, what="worker admin")
        self.producer = make_producer(
            s,
            transactional_id=f"{s.topic_prefix}worker.{self.connector.name}.{opts.instance_id}",
            transaction_timeout_ms=opts.transaction_timeout_ms,
            # aiokafka waits this long after CONCURRENT_TRANSACTIONS, which the broker answers
            # while the previous commit's markers are being written, i.e. on most back-to-back
            # transactions; at the default 100 ms that wait was the p95 of a sync MCP call.
            retry_backoff_ms=10,
            # The outbox gathers each transaction itself; a linger would only delay it.
            linger_ms=0,
        )
        await start_client(self.producer, what="worker producer")
        self.consumer = make_consumer(
            s, group_id=self.group_id, max_poll_records=min(500, self._high)
        )
        self.consumer.subscribe(self.source_topics, listener=RebalanceListener(self))
        await start_client(self.consumer, what="worker consumer")
        self.outbox = Outbox(
            self.producer,
            self.tracker,
            self.group_id,
            interval=opts.flush_interval,
            membership=partial(consumer_membership, self.consumer),
        )
        fence_offset_commits(self.producer, self.outbox.commit_membership)
        self.stall_guard = StallGuard(self._still_member)

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop gracefully (signal-handler safe)."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume and execute until :meth:`request_stop`, then shut down gracefully.

        Raises:
            KafkaUnavailable: the outbox could not commit repeatedly (work is redone elsewhere).
        """
        if not self._started:
            await self.start()
        background = [
            asyncio.create_task(self._dispatch(), name="dispatch"),
            asyncio.create_task(self._release_delayed(), name="delays"),
            asyncio.create_task(self.stall_guard.run(), name="stall-guard-ticker"),
        ]
        flusher = asyncio.create_task(self.outbox.run(), name="outbox")
        try:
            while not self._stopping.is_set():
                self._backpressure()
                batch = await self.consumer.getmany(timeout_ms=100)
                for tp, records in batch.items():
                    for record in records:
                        self._admit(tp, record)
                self._pass_control_records()
                if flusher.done():
                    flusher.result()  # re-raises the outbox's fatal error
                for task in background:
                    if task.done():
                        task.result()
        finally:
            await self._shutdown(background, flusher)

    # -- intake ---------------------------------------------------------------------

    def _pass_control_records(self) -> None:
        """Let commits pass the transaction markers the consumer has moved over.

        Synchronous right after the records of a fetch are admitted: every record below
        each partition's position is tracked by then (a settling partition's wait
        aside, which is skipped)."""
        for tp in self.consumer.assignment():
            if tp in self._settling:
                continue
            position = consumed_position(self.consumer, tp)
            if position is not None:
                self.tracker.advance(tp, position)

    def _admit(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        if tp in self._settling:
            self._unsettled.append((tp, record))  # admitted once its start is known
            return
        generation = self.tracker.track(tp, record.offset)
        if generation is None:
            return  # finished and committed by this partition's previous owner
        doubt = self._doubt_of(tp, record)
        if (
            tp.topic == self.source_topics[0]
            and record.key is not None
            # Below half the pause threshold memory is plenty: parking only replaces a pause.
            and self.scheduler.buffered + self.scheduler.in_flight >= self._high // 2
        ):
            # Decided on the key (the router keys by tenant) before parsing: parking is
            # the cheap path for a flood.
            tenant = record.key.decode("utf-8", "replace")
            if self.overflow.over(self.scheduler.queued(tenant)):
                headers = list(record.headers)
                if doubt is not None:
                    headers.append((IN_DOUBT_HEADER, b"1"))
                parked = self.overflow.park(record.key, record.value or b"", headers)
                self.outbox.add([parked], tp, record.offset, generation)
                return
        try:
            if record.value is None:
                raise ValueError("empty record")
            command = RoutedCommand.from_bytes(record.value)
        except (ValidationError, ValueError) as exc:
            # Never crash on a poison record: set it aside, raw, and move past it.
            logger.warning(
                "unparseable record dead-lettered",
                extra={"fields": {"topic": tp.topic, "partition": tp.partition,
                                  "offset": record.offset, "error": type(exc).__name__}},
            )
            raw = dead_letter_raw(self.settings.topics.dead_letters, record.key, record.value, tp.topic)
            # Still a command (a newer router's field, a value past a bound): it ends here.
            final = unreadable_result(self.settings.topics.results, record.value, tp.topic, now())
            self.outbox.add([raw] if final is None else [raw, final], tp, record.offset, generation)
            return
        headers = headers_dict(record.headers)
        next_tier = self._next_tier.get(tp.topic, 0)
        due = command.not_before.timestamp() if command.not_before is not None else None
        # Parked records were on retry tier 0 before they had a topic of their own.
        parked_tier = self.overflow.next_tier(headers)
        if parked_tier is not None:
            next_tier = parked_tier
        if doubt is None and IN_DOUBT_HEADER in headers:
            doubt = time.time()  # handed on in doubt: every earlier attempt was sent by now
        job = Job(command, headers, next_tier, doubt)
        item = _Item(tp, record.offset, generation, job)
        # A cancelled retry does not wait for its delay: the executor ends it now.
        if due is not None and due > now().timestamp() and not self._cancelled(command):
            if self.holding.timed(tp, command.tenant_id) >= self._timed_share:
                outcome = self._shed(item, due)
                report = partial(self._report, command, outcome)
                self.outbox.add(outcome.records, tp, record.offset, generation, report)
            else:
                self.holding.until(item, due, command.tenant_id)
        else:
            self._enqueue(item)

    def _cancelled(self, command: RoutedCommand) -> bool:
        return self.cancels.cancelled(command.tenant_id, command.command_id, command.submitted_at)

    def _doubt_of(self, tp: TopicPartition, record: ConsumerRecord) -> float | None:
        """When the record may have been started by the partition's previous owner, the
        time by which that owner's attempts had been sent (see :meth:`_settle`).

        A previous owner started at most what it had fetched and not finished: the first
        records after the committed position, a few pools' buffers at most, all written
        before this assignment (with a margin for the clocks of other hosts).
        """
        window = self._doubtful.get(tp)
        if window is None:
            return None
        settled_at, remaining = window
        if remaining <= 0 or record.timestamp / 1000 > settled_at + self.options.doubt_clock_skew:
            del self._doubtful[tp]  # the rest of the partition was written after it
            return None
        window[1] = remaining - 1
        return settled_at

    def _enqueue(self, item: _Item) -> None:
        tenant = item.job.command.tenant_id
        # A record back from a tier topic waits in memory while its tenant has its share
        # queued (and older waiting records go first); the connector topic's records were
        # already parked by the key check in _admit when over the backlog.
        if item.tp.topic != self.source_topics[0] and (
            self.holding.waiting(tenant)
            or self.overflow.over(self.scheduler.queued(tenant), returning=True)
        ):
            self.holding.for_room(tenant, item)
            self._refill(tenant)
        else:
            self.scheduler.push(tenant, item, *_cap(item.job))

    def _refill(self, tenant: str) -> None:
        """Move records waiting for room into the tenant's queue as it drains."""
        while self.holding.waiting(tenant) and not self.overflow.over(
            self.scheduler.queued(tenant), returning=True
        ):
            item = self.holding.take_waiting(tenant)
            if item is None:
                break
            self.scheduler.push(tenant, item, *_cap(item.job))

    def _pause_held(self, tp: TopicPartition) -> None:
        self.consumer.pause(tp)

    def _resume_held(self, tp: TopicPartition) -> None:
        if not self._bp_paused and tp not in self._settling:
            self.consumer.resume(tp)

    def _cancel_held(self, tenant: str, command_id: str) -> None:
        """A cancellation read: a retry held here for a later time is released at the
        next turn of :meth:`_release_delayed` (one pass for a burst of cancellations)."""
        self._cancelled_held.add(command_id)
        self.holding.wakeup.set()

    def _release_cancelled(self) -> list[_Item]:
        if not self._cancelled_held:
            return []
        ids, self._cancelled_held = self._cancelled_held, set()
        return self.holding.release(
            lambda item: item.job.command.command_id in ids and self._cancelled(item.job.command)
        )

    async def _release_delayed(self) -> None:
        holding = self.holding
        while True:
            holding.wakeup.clear()
            wait = None
            next_due = holding.next_due()
            if next_due is not None:
                wait = max(0.0, next_due - now().timestamp())
            if wait is None or wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await holding.wakeup.wait()
                except TimeoutError:
                    pass
            for item in [*self._release_cancelled(), *holding.due(now().timestamp())]:
                self._enqueue(item)  # the executor ends a cancelled one without running it

    def _backpressure(self) -> None:
        # Results waiting for a commit that can claim their records count too (_outbox).
        load = (
            self.scheduler.buffered + self.scheduler.in_flight
            + len(self._unsettled) + self.outbox.held
        )  # fmt: skip
        assigned = self.consumer.assignment()
        if not self._bp_paused and load >= self._high:
            self._bp_paused = True
            self.consumer.pause(*assigned)
        elif self._bp_paused and load <= self._high // 2:
            self._bp_paused = False
            self.consumer.resume(*(assigned - self.holding.paused - self._settling))

    # -- execution ------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            tenant, item = await self.scheduler.next()
            if not self.stall_guard.ready() and not await self._still_ours(item):
                self.scheduler.release(tenant)  # its partition's new owner runs it
                continue
            if self.holding.waiting(tenant):
                self._refill(tenant)
            self._running[item.tp] = self._running.get(item.tp, 0) + 1
            task = asyncio.create_task(self._handle(tenant, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, tenant: str, item: _Item) -> None:
        _RUNNING.set(item)  # this task's own context: seen by its requests' write hook
        metrics = self.metrics
        if metrics is not None:
            metrics.command_started(item.job.command, now())
        try:
            try:
                outcome = await self.executor.run(item.job, partial(self._still_ours, item))
            except Abandoned:
                logger.info("command left to its partition's new owner before a retry")
                return
            except Exception:
                # A bug in a connector or here must still end the command exactly once.
                command = item.job.command
                with bind(tenant_id=command.tenant_id, command_id=command.command_id):
                    logger.exception("command execution crashed")
                outcome = self._crashed(item)
        finally:
            self.scheduler.release(tenant)
            # Not once the partition is forgotten (a task outliving the revoke grace): its
            # count is gone, and a new assignment of it starts one afresh.
            if self.tracker.is_current(item.tp, item.generation):
                self._running[item.tp] -= 1
            if metrics is not None:
                metrics.command_stopped(tenant)
        # Reported once committed: an outcome discarded with its partition is redone, and
        # reported, by the partition's next owner.
        self.outbox.add(
            outcome.records, item.tp, item.offset, item.generation, partial(self._report, item.job.command, outcome)
        )

    def _report(self, command: RoutedCommand, outcome: Outcome) -> None:
        if outcome.status:
            self.completed[outcome.status.value] = self.completed.get(outcome.status.value, 0) + 1
        if self.metrics is not None:
            if outcome.result is not None:
                self.metrics.result(outcome.result)
            elif outcome.status is None:
                self.metrics.command_retried(command)
        if self.tenant_logs is not None:
            self._log_for_tenant(command, outcome)

    def _called(self, outcome: str, operation: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.upstream_call(self.connector.name, operation, outcome, seconds)

    def _breaker_opened(self, tenant: str) -> None:
        # The gauge reads the breaker at each scrape (Metrics.watch_breaker); an opening
        # only makes sure the tenant is watched.
        if self.metrics is not None:
            self.metrics.watch_breaker(tenant, self.connector.name, partial(self.breakers.state_of, tenant))

    def _found_earlier(self, command: RoutedCommand) -> None:
        if self.metrics is not None:
            self.metrics.effect_found(command)

    async def _still_ours(self, item: _Item) -> bool:
        """Whether ``item`` may still run here: after a stall, once the group has confirmed
        this member; not if its partition is revoked meanwhile (the new owner runs it)."""
        # Re-checked after each hold: a confirmation may answer a heartbeat sent before a
        # second stall. A revocation under way ends the wait (and the command's turn here:
        # a call started in the revoke grace could outlive it and be made again).
        while not self._revoking.is_set() and not self.stall_guard.ready():
            await self.stall_guard.cleared(unless=self._revoking)
        return self._partition_held(item)

    def _partition_held(self, item: _Item) -> bool:
        """``item``'s partition is this member's and not being revoked."""
        return not self._revoking.is_set() and self.tracker.is_current(item.tp, item.generation)

    async def _before_writing(self, *_: object) -> None:
        """aiohttp's hook right before a request's bytes are written (it must not suspend).

        Raises:
            CallHeld: the event loop has stalled since the last look and the group has not
                confirmed this member yet, or the command's partition is being revoked or
                gone (the executor waits, then sends it or leaves it to the new owner).
        """
        item = _RUNNING.get()
        if not self.stall_guard.ready() or (item is not None and not self._partition_held(item)):
            raise CallHeld()

    async def _still_member(self) -> bool:
        member = consumer_membership(self.consumer)
        if member is None:
            return False  # rejoining: the new generation's heartbeat decides
        return await heartbeat_accepted(self.admin, self.group_id, member)

    def _log_for_tenant(self, command: RoutedCommand, outcome: Outcome) -> None:
        result = outcome.result
        status = result.status.value if result is not None else "retry_scheduled"
        error = result.error if result is not None else outcome.handoff_error
        self.tenant_logs.publish(
            "info" if status == "succeeded" else "warning",
            f"{command.action} via {command.connector}.{command.operation}: {status}"
            + (f" ({error.code.value}: {error.message})" if error is not None and status != "succeeded" else ""),
            tenant_id=command.tenant_id,
            space_id=command.space_id,
            command_id=command.command_id,
            trace_id=result.trace_id if result is not None else outcome.trace_id,
            connector=command.connector,
            action=command.action,
            status=status,
            code=error.code.value if error is not None else None,
            attempt=command.attempt,
        )

    def _shed(self, item: _Item, due: float) -> Outcome:
        """A final failed Result for a record its tenant cannot have held (see the module)."""
        command = item.job.command
        last = command.errors[-1] if command.errors else None
        wait = max(0.0, due - now().timestamp())
        # An earlier attempt may have taken effect (it was handed on in doubt): then
        # submitting again may repeat it. (A new owner's doubt about its first records
        # does not apply: a record not yet due was never started.)
        in_doubt = IN_DOUBT_HEADER in item.job.headers
        advice = (
            "an earlier attempt may have taken effect, check before submitting it again"
            if in_doubt
            else "submit it again after retry_after"
        )
        error = ErrorInfo(
            code=last.code if last is not None else ErrorCode.UPSTREAM_RATE_LIMITED,
            message=(
                f"its retry is due in {wait:.0f}s, and {self._timed_share} of this tenant's "
                f"commands already wait in this partition: {advice}"
            ),
            retryable=not in_doubt,
            retry_after=wait,
            http_status=last.http_status if last is not None else None,
        )
        return self._final(item, error, attempts=len(command.errors))

    def _crashed(self, item: _Item) -> Outcome:
        error = ErrorInfo(code=ErrorCode.INTERNAL, message="the worker failed to run this command")
        return self._final(item, error, attempts=len(item.job.command.errors) + 1)

    def _final(self, item: _Item, error: ErrorInfo, *, attempts: int) -> Outcome:
        """The command's failed final Result, outside the executor."""
        command = item.job.command
        context = extract(item.job.headers)  # the Result stays in the command's trace
        result = build_result(
            command,
            ResultStatus.FAILED,
            error=error,
            attempts=attempts,
            started_at=None,
            finished_at=now(),
            trace_id=current_trace_id(context),
            spans=[],  # the earlier hops' spans are added
        )
        record = record_for(self.settings.topics.results, command, result, KIND_RESULT, context)
        return Outcome([record], ResultStatus.FAILED, result)


def _cap(job: Job) -> tuple[int | None, str]:
    """The workspace's cap the router stamped on the record (None: none, or unreadable),
    and the workspace."""
    value = job.headers.get(Headers.CONCURRENCY)
    cap = int(value) if value is not None and value.isascii() and value.isdigit() else None
    return cap, job.command.space_id
